"""Operator commands (registered on the `orchestrator` app when the CLI starts).

`trace`, `tasks`, `outbox` (+ `retry`), `dead-letters` (`list`, `show`, `replay`, `discard`),
`stats` and `send`. Tables (rich) by default; `--json` prints one JSON document for scripts:
stable keys, ISO-8601 UTC timestamps, durations in milliseconds (`*_ms`). An unreachable service
or a refused action prints one line on stderr and exits 1; a bad argument exits 2.
"""

from __future__ import annotations

import logging
import sys
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, NoReturn

import orjson
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from orchestrator.cli.main import app
from orchestrator.core.errors import DEAD_LETTER_CATEGORIES, OrchestratorError
from orchestrator.core.records import (
    DEAD_LETTER_STATES,
    OUTBOX_STATES,
    TASK_STATES,
)
from orchestrator.observability.logs import configure_logging, redact_text
from orchestrator.settings import Settings
from orchestrator.startup import fail, settings_or_exit

if TYPE_CHECKING:  # the database layer is imported by the commands that use it, not at start-up
    from orchestrator.bootstrap import Container
    from orchestrator.service.operator_queries import (
        DeadLetterDetail,
        Operations,
        ReplayResult,
        TimelineEntry,
    )

outbox_app = typer.Typer(
    help="The outbox: what waits, what failed, what was sent; re-drive FAILED rows."
)
dead_letters_app = typer.Typer(
    no_args_is_help=True,
    help="Inputs that could not be processed: list, show, replay, discard.",
)
app.add_typer(outbox_app, name="outbox")
app.add_typer(dead_letters_app, name="dead-letters")

COMMAND_EVENT_TYPE = "Genesis.Session.Command.Received"
JSON_HELP = "Print one JSON document instead of a table."


# -- plumbing --------------------------------------------------------------------------------


def _settings() -> Settings:
    """Settings; process logs stay quiet (errors only) unless the log level is DEBUG: every
    result of an operator command is printed by the command itself."""
    settings = settings_or_exit()
    configure_logging("DEBUG" if settings.log_level == "DEBUG" else "ERROR")
    return settings


def one_line(message: object) -> str:
    return redact_text(" ".join(str(message).split()))


def usage_error(message: str) -> NoReturn:
    fail(message, 2)


@contextmanager
def guard(what: str) -> Iterator[None]:
    """Refusals and unreachable services -> one line naming the command and the service, exit 1."""
    from confluent_kafka import KafkaException
    from redis.exceptions import RedisError
    from sqlalchemy.exc import SQLAlchemyError

    from orchestrator.service.operator_queries import OperationRefused

    try:
        yield
    except OperationRefused as exc:
        fail(f"{what}: {one_line(exc)}", 1)
    except SQLAlchemyError as exc:
        fail(f"{what}: database error: {one_line(getattr(exc, 'orig', None) or exc)}", 1)
    except RedisError as exc:
        fail(f"{what}: redis error: {one_line(exc)}", 1)
    except KafkaException as exc:
        err = exc.args[0] if exc.args else exc
        fail(f"{what}: kafka error: {one_line(getattr(err, 'str', lambda: err)())}", 1)
    except OrchestratorError as exc:  # TransientError: "database unavailable: ..." etc.
        fail(f"{what}: {one_line(exc)}", 1)


@contextmanager
def operations(settings: Settings) -> Iterator[Operations]:
    from orchestrator.adapters.postgres.engine import make_engine
    from orchestrator.service.operator_queries import Operations

    engine = make_engine(settings.database_url, pool_size=1, max_overflow=1)
    try:
        yield Operations(engine)
    finally:
        engine.dispose()


def choice(option: str, value: str | None, choices: Sequence[str]) -> str | None:
    """A case-insensitive choice, returned in its canonical spelling; else exit 2."""
    if value is None:
        return None
    for c in choices:
        if c.lower() == value.strip().lower():
            return c
    allowed = ", ".join(c.lower() for c in choices)
    usage_error(f"{option} must be one of {allowed}; got {value!r}")


