"""The operator queries and actions (`orchestrator.service.operator_queries`) on a real
PostgreSQL filled by the message processor itself: trace, tasks, outbox and its re-drive,
dead letters (show, replay, discard) and the pipeline figures."""

from __future__ import annotations

import base64
from datetime import datetime, timedelta
from typing import Any

import orjson
import pytest
from sqlalchemy import Engine

from orchestrator.adapters.postgres.operator_store import PgOperatorStore
from orchestrator.adapters.postgres.store import SqlStore
from orchestrator.core import ids
from orchestrator.core.catalogue import task_topic
from orchestrator.core.command_strategies import (
    CommandMapping,
    CommandStrategy,
    CommandStrategyRegistry,
    default_registry,
)
from orchestrator.core.inbound import RawMessage
from orchestrator.core.records import NewInbox, Outcome, Status
from orchestrator.core.wire import capability_request
from orchestrator.service.operator_queries import Operations
from orchestrator.service.operator_stats import Percentiles
from orchestrator.service.operator_views import (
    DeadLetterRow,
    HeaderView,
    OperationRefused,
    OutboxSummary,
    TimelineEntry,
    ms_between,
)
from orchestrator.service.process_message import MessageProcessor, ProcessorConfig
from tests.support.db import (
    CAPABILITY_TOPIC,
    DLQ_TOPIC,
    DOMAIN_TOPIC,
    FIXED_NOW,
    Db,
    Wire,
)

CHAR_REQ = "Character.Design.GenerationRequested"
REVIEW_REQ = "Review.Quality.EvaluationRequested"


def fact_id(cause: str, event_type: str) -> str:
    return ids.derive(cause, "fact", event_type)


def cap_id(cause: str, msg_type: str) -> str:
    return ids.derive(cause, "capability", msg_type)


def make_agent(store: SqlStore, **config: Any) -> MessageProcessor:
    return MessageProcessor(store, ProcessorConfig(**config), clock=lambda: FIXED_NOW)


@pytest.fixture
def ops(engine: Engine) -> Operations:
    return Operations(PgOperatorStore(engine))


def deliver(agent: MessageProcessor, raw: RawMessage) -> Outcome:
    outcome = agent.process_message(raw)
    assert outcome.status is Status.PROCESSED, outcome
    return outcome


def character_session(
    agent: MessageProcessor, wire: type[Wire], s: str, c: str, name: str = "Ada"
) -> dict[str, str]:
    """Character.Request -> generated -> reviewed 8.0 (confirmed); the ids of every step."""
    cmd = wire.command("Character.Request", s, c, {"name": name})
    deliver(agent, cmd)
    gen = wire.capability("Character.Design.Generated", s, c, name=name)
    deliver(agent, gen)
    rev = wire.capability("Review.Quality.Evaluated", s, c, target_type="character", score=8.0)
    deliver(agent, rev)
    e, g, r = wire.message_id(cmd), wire.message_id(gen), wire.message_id(rev)
    return {
        "command": e,
        "generated": g,
        "reviewed": r,
        "gen_task": cap_id(e, CHAR_REQ),
        "review_task": cap_id(g, REVIEW_REQ),
    }


class PoemStrategy(CommandStrategy):
    """A command type the built-in registry does not know."""

    def get_aliases(self) -> set[str]:
        return {"Poem.Request"}

    def process(
        self, scope_type: str, scope_prefix: str, aggregate_id: str, payload: dict[str, Any]
    ) -> CommandMapping:
        return CommandMapping(
            "Poem.Requested",
            capability_request(
                "Writer.Poem.GenerationRequested",
                session_id=aggregate_id,
                topic=task_topic(scope_prefix, "writer"),
                input=payload.get("payload") or {},
            ),
        )


class BrokenCharacterStrategy(CommandStrategy):
    def get_aliases(self) -> set[str]:
        return {"Character.Request"}

    def process(
        self, scope_type: str, scope_prefix: str, aggregate_id: str, payload: dict[str, Any]
    ) -> CommandMapping:
        raise RuntimeError("strategy exploded")


def registry_with(*strategies: CommandStrategy) -> CommandStrategyRegistry:
    registry = default_registry()
    for strategy in strategies:
        registry.register(strategy)
    return registry


# -- trace -----------------------------------------------------------------------------------


