"""Exactly-once effects on a real PostgreSQL: redelivery, concurrent delivery from several
processes, failures mid-transaction, optimistic locking, late and unmatched results, dead
letters, and the runtime's per-session drain."""

from __future__ import annotations

import multiprocessing
import os
import threading
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import orjson
import pytest
from sqlalchemy import Engine

from orchestrator.adapters.postgres.engine import make_engine
from orchestrator.adapters.postgres.maintenance import PgMaintenance
from orchestrator.adapters.postgres.store import SqlStore, SqlTransaction
from orchestrator.adapters.redis.state import RedisState, make_redis
from orchestrator.core import ids
from orchestrator.core.errors import StaleVersion
from orchestrator.core.inbound import RawMessage
from orchestrator.core.outbound import inbox_dead_letter_id, raw_dead_letter_id
from orchestrator.core.records import NewInbox, Outcome, Status
from orchestrator.service.drain import SessionWorker
from orchestrator.service.maintenance import Maintenance
from orchestrator.service.process_message import MessageProcessor, ProcessorConfig
from tests.support.db import (
    CAPABILITY_TOPIC,
    DLQ_TOPIC,
    DOMAIN_TOPIC,
    EMPTY_COUNTS,
    FIXED_NOW,
    Db,
    Wire,
)
from tests.support.helpers import DatabaseFactory, wait_for

CHAR_REQ = "Character.Design.GenerationRequested"
REVIEW_REQ = "Review.Quality.EvaluationRequested"


def make_agent(store: SqlStore, **config: Any) -> MessageProcessor:
    return MessageProcessor(store, ProcessorConfig(**config), clock=lambda: FIXED_NOW)


def cap_id(cause: str, msg_type: str) -> str:
    return ids.derive(cause, "capability", msg_type)


def session_messages(wire: type[Wire], s: str, c1: str, c2: str) -> list[RawMessage]:
    """A whole character + stage session, an unhandled result and three dead letters."""
    return [
        wire.command("Character.Request", s, c1, {"name": "Aria"}),
        wire.capability("Character.Design.Generated", s, c1, name="Aria", traits=["brave"]),
        wire.capability("Review.Quality.Evaluated", s, c1, target_type="character", score=6.0),
        wire.capability("Character.Design.Generated", s, c1, name="Aria", traits=["bold"]),
        wire.capability("Review.Quality.Evaluated", s, c1, target_type="character", score=8.0),
        wire.command("Stage.Validate", s, c2, {"stage": "characters"}),
        wire.capability("Review.Consistency.Checked", s, c2, ok=True),
        wire.capability("Illustrator.Image.Generated", s, c2, url="http://img"),
        RawMessage(CAPABILITY_TOPIC, b"not json at all", s.encode(), (), 0, 7),
        wire.command("Character.Summon", s, c1, {"name": "x"}),
        RawMessage(DOMAIN_TOPIC, b'{"event_id": "e", "event_type": "X.Command.Received"}'),
    ]


SESSION_COUNTS = {
    "inbox": 8,
    "domain_events": 7,
    "event_outbox": 15,
    "async_tasks": 5,
    "dead_letters": 3,
}


def table_contents(db: Db) -> dict[str, list[dict[str, Any]]]:
    """Every table without its timestamps and serial numbers (which differ between runs)."""
    return {
        "inbox": db.all(
            "SELECT topic, message_id, kind, message_type, session_id, correlation_id, key,"
            " value, headers, outcome, last_error, processed_at IS NOT NULL AS processed"
            " FROM inbox ORDER BY topic, message_id"
        ),
        "domain_events": db.all(
            "SELECT event_id, event_type, aggregate_type, session_id, correlation_id,"
            " causation_id, payload FROM domain_events ORDER BY event_id"
        ),
        "event_outbox": db.all(
            "SELECT id, kind, message_type, topic, key, headers, payload, session_id,"
            " correlation_id, status, attempts FROM event_outbox"
            " ORDER BY session_id NULLS LAST, seq"
        ),
        "async_tasks": db.all(
            "SELECT id, task_type, correlation_id, session_id, causation_id, status, input,"
            " result, error, version, deadline_at FROM async_tasks ORDER BY id"
        ),
        "dead_letters": db.all(
            "SELECT id, category, reason, source_topic, source_partition, source_offset, key,"
            " value, headers, session_id, message_id, status FROM dead_letters ORDER BY id"
        ),
    }