def positive(option: str, value: float, *, allow_zero: bool = False) -> None:
    if value < 0 or (value == 0 and not allow_zero):
        usage_error(f"{option} must be {'>= 0' if allow_zero else '> 0'}; got {value:g}")


def emit_json(doc: Any) -> None:
    sys.stdout.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode() + "\n")
    sys.stdout.flush()


def console() -> Console:
    return Console(width=None if sys.stdout.isatty() else 200, highlight=False)


def ts(value: datetime | None) -> str:
    if value is None:
        return "-"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def dur(ms: float | None) -> str:
    if ms is None:
        return "-"
    return f"{ms:.0f} ms" if ms < 10_000 else f"{ms / 1000:.1f} s"


def dash(value: object) -> str:
    return "-" if value is None or value == "" else str(value)


def container(settings: Settings) -> Container:
    from orchestrator.adapters.celery.app import make_celery
    from orchestrator.bootstrap import Container

    return Container(settings, make_celery(settings))


def request_relay(c: Container, what: str) -> None:
    """Ask for an immediate relay run; beat's relay tick is the safety net if Redis is away."""
    try:
        c.request_relay()
    except Exception as exc:
        print(
            f"orchestrator: {what}: warning: relay not requested ({one_line(exc)});"
            " beat's relay tick publishes the outbox",
            file=sys.stderr,
        )


def add_row(table: Table, *values: str) -> None:
    """Cells as plain text: data such as "[Errno 111]" must never be read as rich markup."""
    table.add_row(*(Text(v) for v in values))


JsonOption = typer.Option(False, "--json", help=JSON_HELP)
LimitOption = typer.Option(50, "--limit", help="At most this many rows.")


def check_limit(limit: int) -> None:
    if limit < 1:
        usage_error(f"--limit must be >= 1; got {limit}")


# -- trace -----------------------------------------------------------------------------------


def _summary(e: TimelineEntry) -> str:
    d = e.details
    if e.kind == "inbox":
        return (
            f"{d['message_kind']} #{d['inbox_id']} outcome={dash(d['outcome'])}"
            f" attempts={d['attempts']} processing={dur(d['processing_ms'])}"
            + (f" error={d['last_error']}" if d["last_error"] else "")
        )
    if e.kind == "fact":
        return f"cause={d['causation_id']}"
    if e.kind == "task":
        return f"{d['status']} duration={dur(d['duration_ms'])}" + (
            f" error={d['error']}" if d["error"] else ""
        )
    if e.kind == "outbox":
        return (
            f"{d['status']} {d['message_kind']} -> {d['topic']} lag={dur(d['lag_ms'])}"
            f" attempts={d['attempts']}" + (f" error={d['last_error']}" if d["last_error"] else "")
        )
    return f"{d['status']} {d['reason']}" + (f" ({d['resolution']})" if d["resolution"] else "")


@app.command()
def trace(
    session_id: str = typer.Argument(..., help="The session (aggregate) id."),
    as_json: bool = JsonOption,
) -> None:
    """The whole story of one session, in time order.

    Inbox messages (received/processed, outcome, attempts), facts, AsyncTasks (state,
    duration), outbox rows (delivery status, sent_at, lag) and dead letters (those of raw input
    are found by their Kafka key). --json: a list of {at, kind, type, id, details}; exit 1 when
    nothing is recorded for the session.
    """
    settings = _settings()
    with guard("trace"), operations(settings) as ops:
        entries = ops.trace(session_id)
    if not entries:
        fail(f"trace: nothing recorded for session {session_id}", 1)
    if as_json:
        emit_json([e.as_dict() for e in entries])
        return
    start = entries[0].at
    table = Table(title=escape(f"session {session_id}: {len(entries)} entries"))
    for col in ("at (UTC)", "+ms", "kind", "type", "id", "details"):
        table.add_column(col, overflow="fold")
    for e in entries:
        offset = (e.at - start).total_seconds() * 1000
        add_row(table, ts(e.at), f"{offset:.0f}", e.kind, e.type, e.id, _summary(e))
    console().print(table)