def test_trace_tells_the_whole_session_in_time_order(
    store: SqlStore, db: Db, wire: type[Wire], ops: Operations
) -> None:
    agent = make_agent(store)
    s, c, other = "session-" + wire.new_id(), wire.new_id(), "session-" + wire.new_id()
    steps = character_session(agent, wire, s, c)
    character_session(agent, wire, other, wire.new_id())  # another session: never in the trace
    unknown_id = wire.new_id()
    unknown = wire.command("Poem.Request", s, wire.new_id(), {"topic": "sea"}, event_id=unknown_id)
    dead = agent.process_message(unknown)
    assert dead.status is Status.DEAD_LETTERED and dead.dead_letter_id is not None
    # The relay delivered the first two rows 25 ms after their creation; one row failed.
    e, g, r = steps["command"], steps["generated"], steps["reviewed"]
    t1, t2 = steps["gen_task"], steps["review_task"]
    requested = fact_id(e, "Genesis.Session.Character.Requested")
    proposed = fact_id(g, "Genesis.Session.Character.Proposed")
    confirmed = fact_id(r, "Genesis.Session.Character.Confirmed")
    db.exec(
        "UPDATE event_outbox SET status = 'SENT', attempts = 1,"
        " sent_at = created_at + interval '25 milliseconds' WHERE id IN (:a, :b)",
        a=requested,
        b=t1,
    )
    db.exec(
        "UPDATE event_outbox SET status = 'FAILED', attempts = 1, last_error = 'too large'"
        " WHERE id = :id",
        id=confirmed,
    )

    entries = ops.trace(s)

    assert [(x.kind, x.type, x.id) for x in entries] == [
        ("inbox", "Character.Request", e),
        ("fact", "Genesis.Session.Character.Requested", requested),
        ("task", CHAR_REQ, t1),
        ("outbox", "Genesis.Session.Character.Requested", requested),
        ("outbox", CHAR_REQ, t1),
        ("inbox", "Character.Design.Generated", g),
        ("fact", "Genesis.Session.Character.Proposed", proposed),
        ("task", REVIEW_REQ, t2),
        ("outbox", "Genesis.Session.Character.Proposed", proposed),
        ("outbox", REVIEW_REQ, t2),
        ("inbox", "Review.Quality.Evaluated", r),
        ("fact", "Genesis.Session.Character.Confirmed", confirmed),
        ("outbox", "Genesis.Session.Character.Confirmed", confirmed),
        ("dead_letter", "unknown_command", dead.dead_letter_id),
        ("outbox", "DeadLetter", dead.dead_letter_id),
    ]
    assert [x.at for x in entries] == sorted(x.at for x in entries)

    inbox = {row["message_id"]: row for row in db.inbox()}
    first = inbox[e]
    assert entries[0] == TimelineEntry(
        first["received_at"],
        "inbox",
        "Character.Request",
        e,
        {
            "inbox_id": first["id"],
            "message_kind": "command",
            "topic": DOMAIN_TOPIC,
            "partition": 0,
            "offset": None,
            "correlation_id": c,
            "received_at": first["received_at"],
            "processed_at": first["received_at"],  # recorded and processed in one transaction
            "processing_ms": 0.0,
            "outcome": "processed",
            "attempts": 0,
            "last_error": None,
        },
    )
    assert entries[1].details == {
        "correlation_id": c,
        "causation_id": e,
        "payload": {
            "session_id": s,
            "input": {"name": "Ada"},
            "user_id": "u-1",
            "timestamp": "2026-11-29T11:59:00Z",
        },
    }
    tasks = {t["id"]: t for t in db.tasks()}
    created = db.scalar("SELECT created_at FROM async_tasks WHERE id = :id", id=t1)
    assert entries[2].details == {
        "status": "COMPLETED",
        "correlation_id": c,
        "causation_id": e,
        "created_at": created,
        "started_at": None,
        "completed_at": tasks[t1]["completed_at"],
        "deadline_at": FIXED_NOW + timedelta(seconds=900),
        "duration_ms": ms_between(created, tasks[t1]["completed_at"]),
        "error": None,
    }
    assert entries[2].details["duration_ms"] > 0
    sent = entries[3].details
    assert (sent["status"], sent["lag_ms"], sent["attempts"]) == ("SENT", 25.0, 1)
    assert sent["sent_at"] == sent["created_at"] + timedelta(milliseconds=25)
    assert (sent["message_kind"], sent["topic"]) == ("fact", DOMAIN_TOPIC)
    assert entries[4].details["topic"] == "genesis.character.tasks"
    pending = entries[8].details
    assert (pending["status"], pending["sent_at"]) == ("PENDING", None)
    assert pending["lag_ms"] > 0  # still waiting: lag so far
    failed = entries[12].details
    assert (failed["status"], failed["last_error"]) == ("FAILED", "too large")
    assert entries[13].details == {
        "category": "unknown_command",
        "reason": "unknown command type 'Poem.Request'",
        "status": "OPEN",
        "source_topic": DOMAIN_TOPIC,
        "source_partition": 0,
        "source_offset": None,
        "message_id": unknown_id,  # the envelope parsed: its ids are kept
        "resolved_at": None,
        "resolution": None,
    }
    assert entries[14].details["topic"] == DLQ_TOPIC

    doc = [x.as_dict() for x in entries]
    assert list(doc[0]) == ["at", "kind", "type", "id", "details"]
    assert doc[0]["at"] == first["received_at"].isoformat(timespec="milliseconds").replace(
        "+00:00", "Z"
    )
    assert doc[3]["details"]["lag_ms"] == 25.0
    orjson.dumps(doc)  # plain JSON all the way down

    assert ops.trace("no-such-session") == []