# -- redelivery --------------------------------------------------------------------------------


def test_every_message_delivered_twice_has_one_set_of_effects(
    store: SqlStore, db: Db, wire: type[Wire]
) -> None:
    agent = make_agent(store)
    s = "session-" + wire.new_id()
    messages = session_messages(wire, s, wire.new_id(), wire.new_id())
    first: list[Outcome] = []
    for raw in messages:
        out = agent.process_message(raw)
        first.append(out)
        before = table_contents(db)
        again = agent.process_message(raw)
        if out.status is Status.DEAD_LETTERED:
            assert again.status is Status.DEAD_LETTERED
            assert (again.dead_letter_id, again.category) == (out.dead_letter_id, out.category)
            assert (out.wrote_outbox, again.wrote_outbox) == (True, False)
        else:
            assert again.status is Status.DUPLICATE, again
            assert (again.message_id, again.inbox_id) == (out.message_id, out.inbox_id)
            assert again.fact_ids == again.task_ids == again.completed_task_ids == []
            assert again.wrote_outbox is False
        assert table_contents(db) == before

    assert [o.status for o in first] == [
        *[Status.PROCESSED] * 7,
        Status.NO_HANDLER,
        *[Status.DEAD_LETTERED] * 3,
    ]
    assert [o.category for o in first[8:]] == ["not_json", "unknown_command", "missing_field"]
    assert db.counts() == SESSION_COUNTS
    snapshot = table_contents(db)

    # The whole stream once more, as after a consumer rewind.
    replay = [agent.process_message(raw).status for raw in messages]
    assert replay == [*[Status.DUPLICATE] * 8, *[Status.DEAD_LETTERED] * 3]
    assert table_contents(db) == snapshot


# -- concurrent delivery from several OS processes ---------------------------------------------


def deliver_all(
    url: str,
    messages: list[tuple[str, bytes | None, bytes | None, int | None, int | None]],
    barrier: Any,
    results: Any,
) -> None:
    """One competing consumer process: its own engine, every message in order."""
    try:
        engine = make_engine(url)
        try:
            agent = make_agent(SqlStore(engine))
            barrier.wait(timeout=60)
            seen = []
            for topic, value, key, partition, offset in messages:
                out = agent.process_message(RawMessage(topic, value, key, (), partition, offset))
                seen.append((out.status.value, out.wrote_outbox))
            results.put((os.getpid(), seen, None))
        finally:
            engine.dispose()
    except BaseException:
        results.put((os.getpid(), [], traceback.format_exc()))


def test_concurrent_delivery_from_four_processes(
    database_url: str,
    fresh_database_url: DatabaseFactory,
    db: Db,
    wire: type[Wire],
) -> None:
    s1, s2 = "session-" + wire.new_id(), "session-" + wire.new_id()
    stream = session_messages(wire, s1, wire.new_id(), wire.new_id())
    other = session_messages(wire, s2, wire.new_id(), wire.new_id())[:7]
    messages = [m for pair in zip(stream, other + [None] * 4, strict=True) for m in pair if m]
    plain = [(m.topic, m.value, m.key, m.partition, m.offset) for m in messages]
    outcome_of = {
        **{id(m): "processed" for m in stream[:7] + other},
        id(stream[7]): "no_handler",
        **{id(m): "dead_lettered" for m in stream[8:]},
    }
    expected = [outcome_of[id(m)] for m in messages]

    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(4)
    results = ctx.Queue()
    procs = [
        ctx.Process(target=deliver_all, args=(database_url, plain, barrier, results))
        for _ in range(4)
    ]
    for p in procs:
        p.start()
    try:
        reports = [results.get(timeout=120) for _ in procs]
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.terminate()
                p.join(timeout=5)
    errors = [err for _pid, _seen, err in reports if err]
    assert not errors, errors[0]
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]

    # Per message: exactly one process did the work, the three others saw a duplicate.
    for i in range(len(messages)):
        statuses = Counter(seen[i] for _pid, seen, _err in reports)
        if expected[i] == "dead_lettered":
            assert statuses == Counter({("dead_lettered", True): 1, ("dead_lettered", False): 3})
        else:
            assert statuses[("duplicate", False)] == 3, (i, statuses)
            [(status, _wrote)] = [k for k in statuses.elements() if k[0] != "duplicate"]
            assert status == expected[i], (i, statuses)

    assert db.counts() == {
        "inbox": 8 + 7,
        "domain_events": 7 + 7,
        "event_outbox": 15 + 12,
        "async_tasks": 5 + 5,
        "dead_letters": 3,
    }
    # The same effects as one process delivering the stream once, id for id.
    sequential_url = fresh_database_url()
    engine = make_engine(sequential_url)
    try:
        agent = make_agent(SqlStore(engine))
        for raw in messages:
            agent.process_message(raw)
        assert table_contents(db) == table_contents(Db(engine))
    finally:
        engine.dispose()
        fresh_database_url.drop(sequential_url)
    assert {t["status"] for t in db.tasks()} == {"COMPLETED"}
    assert {t["version"] for t in db.tasks()} == {2}