# -- tasks -----------------------------------------------------------------------------------


@app.command()
def tasks(
    session: str | None = typer.Option(None, "--session", help="Only this session."),
    type_prefix: str | None = typer.Option(
        None, "--type", help="Only task types starting with this (e.g. Character.)."
    ),
    state: str | None = typer.Option(
        None, "--state", help="pending, running, completed or failed."
    ),
    older_than: float | None = typer.Option(
        None, "--older-than", help="Only tasks created more than this many seconds ago."
    ),
    limit: int = LimitOption,
    as_json: bool = JsonOption,
) -> None:
    """AsyncTasks, newest first.

    With their state, duration (created -> completed or failed) and age. --json: a list.
    """
    canonical = choice("--state", state, TASK_STATES)
    if older_than is not None:
        positive("--older-than", older_than, allow_zero=True)
    check_limit(limit)
    settings = _settings()
    with guard("tasks"), operations(settings) as ops:
        rows = ops.tasks(
            session_id=session,
            type_prefix=type_prefix,
            state=canonical,
            older_than_s=older_than,
            limit=limit,
        )
    if as_json:
        emit_json([r.as_dict() for r in rows])
        return
    table = Table(title=f"{len(rows)} AsyncTask(s)")
    for col in ("created (UTC)", "type", "status", "duration", "age", "session", "id", "error"):
        table.add_column(col, overflow="fold")
    for r in rows:
        add_row(
            table,
            ts(r.created_at),
            r.task_type,
            r.status,
            dur(r.duration_ms),
            dur(r.age_ms),
            r.session_id,
            r.id,
            dash(r.error),
        )
    console().print(table)


# -- outbox ----------------------------------------------------------------------------------


@outbox_app.callback(invoke_without_command=True)
def outbox(
    ctx: typer.Context,
    status: str | None = typer.Option(None, "--status", help="pending, failed or sent."),
    limit: int = LimitOption,
    as_json: bool = JsonOption,
) -> None:
    """Outbox rows (newest first) and their delivery; `outbox retry` re-drives FAILED rows.

    Each row with its lag (created -> sent, or -> now while unsent), and a summary: pending
    count, oldest pending age, failed and sent counts. --json: {summary: {...}, rows: [...]}.
    """
    if ctx.invoked_subcommand is not None:
        return
    canonical = choice("--status", status, OUTBOX_STATES)
    check_limit(limit)
    settings = _settings()
    with guard("outbox"), operations(settings) as ops:
        listing = ops.outbox(status=canonical, limit=limit)
    if as_json:
        emit_json(listing.as_dict())
        return
    table = Table(title=f"{len(listing.rows)} outbox row(s)")
    for col in ("seq", "created (UTC)", "kind", "type", "topic", "status", "lag", "tries", "id"):
        table.add_column(col, overflow="fold")
    table.add_column("error", overflow="fold")
    for r in listing.rows:
        add_row(
            table,
            str(r.seq),
            ts(r.created_at),
            r.kind,
            r.message_type,
            r.topic,
            r.status,
            dur(r.lag_ms),
            str(r.attempts),
            r.id,
            dash(r.last_error),
        )
    out = console()
    out.print(table)
    s = listing.summary
    oldest = dur(s.oldest_pending_age_ms) if s.oldest_pending_age_ms is not None else "-"
    out.print(f"pending {s.pending} (oldest {oldest}), failed {s.failed}, sent {s.sent}")