# -- tasks -----------------------------------------------------------------------------------


def test_tasks_filters_and_order(
    store: SqlStore, db: Db, wire: type[Wire], ops: Operations
) -> None:
    agent = make_agent(store)
    s1, s2 = "session-" + wire.new_id(), "session-" + wire.new_id()
    one = character_session(agent, wire, s1, wire.new_id())
    stage = wire.command("Stage.Validate", s2, wire.new_id(), {"stage": "characters"})
    deliver(agent, stage)
    check = cap_id(wire.message_id(stage), "Review.Consistency.CheckRequested")
    db.exec(
        "UPDATE async_tasks SET created_at = now() - interval '1 hour' WHERE id = :id",
        id=one["gen_task"],
    )

    rows = ops.tasks()
    assert [r.id for r in rows] == [check, one["review_task"], one["gen_task"]]  # newest first
    assert [r.status for r in rows] == ["PENDING", "COMPLETED", "COMPLETED"]
    assert rows[0].duration_ms is None and rows[0].completed_at is None
    assert rows[0].age_ms >= 0
    assert rows[2].age_ms >= 3_600_000
    gen = rows[2]
    assert gen.duration_ms == ms_between(gen.created_at, gen.completed_at)
    assert (gen.task_type, gen.session_id, gen.causation_id) == (CHAR_REQ, s1, one["command"])

    assert [r.id for r in ops.tasks(session_id=s2)] == [check]
    assert [r.id for r in ops.tasks(type_prefix="Review.")] == [check, one["review_task"]]
    assert [r.id for r in ops.tasks(type_prefix="Review.Quality")] == [one["review_task"]]
    assert [r.id for r in ops.tasks(state="PENDING")] == [check]
    assert [r.id for r in ops.tasks(state="COMPLETED", session_id=s1)] == [
        one["review_task"],
        one["gen_task"],
    ]
    assert [r.id for r in ops.tasks(older_than_s=60)] == [one["gen_task"]]
    assert [r.id for r in ops.tasks(limit=1)] == [check]
    assert ops.tasks(session_id="nobody") == []
    with pytest.raises(OperationRefused, match="unknown task state 'DONE'"):
        ops.tasks(state="DONE")

    doc = rows[2].as_dict()
    assert set(doc) == {
        "id",
        "task_type",
        "status",
        "session_id",
        "correlation_id",
        "causation_id",
        "created_at",
        "started_at",
        "completed_at",
        "deadline_at",
        "duration_ms",
        "age_ms",
        "error",
    }
    assert doc["deadline_at"] == "2026-11-29T12:15:00.000Z"


# -- outbox ----------------------------------------------------------------------------------


