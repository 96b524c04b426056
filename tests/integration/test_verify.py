"""The invariant checker on a real database: a database filled through
`MessageProcessor.process_message` verifies clean; each break made with SQL is reported exactly,
naming the message it concerns; the `verify` command prints the same and sets its exit code."""

from __future__ import annotations

import base64
import logging
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
import structlog
from sqlalchemy import Engine, text
from typer.testing import CliRunner

from orchestrator.adapters.postgres.engine import make_engine
from orchestrator.adapters.postgres.maintenance import PgMaintenance
from orchestrator.adapters.postgres.store import SqlStore
from orchestrator.cli.main import app
from orchestrator.cli.verify_command import verify_command
from orchestrator.core import ids
from orchestrator.core.errors import Category
from orchestrator.core.inbound import RawMessage
from orchestrator.core.outbound import raw_dead_letter_id
from orchestrator.core.records import Status
from orchestrator.devtools.verify import Code, ExpectedInput, Report, verify
from orchestrator.service.maintenance import Maintenance
from orchestrator.service.process_message import MessageProcessor
from tests.support.db import CAPABILITY_TOPIC, DOMAIN_TOPIC, FIXED_NOW, Db, Wire
from tests.support.helpers import DatabaseFactory

CHAR_REQ = "Character.Design.GenerationRequested"
THEME_REQ = "Outliner.Theme.GenerationRequested"
REVIEW_REQ = "Review.Quality.EvaluationRequested"


def fact_id(cause: str, event_type: str) -> str:
    return ids.derive(cause, "fact", event_type)


def cap_id(cause: str, msg_type: str) -> str:
    return ids.derive(cause, "capability", msg_type)


def g(action: str) -> str:
    return f"Genesis.Session.{action}"


@dataclass
class Filled:
    """Ids of what `fill` sent, to name messages in the assertions."""

    s1: str
    s2: str
    k1: str
    k2: str
    k3: str
    c1: str  # Character.Request
    g1: str  # first generation result
    q1: str  # review 6 -> regeneration
    g2: str
    q2: str  # review 8 -> confirmed
    c2: str  # Stage.Validate
    v2: str  # consistency check
    c3: str  # Theme.Request (its task times out)
    t3: str  # the Theme task
    unhandled: str
    skipped: str
    not_json: RawMessage
    unknown: RawMessage
    expected: list[ExpectedInput]