@outbox_app.command("retry")
def outbox_retry(
    outbox_id: str | None = typer.Argument(None, help="The FAILED outbox row to publish again."),
    all_failed: bool = typer.Option(False, "--all-failed", help="Every FAILED row."),
    as_json: bool = JsonOption,
) -> None:
    """Hand FAILED outbox rows back to the relay (PENDING, due now).

    Exit 1 when the ID is unknown or not FAILED. A retried row is published after the rows of
    its key that were sent meanwhile.
    """
    if (outbox_id is None) == (not all_failed):
        usage_error("outbox retry: give one outbox ID or --all-failed")
    settings = _settings()
    with guard("outbox retry"), operations(settings) as ops:
        if all_failed:
            ids = ops.retry_failed_outbox()
        else:
            assert outbox_id is not None
            ops.retry_outbox(outbox_id)
            ids = [outbox_id]
    _requeued(settings, ids, as_json, "outbox retry")


@outbox_app.command("republish")
def outbox_republish(
    last: float = typer.Option(..., "--last", help="Rows SENT in the last SECONDS."),
    as_json: bool = JsonOption,
) -> None:
    """Publish again the rows sent recently, after a broker lost messages it had acknowledged.

    The rows keep their message ids (consumers deduplicate) and their per-key order.
    """
    settings = _settings()
    with guard("outbox republish"), operations(settings) as ops:
        ids = ops.republish_sent(last)
    _requeued(settings, ids, as_json, "outbox republish")


def _requeued(settings: Settings, ids: list[str], as_json: bool, what: str) -> None:
    """Rows handed back to the relay: ask for a relay run and say how many."""
    if ids:
        c = container(settings)
        try:
            request_relay(c, what)
        finally:
            c.close()
    if as_json:
        emit_json({"requeued": len(ids), "ids": ids})
    else:
        typer.echo(f"requeued {len(ids)} outbox row(s)")


# -- dead letters ----------------------------------------------------------------------------


@dead_letters_app.command("list")
def dead_letters_list(
    category: str | None = typer.Option(
        None, "--category", help="Only this category (e.g. unknown_command)."
    ),
    status: str | None = typer.Option(None, "--status", help="open, replayed or discarded."),
    limit: int = LimitOption,
    as_json: bool = JsonOption,
) -> None:
    """Dead letters, newest first."""
    cat = choice("--category", category, DEAD_LETTER_CATEGORIES)
    canonical = choice("--status", status, DEAD_LETTER_STATES)
    check_limit(limit)
    settings = _settings()
    with guard("dead-letters list"), operations(settings) as ops:
        rows = ops.dead_letters(category=cat, status=canonical, limit=limit)
    if as_json:
        emit_json([r.as_dict() for r in rows])
        return
    table = Table(title=f"{len(rows)} dead letter(s)")
    for col in ("created (UTC)", "category", "status", "source", "session", "id", "reason"):
        table.add_column(col, overflow="fold")
    for r in rows:
        add_row(
            table,
            ts(r.created_at),
            r.category,
            r.status,
            f"{r.source_topic}[{dash(r.source_partition)}]@{dash(r.source_offset)}",
            dash(r.session_id),
            r.id,
            r.reason,
        )
    console().print(table)