def test_outbox_listing_summary_and_retry(
    store: SqlStore, db: Db, wire: type[Wire], ops: Operations
) -> None:
    agent = make_agent(store)
    s = "session-" + wire.new_id()
    steps = character_session(agent, wire, s, wire.new_id())
    rows = db.outbox()
    assert len(rows) == 5
    first, cap, proposed, review, confirmed = (r["id"] for r in rows)
    db.exec(
        "UPDATE event_outbox SET status = 'SENT', attempts = 1,"
        " sent_at = created_at + interval '40 milliseconds' WHERE id IN (:a, :b)",
        a=first,
        b=cap,
    )
    db.exec(
        "UPDATE event_outbox SET status = 'FAILED', attempts = 1,"
        " last_error = 'Broker: Message size too large' WHERE id IN (:a, :b)",
        a=proposed,
        b=review,
    )
    db.exec(
        "UPDATE event_outbox SET created_at = now() - interval '30 seconds' WHERE id = :id",
        id=confirmed,
    )

    listing = ops.outbox()
    assert [r.id for r in listing.rows] == [confirmed, review, proposed, cap, first]
    assert listing.summary.pending == 1 and listing.summary.failed == 2
    assert listing.summary.sent == 2
    assert listing.summary.oldest_pending_age_ms is not None
    assert 30_000 <= listing.summary.oldest_pending_age_ms < 60_000
    sent = listing.rows[-1]
    assert (sent.status, sent.lag_ms, sent.attempts, sent.kind) == ("SENT", 40.0, 1, "fact")
    assert sent.key == s and sent.session_id == s and sent.topic == DOMAIN_TOPIC
    assert listing.rows[0].lag_ms >= 30_000  # pending: lag so far
    assert [r.id for r in ops.outbox(status="FAILED").rows] == [review, proposed]
    assert ops.outbox(status="FAILED").rows[0].last_error == "Broker: Message size too large"
    assert [r.id for r in ops.outbox(status="SENT", limit=1).rows] == [cap]
    with pytest.raises(OperationRefused, match="unknown outbox status"):
        ops.outbox(status="LOST")

    doc = listing.as_dict()
    assert list(doc) == ["summary", "rows"]
    assert list(doc["summary"]) == ["pending", "oldest_pending_age_ms", "failed", "sent"]
    assert doc["rows"][-1]["sent_at"].endswith("Z")

    # retry one FAILED row: PENDING, due now, no lease; the others refuse with a clear reason
    db.exec(
        "UPDATE event_outbox SET next_attempt_at = now() + interval '1 hour',"
        " claimed_until = now() + interval '1 minute' WHERE id = :id",
        id=proposed,
    )
    assert ops.retry_outbox(proposed) == 1
    row = db.one(
        "SELECT status, next_attempt_at <= now() AS due, claimed_until FROM event_outbox"
        " WHERE id = :id",
        id=proposed,
    )
    assert row == {"status": "PENDING", "due": True, "claimed_until": None}
    with pytest.raises(OperationRefused, match=f"outbox row {first} is SENT, not FAILED"):
        ops.retry_outbox(first)
    with pytest.raises(OperationRefused, match=f"outbox row {proposed} is PENDING, not FAILED"):
        ops.retry_outbox(proposed)
    with pytest.raises(OperationRefused, match="no outbox row nope"):
        ops.retry_outbox("nope")
    summary = ops.outbox_summary()
    assert (summary.pending, summary.failed, summary.sent) == (2, 1, 2)

    assert ops.retry_failed_outbox() == [review]
    assert ops.retry_failed_outbox() == []
    assert db.all("SELECT status, count(*) AS n FROM event_outbox GROUP BY 1 ORDER BY 1") == [
        {"status": "PENDING", "n": 3},
        {"status": "SENT", "n": 2},
    ]
    del steps


# -- dead letters: list, show, discard -------------------------------------------------------


def test_dead_letters_list_show_and_discard(
    store: SqlStore, db: Db, wire: type[Wire], ops: Operations
) -> None:
    agent = make_agent(store)
    s = "session-" + wire.new_id()
    unknown_id = wire.new_id()
    unknown = wire.command("Poem.Request", s, wire.new_id(), {"topic": "sea"}, event_id=unknown_id)
    d1 = agent.process_message(unknown).dead_letter_id
    binary = RawMessage(
        CAPABILITY_TOPIC,
        b"\xff\xfe not utf-8",
        b"\x00\xffkey",
        (("correlation_id", b"c-1"), ("blob", b"\xff\x00"), ("empty", None)),
        3,
        42,
    )
    out = agent.process_message(binary)
    d2 = out.dead_letter_id
    assert d1 and d2 and out.category == "not_utf8"

    rows = ops.dead_letters()
    assert [r.id for r in rows] == [d2, d1]
    created = {r.id: r.created_at for r in rows}
    assert rows[1] == DeadLetterRow(
        d1,
        "unknown_command",
        "unknown command type 'Poem.Request'",
        "OPEN",
        DOMAIN_TOPIC,
        0,
        None,
        s,
        unknown_id,
        created[d1],
        None,
        None,
    )
    assert [r.id for r in ops.dead_letters(category="not_utf8")] == [d2]
    assert [r.id for r in ops.dead_letters(status="OPEN", limit=1)] == [d2]
    assert ops.dead_letters(status="DISCARDED") == []

    shown = ops.dead_letter(d2)
    assert shown.value == base64.b64encode(b"\xff\xfe not utf-8").decode()
    assert (shown.value_encoding, shown.value_size) == ("base64", 12)
    assert (shown.key, shown.key_encoding) == (base64.b64encode(b"\x00\xffkey").decode(), "base64")
    assert shown.headers == [
        HeaderView("correlation_id", "c-1", "utf-8"),
        HeaderView("blob", base64.b64encode(b"\xff\x00").decode(), "base64"),
        HeaderView("empty", None, None),
    ]
    assert (shown.source_topic, shown.source_partition, shown.source_offset) == (
        CAPABILITY_TOPIC,
        3,
        42,
    )
    assert shown.reason == "invalid UTF-8 at byte 0"
    text_doc = ops.dead_letter(d1).as_dict()
    assert text_doc["value"] == unknown.value.decode()  # type: ignore[union-attr]
    assert (text_doc["value_encoding"], text_doc["key"], text_doc["key_encoding"]) == (
        "utf-8",
        s,
        "utf-8",
    )
    assert "raw" not in text_doc and text_doc["headers"] == []
    assert text_doc["category"] == "unknown_command" and text_doc["status"] == "OPEN"
    with pytest.raises(OperationRefused, match="no dead letter nope"):
        ops.dead_letter("nope")

    with pytest.raises(OperationRefused, match="a reason is required"):
        ops.discard_dead_letter(d2, "   ")
    assert db.scalar("SELECT status FROM dead_letters WHERE id = :id", id=d2) == "OPEN"
    ops.discard_dead_letter(d2, " garbage from a broken producer ")
    row = db.one(
        "SELECT status, resolution, resolved_at IS NOT NULL AS resolved FROM dead_letters"
        " WHERE id = :id",
        id=d2,
    )
    assert row == {
        "status": "DISCARDED",
        "resolution": "garbage from a broken producer",
        "resolved": True,
    }
    with pytest.raises(OperationRefused, match=f"dead letter {d2} is DISCARDED, not OPEN"):
        ops.discard_dead_letter(d2, "again")
    with pytest.raises(OperationRefused, match=f"dead letter {d2} is DISCARDED, not OPEN"):
        ops.replay_dead_letter(d2, agent)
    with pytest.raises(OperationRefused, match="no dead letter nope"):
        ops.discard_dead_letter("nope", "why")
    assert [r.id for r in ops.dead_letters(status="DISCARDED")] == [d2]