def fill(agent: MessageProcessor, engine: Engine, db: Db, wire: type[Wire]) -> Filled:
    s1, s2 = str(uuid.uuid4()), str(uuid.uuid4())
    k1, k2, k3 = str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4())
    cmd1 = wire.command("Character.Request", s1, k1, {"name": "Ada"})
    gen1 = wire.capability("Character.Design.Generated", s1, k1, name="Ada")
    rev1 = wire.capability("Review.Quality.Evaluated", s1, k1, target_type="character", score=6.0)
    gen2 = wire.capability("Character.Design.Generated", s1, k1, name="Ada II")
    rev2 = wire.capability("Review.Quality.Evaluated", s1, k1, target_type="character", score=8.0)
    cmd2 = wire.command("Stage.Validate", s1, k2, {"stage": "characters"})
    chk2 = wire.capability("Review.Consistency.Checked", s1, k2, ok=True)
    cmd3 = wire.command("Theme.Request", s2, k3, {"genre": "noir"})
    unhandled = wire.capability("Unknown.Thing.Happened", s2, k3)
    skipped_doc = {
        "event_id": str(uuid.uuid4()),
        "event_type": "Genesis.Session.Something.Happened",
        "aggregate_type": "GenesisSession",
        "aggregate_id": s2,
        "payload": {},
        "metadata": {},
    }
    skipped = RawMessage(DOMAIN_TOPIC, orjson.dumps(skipped_doc), s2.encode(), (), 0, None)
    not_json = RawMessage(DOMAIN_TOPIC, b"{not json", b"k-bad", (), 0, 90)
    unknown_doc = orjson.loads(wire.command("Character.Request", s2, k3).value or b"{}")
    unknown_doc["payload"]["command_type"] = "Dragon.Summon"
    unknown = RawMessage(DOMAIN_TOPIC, orjson.dumps(unknown_doc), s2.encode(), (), 0, 91)
    statuses = {}
    for raw in (cmd1, gen1, rev1, gen2, rev2, cmd2, chk2, cmd3, unhandled, skipped):
        statuses[wire.message_id(raw)] = agent.process_message(raw).status
    for raw in (not_json, unknown):
        assert agent.process_message(raw).status is Status.DEAD_LETTERED
    assert statuses[wire.message_id(skipped)] is Status.IGNORED
    assert statuses[wire.message_id(unhandled)] is Status.NO_HANDLER
    c3 = wire.message_id(cmd3)
    t3 = cap_id(c3, THEME_REQ)
    db.exec(
        "UPDATE async_tasks SET deadline_at = now() - interval '1 second' WHERE id = :id", id=t3
    )
    maintenance = Maintenance(
        PgMaintenance(engine), DOMAIN_TOPIC, lambda *_: None, lambda _t: "", 60.0, 3600.0
    )
    assert maintenance.expire_tasks() == 1
    relay_everything(db)
    mid = wire.message_id
    expected = [
        ExpectedInput.command(mid(cmd1), [g("Character.Requested")]),
        ExpectedInput.capability(mid(gen1), [g("Character.Proposed")]),
        ExpectedInput.capability(mid(rev1)),
        ExpectedInput.capability(mid(gen2)),
        ExpectedInput.capability(mid(rev2), [g("Character.Confirmed")], topic=CAPABILITY_TOPIC),
        ExpectedInput.command(mid(cmd2)),
        ExpectedInput.capability(mid(chk2), [g("Stage.Confirmed")]),
        ExpectedInput.command(mid(cmd3), [g("Theme.Requested")], topic=DOMAIN_TOPIC),
        ExpectedInput.capability(mid(unhandled), []),
        ExpectedInput.skipped(mid(skipped)),
        ExpectedInput.invalid(not_json, Category.NOT_JSON),
        ExpectedInput.invalid(unknown, "unknown_command"),
    ]
    return Filled(
        s1,
        s2,
        k1,
        k2,
        k3,
        mid(cmd1),
        mid(gen1),
        mid(rev1),
        mid(gen2),
        mid(rev2),
        mid(cmd2),
        mid(chk2),
        c3,
        t3,
        mid(unhandled),
        mid(skipped),
        not_json,
        unknown,
        expected,
    )


def relay_everything(db: Db) -> None:
    """What the relay does once Kafka acknowledged every row."""
    db.exec(
        "UPDATE async_tasks SET status = 'RUNNING' WHERE status = 'PENDING'"
        " AND id IN (SELECT id FROM event_outbox WHERE kind = 'capability')"
    )
    db.exec("UPDATE event_outbox SET status = 'SENT', sent_at = now() WHERE status = 'PENDING'")


TABLES = ("inbox", "domain_events", "event_outbox", "async_tasks", "dead_letters")


@pytest.fixture(scope="module")
def database_url(fresh_database_url: DatabaseFactory) -> Iterator[str]:
    """One database for the module, filled once; each test gets it back as filled."""
    url = fresh_database_url()
    try:
        yield url
    finally:
        fresh_database_url.drop(url)


@pytest.fixture(scope="module")
def snapshot(database_url: str) -> Iterator[Filled]:
    engine = make_engine(database_url)
    try:
        db = Db(engine)
        done = fill(MessageProcessor(SqlStore(engine), clock=lambda: FIXED_NOW), engine, db, Wire)
        db.exec("CREATE SCHEMA verify_snapshot")
        for table in TABLES:
            db.exec(f"CREATE TABLE verify_snapshot.{table} AS TABLE public.{table}")
        yield done
    finally:
        engine.dispose()


