"""`orchestrator dead-letters list | show | replay | discard`: inputs that could not be
processed, and what an operator does about them once the cause is fixed."""

from __future__ import annotations

import typer
from rich.markup import escape
from rich.table import Table

from orchestrator.cli.app import dead_letters_app
from orchestrator.cli.errors import cli_errors, usage_error
from orchestrator.cli.options import JsonOption, LimitOption, check_limit, choice
from orchestrator.cli.output import add_row, console, dash, emit_json, ts
from orchestrator.cli.wiring import (
    command_settings,
    container,
    operations,
    operations_on,
    request_relay,
)
from orchestrator.core.errors import DEAD_LETTER_CATEGORIES
from orchestrator.core.records import DEAD_LETTER_STATES
from orchestrator.service.operator_views import DeadLetterDetail, ReplayResult
from orchestrator.settings import Settings
from orchestrator.startup import fail


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
    settings = command_settings(quiet=True)
    with cli_errors("dead-letters list"), operations(settings) as ops:
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
    settings = command_settings(quiet=True)
    with cli_errors("dead-letters show"), operations(settings) as ops:
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
    results = _replay(command_settings(quiet=True), dead_letter_id, cat)
    failed = [r for r in results if not r.replayed]
    if as_json:
        emit_json(
            {
                "replayed": len(results) - len(failed),
                "still_dead": len(failed),
                "results": [r.as_dict() for r in results],
            }
            if replay_all
            else results[0].as_dict()
        )
    else:
        # Each result once: on stdout, but the failure of a single replay, which is the
        # error line on stderr (it used to be printed on both).
        for r in results:
            if r.replayed or replay_all:
                typer.echo(_replay_line(r))
        if replay_all and not failed:
            typer.echo(f"replayed {len(results)}, still dead 0")
    if failed and not replay_all:
        fail(f"dead-letters replay: {_replay_line(failed[0])}", 1)
    if failed:
        fail(
            f"dead-letters replay: replayed {len(results) - len(failed)}, still dead {len(failed)}",
            1,
        )


def _replay(
    settings: Settings, dead_letter_id: str | None, category: str | None
) -> list[ReplayResult]:
    """Replay one dead letter (or, without an id, every OPEN one of `category`) with the
    configured message processor; ask for a relay run when one went through."""
    c = container(settings)
    results: list[ReplayResult] = []
    try:
        with cli_errors("dead-letters replay"):
            ops = operations_on(c)
            ids = ops.open_dead_letter_ids(category) if dead_letter_id is None else [dead_letter_id]
            for dl_id in ids:
                results.append(ops.replay_dead_letter(dl_id, c.processor))
        if any(r.replayed for r in results):
            request_relay(c, "dead-letters replay")
    finally:
        c.close()
    return results


@dead_letters_app.command("discard")
def dead_letters_discard(
    dead_letter_id: str = typer.Argument(..., help="The OPEN dead letter to discard."),
    reason: str = typer.Option(..., "--reason", help="Why it is dropped (kept as resolution)."),
    as_json: bool = JsonOption,
) -> None:
    """Close an OPEN dead letter for good (DISCARDED), keeping the reason."""
    if not reason.strip():
        usage_error("dead-letters discard: --reason must not be empty")
    settings = command_settings(quiet=True)
    with cli_errors("dead-letters discard"), operations(settings) as ops:
        ops.discard_dead_letter(dead_letter_id, reason)
    if as_json:
        emit_json({"id": dead_letter_id, "status": "DISCARDED", "resolution": reason.strip()})
    else:
        typer.echo(f"discarded {dead_letter_id}")