# -- failures inside the transaction -----------------------------------------------------------


@pytest.mark.parametrize("failing", ["mark_processed", "after_fact"])
def test_failure_mid_transaction_leaves_nothing_and_retry_succeeds_once(
    store: SqlStore,
    db: Db,
    wire: type[Wire],
    monkeypatch: pytest.MonkeyPatch,
    failing: str,
) -> None:
    agent = make_agent(store)
    s, c = "session-" + wire.new_id(), wire.new_id()
    cmd = wire.command("Character.Request", s, c, {"name": "Aria"})
    facts_written: list[bool] = []
    original_fact = SqlTransaction.insert_fact_with_outbox
    failing_method = "insert_fact_with_outbox" if failing == "after_fact" else failing
    original = getattr(SqlTransaction, failing_method)

    def insert_fact(self: SqlTransaction, *args: Any) -> tuple[bool, bool]:
        new, wrote = original_fact(self, *args)
        facts_written.append(new)
        if failing == "after_fact":
            raise RuntimeError(f"injected failure in {failing}")
        return new, wrote

    def boom(self: SqlTransaction, *args: Any, **kwargs: Any) -> Any:
        assert facts_written == [True], "the failure must come after the fact was inserted"
        raise RuntimeError(f"injected failure in {failing}")

    with monkeypatch.context() as patch:
        patch.setattr(SqlTransaction, "insert_fact_with_outbox", insert_fact)
        if failing != "after_fact":
            patch.setattr(SqlTransaction, failing, boom)
        with pytest.raises(RuntimeError, match=f"injected failure in {failing}"):
            agent.process_message(cmd)
    assert facts_written == [True]
    assert db.counts() == EMPTY_COUNTS
    assert getattr(SqlTransaction, failing_method) is original

    out = agent.process_message(cmd)
    assert out.status is Status.PROCESSED
    assert out.fact_types == ["Genesis.Session.Character.Requested"]
    assert agent.process_message(cmd).status is Status.DUPLICATE
    assert db.counts() == {
        "inbox": 1,
        "domain_events": 1,
        "event_outbox": 2,
        "async_tasks": 1,
        "dead_letters": 0,
    }