@pytest.fixture
def filled(snapshot: Filled, db: Db) -> Filled:
    """The filled database, restored from the snapshot (breaks never leak between tests)."""
    with db.engine.begin() as conn:
        for table in TABLES:
            conn.execute(text(f"DELETE FROM public.{table}"))
            conn.execute(text(f"INSERT INTO public.{table} SELECT * FROM verify_snapshot.{table}"))
    return snapshot


def found(report: Report) -> set[tuple[str, str | None]]:
    return {(p.code.value, p.message_id) for p in report.problems}


def insert_fact(db: Db, *, cause: str, event_type: str, session: str, corr: str) -> str:
    event_id = str(uuid.uuid4())
    db.exec(
        "INSERT INTO domain_events (event_id, event_type, aggregate_type, session_id,"
        " correlation_id, causation_id, payload) VALUES (:e, :t, 'GenesisSession', :s, :c,"
        " :cause, '{}'::jsonb)",
        e=event_id,
        t=event_type,
        s=session,
        c=corr,
        cause=cause,
    )
    return event_id


def insert_fact_outbox(db: Db, event_id: str, event_type: str, session: str, cause: str) -> None:
    headers = [["causation_id", base64.b64encode(cause.encode()).decode()]]
    db.exec(
        "INSERT INTO event_outbox (id, kind, message_type, topic, key, headers, payload,"
        " session_id, status, sent_at) VALUES (:id, 'fact', :t, :topic, :k,"
        " CAST(:h AS jsonb), '\\x7b7d', :s, 'SENT', now())",
        id=event_id,
        t=event_type,
        topic=DOMAIN_TOPIC,
        k=session.encode(),
        h=orjson.dumps(headers).decode(),
        s=session,
    )


# -- a clean database -------------------------------------------------------------------------


def test_filled_database_verifies_clean(filled: Filled, engine: Engine, db: Db) -> None:
    report = verify(engine)
    assert report.ok, report.text()
    counts = db.counts()
    assert report.counts.messages == counts["inbox"] + 2  # + the two raw dead letters
    assert report.counts.facts == counts["domain_events"] == 9
    assert report.counts.tasks == counts["async_tasks"] == 6
    assert report.counts.dead_letters == counts["dead_letters"] == 2
    assert report.counts.outbox == counts["event_outbox"]
    assert report.counts.problems == 0
    assert "all invariants hold" in report.text()

    explicit = verify(engine, filled.expected)
    assert explicit.ok, explicit.text()
    assert explicit.counts.messages == len(filled.expected)


def test_session_filter(filled: Filled, engine: Engine, db: Db) -> None:
    report = verify(engine, session=filled.s2)
    assert report.ok, report.text()
    # Theme.Requested and the timeout fact; the command and the unhandled result are its inputs,
    # with the unknown command's dead letter when it names the session.
    dead = db.scalar("SELECT count(*) FROM dead_letters WHERE session_id = :s", s=filled.s2)
    assert report.counts.facts == 2
    assert report.counts.tasks == 1
    assert report.counts.dead_letters == dead
    assert report.counts.messages == 2 + dead
    assert report.session_id == filled.s2


# -- each break, reported exactly -------------------------------------------------------------


def test_deleted_fact(filled: Filled, engine: Engine, db: Db) -> None:
    requested = fact_id(filled.c1, g("Character.Requested"))
    db.exec("DELETE FROM domain_events WHERE event_id = :id", id=requested)
    report = verify(engine)
    assert found(report) == {
        ("missing_fact", filled.c1),
        ("outbox_fact_without_fact", filled.c1),  # its outbox row is still there
        ("requested_fact_missing", filled.g1),  # Character.Proposed without the request
    }, report.text()
    missing = report.about(filled.c1)[0]
    assert missing.detail == f"no {g('Character.Requested')} fact"
    assert missing.session_id == filled.s1
    session_level = report.about(filled.g1)[0]
    assert session_level.correlation_id == filled.k1
    assert g("Character.Proposed") in session_level.detail