# -- dead letters: replay --------------------------------------------------------------------


def test_replay_of_a_command_type_registered_since(
    store: SqlStore, db: Db, wire: type[Wire], ops: Operations
) -> None:
    s, c = "session-" + wire.new_id(), wire.new_id()
    poem = wire.command("Poem.Request", s, c, {"topic": "sea"})
    e = wire.message_id(poem)
    dl = make_agent(store).process_message(poem).dead_letter_id
    assert dl is not None and db.counts()["inbox"] == 0

    fixed = MessageProcessor(store, commands=registry_with(PoemStrategy()), clock=lambda: FIXED_NOW)
    result = ops.replay_dead_letter(dl, fixed)

    fact = fact_id(e, "Genesis.Session.Poem.Requested")
    task = cap_id(e, "Writer.Poem.GenerationRequested")
    assert result.replayed and result.status == "REPLAYED" and result.outcome == "processed"
    assert (result.fact_ids, result.task_ids, result.dead_letter_ids) == ([fact], [task], [])
    assert result.resolution == "replayed: processed (1 fact(s), 1 task(s))"
    assert (result.category, result.reason) == (None, None)
    row = db.one(
        "SELECT status, resolution, resolved_at IS NOT NULL AS resolved FROM dead_letters"
        " WHERE id = :id",
        id=dl,
    )
    assert row == {"status": "REPLAYED", "resolution": result.resolution, "resolved": True}
    assert [(r["message_id"], r["outcome"]) for r in db.inbox()] == [(e, "processed")]
    assert [(f["event_type"], f["causation_id"]) for f in db.facts()] == [
        ("Genesis.Session.Poem.Requested", e)
    ]
    assert [(t["id"], t["status"]) for t in db.tasks()] == [(task, "PENDING")]
    assert [(o["kind"], o["id"]) for o in db.outbox()] == [
        ("dead_letter", dl),
        ("fact", fact),
        ("capability", task),
    ]
    with pytest.raises(OperationRefused, match="is REPLAYED, not OPEN"):
        ops.replay_dead_letter(dl, fixed)
    assert [x.kind for x in ops.trace(s)] == [
        "dead_letter",
        "outbox",
        "inbox",
        "fact",
        "task",
        "outbox",
        "outbox",
    ]


def test_replay_after_the_size_cap_was_raised_completes_the_flow(
    store: SqlStore, db: Db, wire: type[Wire], ops: Operations
) -> None:
    s, c = "session-" + wire.new_id(), wire.new_id()
    big = wire.command("Character.Request", s, c, {"name": "Ada", "notes": "x" * 400})
    e = wire.message_id(big)
    out = make_agent(store, max_message_bytes=300).process_message(big)
    assert (out.status, out.category) == (Status.DEAD_LETTERED, "too_large")
    assert out.dead_letter_id is not None

    agent = make_agent(store)  # the cap is back at its default
    result = ops.replay_dead_letter(out.dead_letter_id, agent)
    assert result.replayed and result.task_ids == [cap_id(e, CHAR_REQ)]

    deliver(agent, wire.capability("Character.Design.Generated", s, c, name="Ada"))
    deliver(
        agent, wire.capability("Review.Quality.Evaluated", s, c, target_type="character", score=9)
    )
    assert [f["event_type"].removeprefix("Genesis.Session.") for f in db.facts()] == [
        "Character.Requested",
        "Character.Proposed",
        "Character.Confirmed",
    ]
    assert {t["status"] for t in db.tasks()} == {"COMPLETED"}
    assert ops.dead_letters(status="OPEN") == []