def test_failure_after_completion_rolls_the_completion_back(
    store: SqlStore, db: Db, wire: type[Wire], monkeypatch: pytest.MonkeyPatch
) -> None:
    agent = make_agent(store)
    s, c = "session-" + wire.new_id(), wire.new_id()
    agent.process_message(wire.command("Character.Request", s, c, {"name": "Aria"}))
    before = table_contents(db)
    result = wire.capability("Character.Design.Generated", s, c, name="Aria")

    def boom(self: SqlTransaction, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError("injected")

    with monkeypatch.context() as patch:
        patch.setattr(SqlTransaction, "mark_processed", boom)
        with pytest.raises(RuntimeError, match="injected"):
            agent.process_message(result)
    assert table_contents(db) == before
    assert [(t["status"], t["version"]) for t in db.tasks()] == [("PENDING", 1)]

    out = agent.process_message(result)
    assert out.status is Status.PROCESSED
    assert len(out.completed_task_ids) == 1
    assert [(t["status"], t["version"]) for t in db.tasks()] == [
        ("COMPLETED", 2),
        ("PENDING", 1),
    ]


# -- capability dispatch failure: the fact commits, the failure is a dead letter ---------------


def _fail_create_task(self: SqlTransaction, *args: Any) -> tuple[bool, bool]:
    raise RuntimeError("task table unavailable")


def _refuse_capability_rows(db: Db) -> None:
    """A real failure inside the statement that writes the task and its message: the database
    refuses the capability outbox row, after the task row went in."""
    db.exec(
        "CREATE FUNCTION refuse_capability() RETURNS trigger LANGUAGE plpgsql AS"
        " $$ BEGIN RAISE EXCEPTION 'task table unavailable'; END $$"
    )
    db.exec(
        "CREATE TRIGGER refuse_capability BEFORE INSERT ON event_outbox FOR EACH ROW"
        " WHEN (NEW.kind = 'capability') EXECUTE FUNCTION refuse_capability()"
    )


@pytest.mark.parametrize("where", ["create_task", "capability_outbox"])
def test_capability_dispatch_failure_keeps_fact_and_dead_letters(
    store: SqlStore,
    db: Db,
    wire: type[Wire],
    monkeypatch: pytest.MonkeyPatch,
    where: str,
) -> None:
    agent = make_agent(store)
    s, c = "session-" + wire.new_id(), wire.new_id()
    cmd = wire.command("Character.Request", s, c, {"name": "Aria"})
    e1 = wire.message_id(cmd)
    with monkeypatch.context() as patch:
        if where == "create_task":
            patch.setattr(SqlTransaction, "create_task_with_outbox", _fail_create_task)
        else:
            _refuse_capability_rows(db)
        out = agent.process_message(cmd)

    assert out.status is Status.PROCESSED
    assert out.fact_types == ["Genesis.Session.Character.Requested"]
    assert out.message_ids == []  # no capability message reported as dispatched
    assert out.dispatch_failed is True
    assert out.wrote_outbox is True
    dl_id = inbox_dead_letter_id(DOMAIN_TOPIC, e1, "capability_dispatch_failed")
    [stored] = db.all("SELECT reason FROM dead_letters")
    reason = stored["reason"]
    assert reason.startswith(f"dispatching {CHAR_REQ} failed: ")
    assert "task table unavailable" in reason
    assert db.all(
        "SELECT id, category, reason, session_id, message_id, value, status FROM dead_letters"
    ) == [
        {
            "id": dl_id,
            "category": "capability_dispatch_failed",
            "reason": reason,
            "session_id": s,
            "message_id": e1,
            "value": cmd.value,
            "status": "OPEN",
        }
    ]
    assert [(f["event_type"], f["causation_id"]) for f in db.facts()] == [
        ("Genesis.Session.Character.Requested", e1)
    ]
    # The savepoint took the task (and the capability message) back; nothing half-dispatched.
    assert db.tasks() == []
    assert [(r["kind"], r["topic"], r["id"]) for r in db.outbox()] == [
        ("fact", DOMAIN_TOPIC, out.fact_ids[0]),
        ("dead_letter", DLQ_TOPIC, dl_id),
    ]
    dlq_headers = dict(db.outbox()[1]["headers"])
    assert dlq_headers["dlq_category"] == b"capability_dispatch_failed"
    assert dlq_headers["dlq_reason"].startswith(f"dispatching {CHAR_REQ} failed: ".encode())
    assert [(r["message_id"], r["outcome"], r["processed"]) for r in db.inbox()] == [
        (e1, "processed", True)
    ]


def test_rolled_back_dispatch_reports_no_task(store: SqlStore, db: Db, wire: type[Wire]) -> None:
    agent = make_agent(store)
    s, c = "session-" + wire.new_id(), wire.new_id()
    cmd = wire.command("Character.Request", s, c, {"name": "Aria"})
    _refuse_capability_rows(db)
    out = agent.process_message(cmd)
    assert db.tasks() == []
    assert out.task_ids == []


# -- optimistic locking ------------------------------------------------------------------------


def _one_pending_task(agent: MessageProcessor, wire: type[Wire]) -> tuple[str, str, str]:
    s, c = "session-" + wire.new_id(), wire.new_id()
    cmd = wire.command("Character.Request", s, c, {"name": "Aria"})
    out = agent.process_message(cmd)
    return out.task_ids[0], s, c


def test_stale_version_update_is_refused(store: SqlStore, db: Db, wire: type[Wire]) -> None:
    agent = make_agent(store)
    task_id, _s, _c = _one_pending_task(agent, wire)
    with store.transaction() as tx:
        tx.update_task_version(task_id, 1, '{"winner": true}')
    done = db.one("SELECT status, version, result FROM async_tasks WHERE id = :id", id=task_id)
    assert done == {"status": "COMPLETED", "version": 2, "result": {"winner": True}}

    with pytest.raises(StaleVersion), store.transaction() as tx:
        tx.update_task_version(task_id, 1, '{"loser": true}')
    with pytest.raises(StaleVersion), store.transaction() as tx:
        tx.update_task_version(task_id, 2, '{"loser": true}')  # right version, no longer active
    with pytest.raises(StaleVersion), store.transaction() as tx:
        tx.update_task_version("no-such-task", 1, "{}")
    assert (
        db.one("SELECT status, version, result FROM async_tasks WHERE id = :id", id=task_id) == done
    )


def test_concurrent_writers_one_wins_other_is_stale(
    store: SqlStore, engine: Engine, db: Db, wire: type[Wire]
) -> None:
    """Both read version 1; the second writer blocks on the row, then finds version 2."""
    agent = make_agent(store)
    task_id, _s, _c = _one_pending_task(agent, wire)
    second: list[BaseException | None] = []

    def late_writer() -> None:
        try:
            with store.transaction() as tx:
                tx.conn.exec_driver_sql("SET application_name = 'late-writer'")
                tx.update_task_version(task_id, 1, '{"by": "second"}')
        except BaseException as exc:
            second.append(exc)
        else:
            second.append(None)

    with store.transaction() as tx:
        tx.update_task_version(task_id, 1, '{"by": "first"}')
        thread = threading.Thread(target=late_writer)
        thread.start()
        wait_for(
            lambda: (
                db.scalar(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'late-writer'"
                    " AND wait_event_type = 'Lock'"
                )
                == 1
            ),
            message="the second writer to wait for the row lock",
        )
    thread.join(timeout=10)
    assert len(second) == 1 and isinstance(second[0], StaleVersion), second
    assert db.one("SELECT status, version, result FROM async_tasks WHERE id = :id", id=task_id) == {
        "status": "COMPLETED",
        "version": 2,
        "result": {"by": "first"},
    }


# -- late and unmatched results ----------------------------------------------------------------


def test_late_result_after_timeout_projects_and_records(
    store: SqlStore, engine: Engine, db: Db, wire: type[Wire]
) -> None:
    agent = make_agent(store)
    task_id, s, c = _one_pending_task(agent, wire)
    db.exec(
        "UPDATE async_tasks SET deadline_at = now() - interval '1 minute' WHERE id = :id",
        id=task_id,
    )
    maintenance = Maintenance(
        PgMaintenance(engine), DOMAIN_TOPIC, lambda _s, _q: None, lambda _t: "q", 60.0, 3600.0
    )
    assert maintenance.expire_tasks() == 1
    timed_out = ids.derive(task_id, "fact", "Genesis.Session.AsyncTask.TimedOut")
    assert [f["event_id"] for f in db.facts()][-1] == timed_out

    late = wire.capability("Character.Design.Generated", s, c, name="Aria")
    g1 = wire.message_id(late)
    out = agent.process_message(late)
    assert out.status is Status.PROCESSED
    assert out.fact_types == ["Genesis.Session.Character.Proposed"]
    assert out.completed_task_ids == []
    task = db.one(
        "SELECT status, error, result, version FROM async_tasks WHERE id = :id", id=task_id
    )
    assert task == {
        "status": "FAILED",
        "error": "timeout; late result received",
        "result": {"session_id": s, "correlation_id": c, "name": "Aria"},
        "version": 3,
    }
    types = [(f["event_type"], f["causation_id"]) for f in db.facts()]
    assert types[0][0] == "Genesis.Session.Character.Requested"
    assert types[1:] == [
        ("Genesis.Session.Character.Proposed", g1),
        ("Genesis.Session.AsyncTask.TimedOut", task_id),
    ]
    # The content still goes to review: the late result is used, not dropped.
    assert out.task_ids == [cap_id(g1, REVIEW_REQ)]
    assert db.counts() == {
        "inbox": 2,
        "domain_events": 3,
        "event_outbox": 5,
        "async_tasks": 2,
        "dead_letters": 0,
    }


@pytest.mark.parametrize("correlation", ["unknown", None], ids=["unknown", "missing"])
def test_result_for_unknown_correlation_completes_nothing(
    store: SqlStore, db: Db, wire: type[Wire], correlation: str | None
) -> None:
    agent = make_agent(store)
    task_id, s, _c = _one_pending_task(agent, wire)
    cid = wire.new_id() if correlation else None
    result = wire.capability("Character.Design.Generated", s, cid, name="Stray")
    out = agent.process_message(result)
    assert out.status is Status.PROCESSED
    assert out.fact_types == ["Genesis.Session.Character.Proposed"]
    assert out.completed_task_ids == []
    fact = db.facts()[-1]
    assert (fact["causation_id"], fact["correlation_id"], fact["payload"]) == (
        wire.message_id(result),
        cid,
        {"session_id": s, "content": {"name": "Stray"}},
    )
    assert db.one("SELECT status, version, result FROM async_tasks WHERE id = :id", id=task_id) == {
        "status": "PENDING",
        "version": 1,
        "result": None,
    }


def test_unknown_capability_type_is_no_handler(store: SqlStore, db: Db, wire: type[Wire]) -> None:
    agent = make_agent(store)
    s = "session-" + wire.new_id()
    raw = wire.capability("Illustrator.Image.Generated", s, wire.new_id(), url="http://img")
    out = agent.process_message(raw)
    assert out.status is Status.NO_HANDLER
    assert (out.kind, out.message_type, out.message_id) == (
        "capability",
        "Illustrator.Image.Generated",
        wire.message_id(raw),
    )
    assert [(r["message_id"], r["processed"], r["outcome"]) for r in db.inbox()] == [
        (wire.message_id(raw), True, "no_handler")
    ]
    assert db.counts() == {**EMPTY_COUNTS, "inbox": 1}
    assert agent.process_message(raw).status is Status.DUPLICATE
    assert db.counts() == {**EMPTY_COUNTS, "inbox": 1}


# -- dead letters ------------------------------------------------------------------------------

ORIG_HEADERS = (("x-origin", b"api-gateway"), ("x-binary", b"\xff\x00"))
PARSED_COMMANDS = {"missing_command_type", "unknown_command"}


def _invalid_inputs() -> list[tuple[str, str, bytes]]:
    s = "session-dl"
    cmd_no_type = {
        "event_id": "e-1",
        "event_type": "Genesis.Session.Command.Received",
        "aggregate_id": s,
        "payload": {"payload": {}},
    }
    unknown_cmd = {**cmd_no_type, "payload": {"command_type": "Character.Summon"}}
    return [
        ("not_json", DOMAIN_TOPIC, b"{not json"),
        ("not_utf8", DOMAIN_TOPIC, b'{"a": "\xff\xfe"}'),
        ("not_object", CAPABILITY_TOPIC, b"[1, 2, 3]"),
        ("unknown_shape", CAPABILITY_TOPIC, b'{"hello": "world"}'),
        ("missing_command_type", DOMAIN_TOPIC, orjson.dumps(cmd_no_type)),
        ("unknown_command", DOMAIN_TOPIC, orjson.dumps(unknown_cmd)),
        ("missing_field", CAPABILITY_TOPIC, b'{"id": "m-1", "type": "X.Done", "data": {}}'),
        (
            "nul_character",
            CAPABILITY_TOPIC,
            b'{"id": "m", "type": "T", "data": {"session_id": "a\\u0000"}}',
        ),
    ]


@pytest.mark.parametrize(
    ("category", "topic", "value"), _invalid_inputs(), ids=[c for c, _t, _v in _invalid_inputs()]
)
def test_invalid_input_becomes_dead_letter_and_dlq_message(
    store: SqlStore, db: Db, category: str, topic: str, value: bytes
) -> None:
    agent = make_agent(store)
    raw = RawMessage(topic, value, b"the-key", ORIG_HEADERS, 3, 42)
    out = agent.process_message(raw)
    dl_id = raw_dead_letter_id(raw)
    assert (out.status, out.category, out.dead_letter_id, out.wrote_outbox) == (
        Status.DEAD_LETTERED,
        category,
        dl_id,
        True,
    )
    assert out.reason
    letter = db.one(
        "SELECT id, category, reason, source_topic, source_partition, source_offset, key, value,"
        " session_id, message_id, status FROM dead_letters"
    )
    assert letter == {
        "id": dl_id,
        "category": category,
        "reason": out.reason,
        "source_topic": topic,
        "source_partition": 3,
        "source_offset": 42,
        "key": b"the-key",
        "value": value,
        # A command whose envelope parsed keeps its ids; unparseable input has none.
        "session_id": "session-dl" if category in PARSED_COMMANDS else None,
        "message_id": "e-1" if category in PARSED_COMMANDS else None,
        "status": "OPEN",
    }
    [row] = db.outbox()
    assert {k: row[k] for k in ("id", "kind", "topic", "message_type", "key", "payload")} == {
        "id": dl_id,
        "kind": "dead_letter",
        "topic": DLQ_TOPIC,
        "message_type": "DeadLetter",
        "key": b"the-key",
        "payload": value,
    }
    assert row["headers"] == [
        ("dlq_category", category.encode()),
        ("dlq_reason", out.reason.encode()),
        ("source_topic", topic.encode()),
        ("source_partition", b"3"),
        ("source_offset", b"42"),
        ("message_id", dl_id.encode()),
        ("type", b"DeadLetter"),
        ("orig.x-origin", b"api-gateway"),
        ("orig.x-binary", b"\xff\x00"),
    ]
    assert db.counts() == {**EMPTY_COUNTS, "dead_letters": 1, "event_outbox": 1}

    again = agent.process_message(raw)
    assert (again.status, again.dead_letter_id, again.wrote_outbox) == (
        Status.DEAD_LETTERED,
        dl_id,
        False,
    )
    assert db.counts() == {**EMPTY_COUNTS, "dead_letters": 1, "event_outbox": 1}


# -- the runtime path: inbox rows drained per session ------------------------------------------


def _record(store: SqlStore, agent: MessageProcessor, raw: RawMessage) -> int:
    c = agent.classify(raw)
    new = NewInbox(
        raw, c.message_id, c.kind.value, c.message_type, str(c.session_id), c.correlation_id, None
    )
    with store.transaction() as tx:
        [inbox_id] = tx.insert_inbox([new], triggered=True)
    return inbox_id


@pytest.fixture
def drain(
    redis_url: str, redis_prefix: str
) -> Iterator[Callable[[MessageProcessor, str], list[Outcome]]]:
    """A session's drain as the worker runs it (`SessionWorker` on a real Redis): the
    outcomes of the rows it processed."""
    client = make_redis(redis_url)
    state = RedisState(client, redis_prefix, lock_ttl_s=30.0, done_ttl_s=60)

    def run(agent: MessageProcessor, session_id: str) -> list[Outcome]:
        return SessionWorker(agent, state, lambda: None).drain(session_id).outcomes

    try:
        yield run
    finally:
        client.close()


def test_drain_processes_rows_in_arrival_order(
    store: SqlStore,
    db: Db,
    wire: type[Wire],
    drain: Callable[[MessageProcessor, str], list[Outcome]],
) -> None:
    agent = make_agent(store)
    s, s_early, other = ("session-" + wire.new_id() for _ in range(3))
    c, c_early, c_other = wire.new_id(), wire.new_id(), wire.new_id()
    rows = [
        wire.command("Character.Request", s, c, {"name": "Aria"}),
        wire.capability("Character.Design.Generated", s, c, name="Aria"),
        wire.capability("Review.Quality.Evaluated", s, c, target_type="character", score=9.0),
    ]
    # In this session the result arrived before its command.
    early = [
        wire.capability("Character.Design.Generated", s_early, c_early, name="Bo"),
        wire.command("Character.Request", s_early, c_early, {"name": "Bo"}),
    ]
    pending = wire.command("Character.Request", other, c_other, {"name": "Cy"})
    order = [rows[0], early[0], pending, rows[1], early[1], rows[2]]
    inbox_ids = {wire.message_id(raw): _record(store, agent, raw) for raw in order}

    outcomes = drain(agent, s)
    assert [o.message_id for o in outcomes] == [wire.message_id(r) for r in rows]
    assert [o.inbox_id for o in outcomes] == [inbox_ids[wire.message_id(r)] for r in rows]
    assert [o.status for o in outcomes] == [Status.PROCESSED] * 3
    assert [o.fact_types for o in outcomes] == [
        ["Genesis.Session.Character.Requested"],
        ["Genesis.Session.Character.Proposed"],
        ["Genesis.Session.Character.Confirmed"],
    ]
    assert outcomes[1].completed_task_ids == outcomes[0].task_ids
    assert outcomes[2].completed_task_ids == outcomes[1].task_ids
    assert drain(agent, s) == []

    early_out = drain(agent, s_early)
    assert [o.message_id for o in early_out] == [wire.message_id(r) for r in early]
    assert early_out[0].completed_task_ids == []  # nothing to complete yet
    assert db.all(
        "SELECT status, version FROM async_tasks WHERE session_id = :s ORDER BY created_at",
        s=s_early,
    ) == [{"status": "PENDING", "version": 1}, {"status": "PENDING", "version": 1}]

    by_id = {r["message_id"]: r for r in db.inbox()}
    untouched = by_id[wire.message_id(pending)]
    assert (untouched["processed"], untouched["attempts"], untouched["outcome"]) == (False, 0, None)
    for raw in [*rows, *early]:
        r = by_id[wire.message_id(raw)]
        assert (r["processed"], r["attempts"], r["outcome"]) == (True, 1, "processed")


def test_drain_dead_letters_a_row_that_keeps_failing(
    store: SqlStore,
    db: Db,
    wire: type[Wire],
    monkeypatch: pytest.MonkeyPatch,
    drain: Callable[[MessageProcessor, str], list[Outcome]],
) -> None:
    agent = make_agent(store, max_attempts=2)
    s, c = "session-" + wire.new_id(), wire.new_id()
    raw = RawMessage(
        DOMAIN_TOPIC,
        wire.command("Character.Request", s, c, {"name": "Aria"}).value,
        s.encode(),
        (("x-origin", b"api"),),
        1,
        99,
    )
    later = wire.command("Stage.Validate", s, c, {"stage": "s"})
    inbox_id = _record(store, agent, raw)
    _record(store, agent, later)
    mid = wire.message_id(raw)

    def boom(self: SqlTransaction, *args: Any) -> tuple[bool, bool]:
        raise RuntimeError("database said no")

    with monkeypatch.context() as patch:
        patch.setattr(SqlTransaction, "insert_fact_with_outbox", boom)
        for attempt in (1, 2):
            with pytest.raises(RuntimeError, match="database said no"):
                drain(agent, s)
            row = db.one("SELECT attempts, processed_at FROM inbox WHERE id = :id", id=inbox_id)
            assert row == {"attempts": attempt, "processed_at": None}
            assert db.counts() == {**EMPTY_COUNTS, "inbox": 2}
    # The third attempt gives up on the row; the row behind it is not blamed: the same drain
    # processes it normally, on its first attempt.
    outcomes = drain(agent, s)

    dl_id = inbox_dead_letter_id(DOMAIN_TOPIC, mid, "processing_failed")
    reason = "processing failed 2 times (limit 2)"
    out, next_out = outcomes
    assert (out.status, out.category, out.dead_letter_id, out.reason, out.inbox_id) == (
        Status.DEAD_LETTERED,
        "processing_failed",
        dl_id,
        reason,
        inbox_id,
    )
    assert db.one(
        "SELECT attempts, outcome, last_error, processed_at IS NOT NULL AS done FROM inbox"
        " WHERE id = :id",
        id=inbox_id,
    ) == {"attempts": 3, "outcome": "dead_lettered", "last_error": reason, "done": True}
    assert db.one(
        "SELECT id, category, reason, session_id, message_id, value, source_offset"
        " FROM dead_letters"
    ) == {
        "id": dl_id,
        "category": "processing_failed",
        "reason": reason,
        "session_id": s,
        "message_id": mid,
        "value": raw.value,
        "source_offset": 99,
    }
    dlq, *later_rows = db.outbox()
    assert [r["kind"] for r in later_rows] == ["fact", "capability"]
    assert (dlq["topic"], dlq["payload"], dict(dlq["headers"])["orig.x-origin"]) == (
        DLQ_TOPIC,
        raw.value,
        b"api",
    )
    assert (next_out.status, next_out.message_id) == (Status.PROCESSED, wire.message_id(later))
    assert db.one("SELECT attempts FROM inbox WHERE message_id = :m", m=wire.message_id(later)) == {
        "attempts": 1
    }
    assert db.counts() == {
        "inbox": 2,
        "domain_events": 1,
        "event_outbox": 3,
        "async_tasks": 1,
        "dead_letters": 1,
    }


def test_deadline_is_now_plus_the_configured_timeout(
    store: SqlStore, db: Db, wire: type[Wire]
) -> None:
    agent = MessageProcessor(
        store,
        ProcessorConfig(task_timeout=lambda t: 30.0 if t.startswith("Character") else 5.0),
        clock=lambda: FIXED_NOW,
    )
    task_id, _s, _c = _one_pending_task(agent, wire)
    assert db.one("SELECT deadline_at FROM async_tasks WHERE id = :id", id=task_id) == {
        "deadline_at": FIXED_NOW + timedelta(seconds=30)
    }