def test_deleted_fact_and_its_outbox_row(filled: Filled, engine: Engine, db: Db) -> None:
    requested = fact_id(filled.c1, g("Character.Requested"))
    db.exec("DELETE FROM domain_events WHERE event_id = :id", id=requested)
    db.exec("DELETE FROM event_outbox WHERE id = :id", id=requested)
    report = verify(engine, sessions=False)
    assert found(report) == {("missing_fact", filled.c1)}, report.text()
    assert verify(engine, filled.expected, sessions=False).about(filled.c1)[0].code is (
        Code.MISSING_FACT
    )


def test_second_fact_of_a_type_with_another_cause(filled: Filled, engine: Engine, db: Db) -> None:
    """A second Character.Requested for the correlation, claiming a review result as its cause
    (unique constraints forbid a true duplicate)."""
    event_type = g("Character.Requested")
    event_id = insert_fact(
        db, cause=filled.q2, event_type=event_type, session=filled.s1, corr=filled.k1
    )
    insert_fact_outbox(db, event_id, event_type, filled.s1, filled.q2)
    report = verify(engine)
    assert found(report) == {("unexpected_fact", filled.q2)}, report.text()
    assert report.problems[0].detail == f"unexpected {event_type} fact {event_id}"


def test_orphan_fact(filled: Filled, engine: Engine, db: Db) -> None:
    ghost = str(uuid.uuid4())
    event_type = g("Character.Proposed")
    event_id = insert_fact(
        db, cause=ghost, event_type=event_type, session=filled.s1, corr=filled.k1
    )
    report = verify(engine)
    assert found(report) == {("orphan_fact", ghost), ("fact_without_outbox", ghost)}, report.text()
    insert_fact_outbox(db, event_id, event_type, filled.s1, ghost)
    report = verify(engine)
    assert found(report) == {("orphan_fact", ghost)}, report.text()
    assert event_id in report.problems[0].detail


def test_orphan_check_is_skipped_once_retention_pruned_the_inbox(
    filled: Filled, engine: Engine, db: Db
) -> None:
    db.exec("DELETE FROM inbox")
    report = verify(engine)
    assert report.pruned
    assert report.ok, report.text()


def test_inbox_row_marked_unprocessed(filled: Filled, engine: Engine, db: Db) -> None:
    db.exec("UPDATE inbox SET processed_at = NULL WHERE message_id = :m", m=filled.q1)
    report = verify(engine)
    assert found(report) == {("inbox_unprocessed", filled.q1)}, report.text()
    assert "Review.Quality.Evaluated" in report.problems[0].detail
    with_inputs = verify(engine, filled.expected)
    assert found(with_inputs) == {("inbox_unprocessed", filled.q1)}, with_inputs.text()


def test_outbox_row_failed(filled: Filled, engine: Engine, db: Db) -> None:
    message = cap_id(filled.c1, CHAR_REQ)
    db.exec(
        "UPDATE event_outbox SET status = 'FAILED', last_error = 'message too large'"
        " WHERE id = :id",
        id=message,
    )
    report = verify(engine)
    assert found(report) == {("outbox_not_sent", filled.c1)}, report.text()
    detail = report.problems[0].detail
    assert message in detail and "FAILED" in detail and "message too large" in detail


def test_outbox_row_pending(filled: Filled, engine: Engine, db: Db) -> None:
    fact = fact_id(filled.v2, g("Stage.Confirmed"))
    db.exec("UPDATE event_outbox SET status = 'PENDING' WHERE id = :id", id=fact)
    assert found(verify(engine)) == {("outbox_not_sent", filled.v2)}