def test_replay_of_a_message_still_bad_stays_open_and_is_not_lost(
    store: SqlStore, db: Db, wire: type[Wire], ops: Operations
) -> None:
    agent = make_agent(store)
    s = "session-" + wire.new_id()
    poem = wire.command("Poem.Request", s, wire.new_id(), {"topic": "sea"})
    dl = agent.process_message(poem).dead_letter_id
    assert dl is not None
    before = db.counts()

    result = ops.replay_dead_letter(dl, agent)

    assert not result.replayed
    assert (result.status, result.outcome) == ("OPEN", "dead_lettered")
    assert (result.category, result.reason) == (
        "unknown_command",
        "unknown command type 'Poem.Request'",
    )
    assert (result.dead_letter_ids, result.fact_ids, result.resolution) == ([dl], [], None)
    assert db.counts() == before  # the same row, no second DLQ message, nothing else
    row = db.one("SELECT status, resolution, value FROM dead_letters WHERE id = :id", id=dl)
    assert row == {"status": "OPEN", "resolution": None, "value": poem.value}

    # Still bad, now for another reason (too large for this agent): same row, current reason.
    small = make_agent(store, max_message_bytes=50)
    again = ops.replay_dead_letter(dl, small)
    assert (again.replayed, again.status, again.category) == (False, "OPEN", "too_large")
    assert db.one("SELECT category, reason FROM dead_letters WHERE id = :id", id=dl) == {
        "category": "too_large",
        "reason": f"{len(poem.value or b'')} bytes exceeds the cap of 50",
    }
    assert db.counts() == before


def test_replay_of_a_row_dead_lettered_while_processing(
    store: SqlStore, db: Db, wire: type[Wire], ops: Operations
) -> None:
    """A message that kept failing in the workers (processing_failed): its inbox row is opened
    again; a replay that still raises leaves everything as it was; once fixed it goes through."""
    agent = make_agent(store)
    s, c = "session-" + wire.new_id(), wire.new_id()
    raw = wire.command("Character.Request", s, c, {"name": "Ada"})
    e = wire.message_id(raw)
    with store.transaction() as tx:
        tx.insert_inbox(
            [NewInbox(raw, e, "command", "Character.Request", s, c, None)], triggered=True
        )
    db.exec("UPDATE inbox SET attempts = 5")
    row = store.begin_next(s)
    assert row is not None
    out = agent.process_row(row)
    assert (out.status, out.category) == (Status.DEAD_LETTERED, "processing_failed")
    dl = out.dead_letter_id
    assert dl is not None

    broken = MessageProcessor(store, commands=registry_with(BrokenCharacterStrategy()))
    failed = ops.replay_dead_letter(dl, broken)
    assert not failed.replayed
    assert (failed.status, failed.outcome, failed.category) == (
        "OPEN",
        "error",
        "processing_failed",
    )
    assert failed.reason == "replay raised RuntimeError: strategy exploded"
    inbox = db.one("SELECT outcome, last_error, processed_at IS NOT NULL AS done FROM inbox")
    assert inbox == {"outcome": "dead_lettered", "last_error": failed.reason, "done": True}
    assert db.scalar("SELECT status FROM dead_letters WHERE id = :id", id=dl) == "OPEN"
    assert db.counts()["domain_events"] == 0

    result = ops.replay_dead_letter(dl, agent)
    assert result.replayed and result.outcome == "processed"
    assert result.fact_ids == [fact_id(e, "Genesis.Session.Character.Requested")]
    assert db.one("SELECT outcome, attempts, last_error FROM inbox") == {
        "outcome": "processed",
        "attempts": 0,
        "last_error": None,
    }
    assert db.counts() == {
        "inbox": 1,
        "domain_events": 1,
        "event_outbox": 3,  # the DLQ message, the fact, the capability request
        "async_tasks": 1,
        "dead_letters": 1,
    }