def _show(d: DeadLetterDetail) -> None:
    table = Table(title=escape(f"dead letter {d.id}"), show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    rows: list[tuple[str, str]] = [
        ("category", d.category),
        ("reason", d.reason),
        ("status", d.status),
        ("created", ts(d.created_at)),
        ("resolved", ts(d.resolved_at)),
        ("resolution", dash(d.resolution)),
        ("source", f"{d.source_topic} partition {dash(d.source_partition)}"),
        ("offset", dash(d.source_offset)),
        ("session", dash(d.session_id)),
        ("message id", dash(d.message_id)),
        ("key", f"{dash(d.key)} ({dash(d.key_encoding)})"),
    ]
    rows.extend((f"header {h.name}", f"{dash(h.value)} ({dash(h.encoding)})") for h in d.headers)
    rows.append((f"value ({d.value_size} bytes, {dash(d.value_encoding)})", dash(d.value)))
    for name, value in rows:
        add_row(table, name, value)
    console().print(table)


@dead_letters_app.command("show")
def dead_letters_show(
    dead_letter_id: str = typer.Argument(..., help="The dead letter's id."),
    as_json: bool = JsonOption,
) -> None:
    """One dead letter with its original message.

    Value, key and headers as text when UTF-8 (else base64), source topic/partition/offset,
    category, reason, status and resolution.
    """
    settings = _settings()
    with guard("dead-letters show"), operations(settings) as ops:
        detail = ops.dead_letter(dead_letter_id)
    if as_json:
        emit_json(detail.as_dict())
    else:
        _show(detail)


def _replay_line(r: ReplayResult) -> str:
    if r.replayed:
        return f"replayed {r.dead_letter_id}: {r.resolution}"
    where = (
        f" (now dead letter {', '.join(r.dead_letter_ids)})"
        if r.dead_letter_ids and r.dead_letter_ids != [r.dead_letter_id]
        else ""
    )
    return f"still a dead letter {r.dead_letter_id}{where}: {r.category}: {r.reason}"


@dead_letters_app.command("replay")
def dead_letters_replay(
    dead_letter_id: str | None = typer.Argument(None, help="The OPEN dead letter to replay."),
    replay_all: bool = typer.Option(False, "--all", help="Every OPEN dead letter."),
    category: str | None = typer.Option(None, "--category", help="With --all: only this category."),
    as_json: bool = JsonOption,
) -> None:
    """Feed a dead letter's original message (the same bytes) through the pipeline again.

    For use once its cause is fixed: the command type registered or mapped, the size cap
    raised, a transient failure gone. Success marks it REPLAYED and asks for a relay run so its
    facts go out. A message that is still bad is dead-lettered again (kept OPEN, with its
    current category and reason): exit code 1. --json: the result (with --all: {replayed,
    still_dead, results}).
    """
    if (dead_letter_id is None) == (not replay_all):
        usage_error("dead-letters replay: give one dead letter ID or --all")
    if category is not None and not replay_all:
        usage_error("dead-letters replay: --category goes with --all")
    cat = choice("--category", category, DEAD_LETTER_CATEGORIES)
    settings = _settings()
    from orchestrator.service.operator_queries import Operations

    c = container(settings)
    results: list[ReplayResult] = []
    try:
        with guard("dead-letters replay"):
            ops = Operations(c.engine)
            ids = ops.open_dead_letter_ids(cat) if replay_all else [str(dead_letter_id)]
            for dl_id in ids:
                results.append(ops.replay_dead_letter(dl_id, c.agent))
        if any(r.replayed for r in results):
            request_relay(c, "dead-letters replay")
    finally:
        c.close()
    failed = [r for r in results if not r.replayed]
    if as_json:
        if replay_all:
            emit_json(
                {
                    "replayed": len(results) - len(failed),
                    "still_dead": len(failed),
                    "results": [r.as_dict() for r in results],
                }
            )
        else:
            emit_json(results[0].as_dict())
    else:
        for r in results:
            typer.echo(_replay_line(r))
        if replay_all:
            typer.echo(f"replayed {len(results) - len(failed)}, still dead {len(failed)}")
    if failed:
        if not replay_all:
            fail(f"dead-letters replay: {_replay_line(failed[0])}", 1)
        fail(f"dead-letters replay: {len(failed)} dead letter(s) still bad", 1)


@dead_letters_app.command("discard")
def dead_letters_discard(
    dead_letter_id: str = typer.Argument(..., help="The OPEN dead letter to discard."),
    reason: str = typer.Option(..., "--reason", help="Why it is dropped (kept as resolution)."),
    as_json: bool = JsonOption,
) -> None:
    """Close an OPEN dead letter for good (DISCARDED), keeping the reason."""
    if not reason.strip():
        usage_error("dead-letters discard: --reason must not be empty")
    settings = _settings()
    with guard("dead-letters discard"), operations(settings) as ops:
        ops.discard_dead_letter(dead_letter_id, reason)
    if as_json:
        emit_json({"id": dead_letter_id, "status": "DISCARDED", "resolution": reason.strip()})
    else:
        typer.echo(f"discarded {dead_letter_id}")


# -- stats -----------------------------------------------------------------------------------


@app.command()
def stats(
    window: float = typer.Option(300.0, "--window", help="The time window, in seconds."),
    as_json: bool = JsonOption,
) -> None:
    """The pipeline's figures over a time window.

    Commands (all messages, facts) per second; AsyncTask creation success rate (created /
    (created + capability_dispatch_failed dead letters); null, '-' in the table, when nothing
    was attempted); end-to-end latency of commands (inbox receipt -> AsyncTask completed) and
    latency of every AsyncTask (created -> completed), p50/p95/p99 in ms; errors (dead letters
    by category, FAILED outbox rows, failed AsyncTasks by error); outbox lag and inbox backlog.
    """
    positive("--window", window)
    settings = _settings()
    with guard("stats"), operations(settings) as ops:
        s = ops.stats(window)
    if as_json:
        emit_json(s.as_dict())
        return

    def pct(p: Any) -> str:
        return f"n={p.count} p50={dur(p.p50_ms)} p95={dur(p.p95_ms)} p99={dur(p.p99_ms)}"

    rate = s.task_creation_success_rate
    rows: list[tuple[str, str]] = [
        ("commands / s", f"{s.commands_per_s:.3f} ({s.commands_processed} processed)"),
        ("messages / s", f"{s.messages_per_s:.3f} ({s.messages_processed} processed)"),
        ("facts / s", f"{s.facts_per_s:.3f} ({s.facts_emitted} emitted)"),
        (
            "task creation success",
            f"{'-' if rate is None else f'{rate:.1%}'} ({s.tasks_created} created,"
            f" {s.task_dispatch_failures} dispatch failures)",
        ),
        ("end-to-end latency", pct(s.end_to_end_latency)),
        ("task latency", pct(s.task_latency)),
        (
            "dead letters",
            ", ".join(f"{k} {v}" for k, v in s.errors.dead_letters.items()) or "0",
        ),
        ("outbox failed (window)", str(s.errors.outbox_failed)),
        (
            "tasks failed",
            ", ".join(f"{k or '-'} {v}" for k, v in s.errors.tasks_failed.items()) or "0",
        ),
        (
            "outbox now",
            f"pending {s.outbox.pending} (oldest {dur(s.outbox.oldest_pending_age_ms)}),"
            f" failed {s.outbox.failed}",
        ),
        (
            "inbox backlog",
            f"{s.inbox.unprocessed} unprocessed (oldest {dur(s.inbox.oldest_age_ms)})",
        ),
    ]
    table = Table(title=f"last {s.window_s:g} s, up to {ts(s.at)} UTC", show_header=False)
    table.add_column("figure", style="bold")
    table.add_column("value", overflow="fold")
    for name, value in rows:
        add_row(table, name, value)
    console().print(table)


# -- send ------------------------------------------------------------------------------------


def command_envelope(
    command_type: str,
    session_id: str,
    payload: dict[str, Any],
    user_id: str | None,
    correlation_id: str,
    event_id: str,
    now: datetime,
) -> dict[str, Any]:
    """A `Genesis.Session.Command.Received` domain event (the wire contract)."""
    body: dict[str, Any] = {"command_type": command_type, "payload": payload}
    if user_id is not None:
        body["user_id"] = user_id
    return {
        "event_id": event_id,
        "event_type": COMMAND_EVENT_TYPE,
        "aggregate_type": "GenesisSession",
        "aggregate_id": session_id,
        "payload": body,
        "metadata": {"correlation_id": correlation_id, "causation_id": None},
        "created_at": now.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
    }


JSON_KINDS: dict[type, str] = {
    list: "an array",
    str: "a string",
    int: "a number",
    float: "a number",
    bool: "a boolean",
    type(None): "null",
}


def parse_payload(text: str) -> dict[str, Any]:
    try:
        doc = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        usage_error(f"send: --payload is not valid JSON: {one_line(exc)}")
    if not isinstance(doc, dict):
        kind = JSON_KINDS.get(type(doc), type(doc).__name__)
        usage_error(f"send: --payload must be a JSON object, got {kind}")
    return doc


def _quiet_kafka_logger() -> logging.Logger:
    """librdkafka's own log lines (connection refused, ...) would clutter stderr: the command
    reports the outcome itself."""
    logger = logging.getLogger("orchestrator.cli.kafka")
    logger.propagate = False
    if not logger.handlers:
        logger.addHandler(logging.NullHandler())
    return logger


@app.command()
def send(
    command_type: str = typer.Argument(..., help="The command type, e.g. Character.Request."),
    session: str = typer.Option(..., "--session", help="The session (aggregate) id; Kafka key."),
    payload: str = typer.Option(..., "--payload", help="The command's input: a JSON object."),
    user: str | None = typer.Option(None, "--user", help="The user id."),
    correlation_id: str | None = typer.Option(
        None, "--correlation-id", help="Correlation id (default: a new UUID)."
    ),
    timeout: float = typer.Option(5.0, "--timeout", help="Seconds to wait for the broker."),
    as_json: bool = JsonOption,
) -> None:
    """Produce a command to the domain topic, as the API layer would; prints its event_id.

    A Genesis.Session.Command.Received event (the wire contract), key = session id, header
    correlation_id. Fails (exit 1) when the broker has not acknowledged it within --timeout.
    """
    if not command_type.strip():
        usage_error("send: COMMAND_TYPE must not be empty")
    if not session.strip():
        usage_error("send: --session must not be empty")
    positive("--timeout", timeout)
    body = parse_payload(payload)
    settings = _settings()
    event_id = str(uuid.uuid4())
    correlation = correlation_id or str(uuid.uuid4())
    value = orjson.dumps(
        command_envelope(
            command_type, session, body, user, correlation, event_id, datetime.now(UTC)
        )
    )
    with guard("send"):
        _produce(settings, session, value, correlation, event_id, timeout)
    if as_json:
        emit_json(
            {
                "event_id": event_id,
                "correlation_id": correlation,
                "session_id": session,
                "topic": settings.domain_topic,
            }
        )
    else:
        typer.echo(event_id)


def _produce(
    settings: Settings,
    session: str,
    value: bytes,
    correlation: str,
    event_id: str,
    timeout: float,
) -> None:
    from confluent_kafka import KafkaError

    from orchestrator.adapters.kafka.clients import make_producer

    timeout_ms = max(1000, int(timeout * 1000))
    producer = make_producer(
        settings,
        **{
            "message.timeout.ms": timeout_ms,
            "client.id": "genesis-orchestrator-cli",
            "logger": _quiet_kafka_logger(),
        },
    )
    reports: list[KafkaError | None] = []

    def on_delivery(err: KafkaError | None, _msg: Any) -> None:
        reports.append(err)

    producer.produce(
        settings.domain_topic,
        value=value,
        key=session.encode(),
        headers=[("correlation_id", correlation.encode()), ("message_id", event_id.encode())],
        on_delivery=on_delivery,
    )
    producer.flush(timeout_ms / 1000 + 2)
    if not reports:
        fail(
            f"send: kafka error: not delivered within {timeout_ms / 1000:g} s"
            f" (bootstrap {settings.kafka_bootstrap_servers})",
            1,
        )
    err = reports[0]
    if err is not None:
        fail(
            f"send: kafka error: {one_line(err.str())}"
            f" (bootstrap {settings.kafka_bootstrap_servers}, topic {settings.domain_topic})",
            1,
        )