def test_deleted_async_task(filled: Filled, engine: Engine, db: Db) -> None:
    task = cap_id(filled.c1, CHAR_REQ)
    db.exec("DELETE FROM async_tasks WHERE id = :id", id=task)
    report = verify(engine)
    assert found(report) == {("missing_task", filled.c1)}, report.text()
    assert task in report.problems[0].detail


def test_deleted_capability_message(filled: Filled, engine: Engine, db: Db) -> None:
    message = cap_id(filled.g1, REVIEW_REQ)
    db.exec("DELETE FROM event_outbox WHERE id = :id", id=message)
    report = verify(engine)
    assert found(report) == {
        ("missing_capability_message", filled.g1),
        ("task_without_message", filled.g1),
    }, report.text()


def test_dispatch_failure_dead_letter_excuses_the_missing_task(
    filled: Filled, engine: Engine, db: Db
) -> None:
    message = cap_id(filled.g2, REVIEW_REQ)
    db.exec("DELETE FROM async_tasks WHERE id = :id", id=message)
    db.exec("DELETE FROM event_outbox WHERE id = :id", id=message)
    assert found(verify(engine)) == {("missing_capability_message", filled.g2)}
    dead_id = str(uuid.uuid4())
    db.exec(
        "INSERT INTO dead_letters (id, category, reason, source_topic, session_id, message_id)"
        " VALUES (:id, 'capability_dispatch_failed', 'boom', :t, :s, :m)",
        id=dead_id,
        t=CAPABILITY_TOPIC,
        s=filled.s1,
        m=filled.g2,
    )
    assert found(verify(engine)) == {("dead_letter_not_published", filled.g2)}


def test_timeout_fact_without_a_failed_task(filled: Filled, engine: Engine, db: Db) -> None:
    db.exec("UPDATE async_tasks SET status = 'COMPLETED' WHERE id = :id", id=filled.t3)
    report = verify(engine)
    assert found(report) == {("timeout_task_not_failed", filled.t3)}, report.text()


def test_dead_letter_not_published(filled: Filled, engine: Engine, db: Db) -> None:
    dead = raw_dead_letter_id(filled.not_json)
    db.exec("DELETE FROM event_outbox WHERE id = :id", id=dead)
    report = verify(engine)
    assert found(report) == {("dead_letter_not_published", dead)}, report.text()


def test_expected_dead_letter_categories(filled: Filled, engine: Engine, db: Db) -> None:
    wrong = [
        ExpectedInput.invalid(filled.not_json, Category.NOT_UTF8),
        ExpectedInput.invalid(filled.unknown, Category.UNKNOWN_COMMAND),
    ]
    report = verify(engine, wrong)
    label = raw_dead_letter_id(filled.not_json)
    assert found(report) == {("dead_letter_category", label)}, report.text()
    assert report.problems[0].detail == "dead-lettered as not_json, expected not_utf8"

    never_sent = RawMessage(DOMAIN_TOPIC, b"never sent", None)
    report = verify(engine, [ExpectedInput.invalid(never_sent, Category.NOT_JSON)])
    assert found(report) == {("dead_letter_missing", raw_dead_letter_id(never_sent))}


def test_expected_inputs_that_went_elsewhere(filled: Filled, engine: Engine) -> None:
    absent = str(uuid.uuid4())
    report = verify(
        engine,
        [
            ExpectedInput.command(absent),
            ExpectedInput.capability(filled.c1),  # a command, not a result
            ExpectedInput.skipped(filled.g1),  # recorded, not skipped
            ExpectedInput.command(filled.c2, [g("Stage.LockRequested")]),
        ],
    )
    assert found(report) == {
        ("message_missing", absent),
        ("wrong_kind", filled.c1),
        ("skipped_message_recorded", filled.g1),
        ("missing_fact", filled.c2),
        ("unexpected_fact", filled.c2),
    }, report.text()