def test_replay_of_a_failed_dispatch(
    store: SqlStore, db: Db, wire: type[Wire], ops: Operations
) -> None:
    """AsyncTask creation failed (the fact committed): a replay while the cause persists is
    still a dead letter; once it is gone the task and its message are created, nothing twice."""
    agent = make_agent(store)
    s, c = "session-" + wire.new_id(), wire.new_id()
    db.exec(
        "CREATE FUNCTION refuse_tasks() RETURNS trigger LANGUAGE plpgsql AS"
        " $$ BEGIN RAISE EXCEPTION 'tasks are refused'; END $$"
    )
    db.exec(
        "CREATE TRIGGER refuse BEFORE INSERT ON async_tasks"
        " FOR EACH ROW EXECUTE FUNCTION refuse_tasks()"
    )
    raw = wire.command("Character.Request", s, c, {"name": "Ada"})
    e = wire.message_id(raw)
    out = deliver(agent, raw)
    assert out.task_ids == [] and len(out.fact_ids) == 1
    [dl] = ops.dead_letters()
    assert dl.category == "capability_dispatch_failed" and dl.message_id == e
    assert ops.stats(60).task_creation_success_rate == 0.0

    still = ops.replay_dead_letter(dl.id, agent)
    assert (still.replayed, still.status, still.category) == (
        False,
        "OPEN",
        "capability_dispatch_failed",
    )
    assert still.reason is not None and "tasks are refused" in still.reason
    assert still.dead_letter_ids == [dl.id]
    assert db.one("SELECT outcome, processed_at IS NOT NULL AS done FROM inbox") == {
        "outcome": "processed",
        "done": True,
    }

    db.exec("DROP TRIGGER refuse ON async_tasks")
    done = ops.replay_dead_letter(dl.id, agent)
    assert done.replayed and done.task_ids == [cap_id(e, CHAR_REQ)]
    assert db.counts() == {
        "inbox": 1,
        "domain_events": 1,
        "event_outbox": 3,
        "async_tasks": 1,
        "dead_letters": 1,
    }
    stats = ops.stats(60)
    assert (stats.tasks_created, stats.task_dispatch_failures) == (1, 1)
    assert stats.task_creation_success_rate == 0.5


def test_replay_all_of_a_category(
    store: SqlStore, db: Db, wire: type[Wire], ops: Operations
) -> None:
    agent = make_agent(store)
    s = "session-" + wire.new_id()
    poems = [wire.command("Poem.Request", s, wire.new_id(), {"n": n}) for n in range(3)]
    dls = [agent.process_message(p).dead_letter_id for p in poems]
    agent.process_message(RawMessage(DOMAIN_TOPIC, b"[1, 2]", None, (), 0, 7))
    assert len(ops.open_dead_letter_ids()) == 4
    assert ops.open_dead_letter_ids("unknown_command") == dls

    fixed = MessageProcessor(store, commands=registry_with(PoemStrategy()))
    results = [
        ops.replay_dead_letter(i, fixed) for i in ops.open_dead_letter_ids("unknown_command")
    ]
    assert [r.replayed for r in results] == [True, True, True]
    assert [
        r["category"] for r in db.all("SELECT category FROM dead_letters WHERE status = 'OPEN'")
    ] == ["not_object"]
    assert db.counts()["domain_events"] == 3


# -- stats -----------------------------------------------------------------------------------


def test_stats_over_a_window(store: SqlStore, db: Db, wire: type[Wire], ops: Operations) -> None:
    empty = ops.stats(60)
    assert empty.task_creation_success_rate is None
    assert empty.end_to_end_latency == Percentiles(0, None, None, None)
    assert (empty.commands_processed, empty.commands_per_s, empty.facts_per_s) == (0, 0.0, 0.0)
    assert empty.outbox == OutboxSummary(0, None, 0, 0)

    agent = make_agent(store)
    a = character_session(agent, wire, "session-" + wire.new_id(), wire.new_id())
    b = character_session(agent, wire, "session-" + wire.new_id(), wire.new_id())
    old_s = "session-" + wire.new_id()
    old = wire.command("Character.Request", old_s, wire.new_id(), {"name": "Old"})
    deliver(agent, old)
    agent.process_message(wire.command("Poem.Request", old_s, wire.new_id()))  # a dead letter
    # A message recorded but not processed yet (the inbox backlog).
    backlog = wire.command("Character.Request", "session-" + wire.new_id(), wire.new_id())
    with store.transaction() as tx:
        tx.insert_inbox(
            [
                NewInbox(
                    backlog,
                    wire.message_id(backlog),
                    "command",
                    "Character.Request",
                    "session-backlog",
                    None,
                    None,
                )
            ],
            triggered=True,
        )
    db.exec(
        "UPDATE inbox SET received_at = now() - interval '12 seconds' WHERE processed_at IS NULL"
    )

    # Exact timings: the command of `a` was received at T; its generation task completed 1 s
    # later, the review task (caused by a capability result) took 0.5 s. `b`: 3 s and 0.5 s.
    base: datetime = db.scalar("SELECT now() - interval '20 seconds'")

    def timing(steps: dict[str, str], received: float, gen_done: float) -> None:
        db.exec(
            "UPDATE inbox SET received_at = :t WHERE message_id = :id",
            t=base + timedelta(seconds=received),
            id=steps["command"],
        )
        db.exec(
            "UPDATE async_tasks SET created_at = :c, completed_at = :d WHERE id = :id",
            c=base + timedelta(seconds=received),
            d=base + timedelta(seconds=gen_done),
            id=steps["gen_task"],
        )
        db.exec(
            "UPDATE async_tasks SET created_at = :c, completed_at = :d WHERE id = :id",
            c=base + timedelta(seconds=gen_done),
            d=base + timedelta(seconds=gen_done + 0.5),
            id=steps["review_task"],
        )

    timing(a, 0, 1)
    timing(b, 2, 5)
    # The third session's command was processed two hours ago (outside the window); its task
    # timed out just now.
    old_id = wire.message_id(old)
    db.exec(
        "UPDATE inbox SET received_at = now() - interval '2 hours',"
        " processed_at = now() - interval '2 hours' WHERE message_id = :id",
        id=old_id,
    )
    db.exec(
        "UPDATE domain_events SET created_at = now() - interval '2 hours' WHERE causation_id = :id",
        id=old_id,
    )
    db.exec(
        "UPDATE async_tasks SET created_at = now() - interval '2 hours', status = 'FAILED',"
        " error = 'timeout', completed_at = now() WHERE causation_id = :id",
        id=old_id,
    )
    # Outbox: everything sent but one FAILED row and two PENDING ones, the oldest 30 s old.
    db.exec("UPDATE event_outbox SET status = 'SENT', sent_at = now()")
    outbox = db.outbox()
    db.exec(
        "UPDATE event_outbox SET status = 'FAILED', sent_at = NULL WHERE id = :id",
        id=outbox[0]["id"],
    )
    db.exec(
        "UPDATE event_outbox SET status = 'PENDING', sent_at = NULL,"
        " created_at = now() - interval '30 seconds' WHERE id = :id",
        id=outbox[1]["id"],
    )
    db.exec(
        "UPDATE event_outbox SET status = 'PENDING', sent_at = NULL WHERE id = :id",
        id=outbox[2]["id"],
    )

    st = ops.stats(60)

    assert st.window_s == 60.0
    assert (st.commands_processed, st.commands_per_s) == (2, round(2 / 60, 6))
    assert (st.messages_processed, st.messages_per_s) == (6, 0.1)
    assert (st.facts_emitted, st.facts_per_s) == (6, 0.1)
    assert (st.tasks_created, st.task_dispatch_failures, st.task_creation_success_rate) == (
        4,
        0,
        1.0,
    )
    # end to end: [1000, 3000] ms; every task: [500, 500, 1000, 3000] ms (linear interpolation)
    assert st.end_to_end_latency == Percentiles(2, 2000.0, 2900.0, 2980.0)
    assert st.task_latency == Percentiles(4, 750.0, 2700.0, 2940.0)
    assert st.errors.dead_letters == {"unknown_command": 1}
    assert st.errors.tasks_failed == {"timeout": 1}
    assert st.errors.outbox_failed == 1
    assert (st.outbox.pending, st.outbox.failed) == (2, 1)
    assert st.outbox.sent == len(outbox) - 3
    assert st.outbox.oldest_pending_age_ms is not None
    assert 30_000 <= st.outbox.oldest_pending_age_ms < 60_000
    assert st.inbox.unprocessed == 1
    assert st.inbox.oldest_age_ms is not None and 12_000 <= st.inbox.oldest_age_ms < 40_000

    wide = ops.stats(3 * 3600)
    assert (wide.commands_processed, wide.facts_emitted, wide.tasks_created) == (3, 7, 5)
    assert wide.task_creation_success_rate == 1.0

    doc = st.as_dict()
    assert list(doc) == [
        "window_s",
        "at",
        "commands_processed",
        "commands_per_s",
        "messages_processed",
        "messages_per_s",
        "facts_emitted",
        "facts_per_s",
        "tasks_created",
        "task_dispatch_failures",
        "task_creation_success_rate",
        "end_to_end_latency",
        "task_latency",
        "errors",
        "outbox",
        "inbox",
    ]
    assert doc["end_to_end_latency"] == {
        "count": 2,
        "p50_ms": 2000.0,
        "p95_ms": 2900.0,
        "p99_ms": 2980.0,
    }
    assert doc["at"].endswith("Z")
    with pytest.raises(OperationRefused, match="positive"):
        ops.stats(0)