def test_report_reads_message_by_message(filled: Filled, engine: Engine, db: Db) -> None:
    db.exec("UPDATE inbox SET processed_at = NULL WHERE message_id = :m", m=filled.q1)
    db.exec("DELETE FROM async_tasks WHERE id = :id", id=cap_id(filled.c1, CHAR_REQ))
    report = verify(engine)
    text = report.text()
    assert text.splitlines()[0].endswith("2 problem(s)")
    assert f"message {filled.q1} (session {filled.s1}):" in text
    assert f"message {filled.c1} (session {filled.s1}):" in text
    doc = report.as_dict()
    assert doc["ok"] is False and doc["counts"]["problems"] == 2
    assert {p["code"] for p in doc["problems"]} == {"inbox_unprocessed", "missing_task"}


# -- the command line -------------------------------------------------------------------------


def run_cli(database_url: str, *args: str) -> Any:
    """`orchestrator verify ...` in-process; the command configures logging onto the runner's
    streams, so the previous logging set-up is put back afterwards."""
    assert verify_command is not None  # importing the module registers the command
    env = {"DATABASE_URL": database_url, "ORCHESTRATOR_LOG_LEVEL": "WARNING"}
    config = structlog.get_config()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        return CliRunner().invoke(app, ["verify", *args], env=env)
    finally:
        structlog.configure(**config)
        root.handlers[:] = handlers
        root.setLevel(level)


def test_cli_exit_codes_and_json(filled: Filled, database_url: str, db: Db) -> None:
    ok = run_cli(database_url)
    assert ok.exit_code == 0, ok.output
    assert "all invariants hold" in ok.stdout

    doc = orjson.loads(run_cli(database_url, "--json").stdout)
    assert doc["ok"] is True and doc["problems"] == []
    assert set(doc["counts"]) == {
        "messages",
        "facts",
        "tasks",
        "dead_letters",
        "outbox",
        "problems",
    }

    db.exec("UPDATE inbox SET processed_at = NULL WHERE message_id = :m", m=filled.q1)
    broken = run_cli(database_url)
    assert broken.exit_code == 1
    assert f"message {filled.q1}" in broken.stdout and "inbox_unprocessed" in broken.stdout

    as_json = run_cli(database_url, "--json")
    assert as_json.exit_code == 1
    problems = orjson.loads(as_json.stdout)["problems"]
    assert [(p["code"], p["message_id"]) for p in problems] == [("inbox_unprocessed", filled.q1)]

    scoped = run_cli(database_url, "--json", "--session", filled.s2)
    assert scoped.exit_code == 0, scoped.output
    assert orjson.loads(scoped.stdout)["session_id"] == filled.s2


def test_cli_unreachable_database_is_one_line(make_url_with_password: Callable[[], str]) -> None:
    result = run_cli(make_url_with_password())
    assert result.exit_code == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("orchestrator: verify: "), result.stderr
    assert "S3cretVerify" not in result.output


@pytest.fixture
def make_url_with_password() -> Callable[[], str]:
    return lambda: "postgresql+psycopg2://postgres:S3cretVerify@127.0.0.1:1/nowhere"


def test_a_task_absorbed_by_an_active_one_is_no_problem(
    filled: Filled, store: SqlStore, engine: Engine, db: Db, wire: type[Wire]
) -> None:
    """Two commands of one correlation while the first task is active: no second AsyncTask
    and no second message (architecture.md, "One task per correlation")."""
    agent = MessageProcessor(store, clock=lambda: FIXED_NOW)
    session, corr = str(uuid.uuid4()), str(uuid.uuid4())
    first = agent.process_message(wire.command("Character.Request", session, corr))
    second = agent.process_message(wire.command("Character.Request", session, corr))
    assert first.task_ids and not second.task_ids and not second.message_ids
    relay_everything(db)
    report = verify(engine)
    assert report.ok, report.text()
    # Without the task that held it back, the second message is missing.
    db.exec("DELETE FROM async_tasks WHERE id = :id", id=first.task_ids[0])
    assert found(verify(engine)) == {
        ("missing_task", first.message_id),
        ("missing_capability_message", second.message_id),
    }
