"""A whole Genesis session through `MessageProcessor.process_message` on a real PostgreSQL:
the exact facts, outbox rows and AsyncTasks each wire-contract message produces."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import orjson
import pytest

from orchestrator.adapters.postgres.store import SqlStore
from orchestrator.core import ids
from orchestrator.core import trace_context as tracing
from orchestrator.core.inbound import RawMessage
from orchestrator.core.records import Outcome, Status
from orchestrator.service.process_message import MessageProcessor
from tests.support.db import (
    DOMAIN_TOPIC,
    FIXED_NOW,
    FIXED_NOW_ISO,
    Db,
    Wire,
)

CHAR_REQ = "Character.Design.GenerationRequested"
REVIEW_REQ = "Review.Quality.EvaluationRequested"
CHECK_REQ = "Review.Consistency.CheckRequested"


def fact_id(cause: str, event_type: str) -> str:
    return ids.derive(cause, "fact", event_type)


def cap_id(cause: str, msg_type: str) -> str:
    return ids.derive(cause, "capability", msg_type)


def make_agent(store: SqlStore) -> MessageProcessor:
    return MessageProcessor(store, clock=lambda: FIXED_NOW)


def expected_fact(
    cause: str, action: str, session: str, correlation: str, payload: dict[str, Any]
) -> dict[str, Any]:
    event_type = f"Genesis.Session.{action}"
    return {
        "event_id": fact_id(cause, event_type),
        "event_type": event_type,
        "aggregate_type": "GenesisSession",
        "session_id": session,
        "correlation_id": correlation,
        "causation_id": cause,
        "payload": payload,
    }


def fact_outbox(fact: dict[str, Any]) -> dict[str, Any]:
    """The outbox row a fact must produce: domain topic, keyed by session, standard headers."""
    return {
        "id": fact["event_id"],
        "kind": "fact",
        "topic": DOMAIN_TOPIC,
        "message_type": fact["event_type"],
        "key": fact["session_id"].encode(),
        "headers": [
            ("message_id", fact["event_id"].encode()),
            ("correlation_id", fact["correlation_id"].encode()),
            ("causation_id", fact["causation_id"].encode()),
            ("type", fact["event_type"].encode()),
            ("traceparent", tracing.child(None, fact["event_id"], fact["causation_id"]).encode()),
        ],
        "payload": {
            "event_id": fact["event_id"],
            "event_type": fact["event_type"],
            "aggregate_type": "GenesisSession",
            "aggregate_id": fact["session_id"],
            "payload": fact["payload"],
            "metadata": {
                "correlation_id": fact["correlation_id"],
                "causation_id": fact["causation_id"],
            },
            "created_at": FIXED_NOW_ISO,
        },
        "session_id": fact["session_id"],
        "correlation_id": fact["correlation_id"],
        "status": "PENDING",
    }


def capability_outbox(
    cause: str, msg_type: str, topic: str, session: str, correlation: str, data: dict[str, Any]
) -> dict[str, Any]:
    mid = cap_id(cause, msg_type)
    return {
        "id": mid,
        "kind": "capability",
        "topic": topic,
        "message_type": msg_type,
        "key": session.encode(),
        "headers": [
            ("message_id", mid.encode()),
            ("correlation_id", correlation.encode()),
            ("causation_id", cause.encode()),
            ("type", msg_type.encode()),
            ("traceparent", tracing.child(None, mid, cause).encode()),
        ],
        "payload": {
            "id": mid,
            "ts": FIXED_NOW_ISO,
            "type": msg_type,
            "data": {"session_id": session, **data, "correlation_id": correlation},
        },
        "session_id": session,
        "correlation_id": correlation,
        "status": "PENDING",
    }


def outbox_view(db: Db) -> list[dict[str, Any]]:
    keys = (
        "id",
        "kind",
        "topic",
        "message_type",
        "key",
        "headers",
        "payload",
        "session_id",
        "correlation_id",
        "status",
    )
    rows = []
    for r in db.outbox():
        view = {k: r[k] for k in keys}
        view["payload"] = orjson.loads(r["payload"])
        rows.append(view)
    return rows


def task_view(db: Db) -> list[dict[str, Any]]:
    keys = (
        "id",
        "task_type",
        "correlation_id",
        "session_id",
        "causation_id",
        "status",
        "input",
        "result",
        "error",
        "version",
        "deadline_at",
    )
    return [{k: t[k] for k in keys} for t in db.tasks()]


def completed_task(
    cause: str, task_type: str, session: str, correlation: str, input_data: Any, result: Any
) -> dict[str, Any]:
    return {
        "id": cap_id(cause, task_type),
        "task_type": task_type,
        "correlation_id": correlation,
        "session_id": session,
        "causation_id": cause,
        "status": "COMPLETED",
        "input": {"session_id": session, **input_data, "correlation_id": correlation},
        "result": result,
        "error": None,
        "version": 2,
        "deadline_at": FIXED_NOW + timedelta(seconds=900),
    }


def deliver(agent: MessageProcessor, raw: Any) -> Outcome:
    outcome = agent.process_message(raw)
    assert outcome.status is Status.PROCESSED, outcome
    assert outcome.dispatch_failed is False
    return outcome


def test_whole_genesis_session(store: SqlStore, db: Db, wire: type[Wire]) -> None:
    agent = make_agent(store)
    s, c1, c2 = "session-" + wire.new_id(), wire.new_id(), wire.new_id()
    gen1_content = {"name": "Aria", "traits": ["brave", "curious"]}
    gen2_content = {"name": "Aria", "traits": ["brave", "curious", "loyal"], "backstory": "b"}

    cmd = wire.command("Character.Request", s, c1, {"name": "Aria"})
    e1 = wire.message_id(cmd)
    out = deliver(agent, cmd)
    t1 = cap_id(e1, CHAR_REQ)
    assert out.fact_types == ["Genesis.Session.Character.Requested"]
    assert out.fact_ids == [fact_id(e1, "Genesis.Session.Character.Requested")]
    assert out.task_ids == [t1]
    assert out.message_ids == [t1]
    assert out.completed_task_ids == []
    assert (out.kind, out.message_type, out.message_id, out.session_id) == (
        "command",
        "Character.Request",
        e1,
        s,
    )

    gen1 = wire.capability("Character.Design.Generated", s, c1, **gen1_content)
    g1 = wire.message_id(gen1)
    out = deliver(agent, gen1)
    t2 = cap_id(g1, REVIEW_REQ)
    assert out.fact_types == ["Genesis.Session.Character.Proposed"]
    assert out.completed_task_ids == [t1]
    assert out.task_ids == [t2]

    rev1 = wire.capability("Review.Quality.Evaluated", s, c1, target_type="character", score=6.0)
    r1 = wire.message_id(rev1)
    out = deliver(agent, rev1)
    t3 = cap_id(r1, CHAR_REQ)
    assert out.fact_types == ["Genesis.Session.Character.RegenerationRequested"]
    assert out.completed_task_ids == [t2]
    assert out.task_ids == [t3]

    gen2 = wire.capability("Character.Design.Generated", s, c1, **gen2_content)
    g2 = wire.message_id(gen2)
    out = deliver(agent, gen2)
    t4 = cap_id(g2, REVIEW_REQ)
    assert out.completed_task_ids == [t3]
    assert out.task_ids == [t4]

    rev2 = wire.capability("Review.Quality.Evaluated", s, c1, target_type="character", score=8.0)
    r2 = wire.message_id(rev2)
    out = deliver(agent, rev2)
    assert out.fact_types == ["Genesis.Session.Character.Confirmed"]
    assert out.completed_task_ids == [t4]
    assert out.task_ids == []
    assert out.message_ids == []

    validate = wire.command("Stage.Validate", s, c2, {"stage": "characters"})
    e2 = wire.message_id(validate)
    out = deliver(agent, validate)
    t5 = cap_id(e2, CHECK_REQ)
    assert out.fact_types == ["Genesis.Session.Stage.ValidationRequested"]
    assert out.task_ids == [t5]

    checked = wire.capability("Review.Consistency.Checked", s, c2, ok=True, notes="consistent")
    k1 = wire.message_id(checked)
    out = deliver(agent, checked)
    assert out.fact_types == ["Genesis.Session.Stage.Confirmed"]
    assert out.completed_task_ids == [t5]
    assert out.task_ids == []

    # -- facts, in the order of their causing messages -----------------------------------------
    requested_payload = {
        "session_id": s,
        "input": {"name": "Aria"},
        "user_id": "u-1",
        "timestamp": "2026-11-29T11:59:00Z",
    }
    facts = [
        expected_fact(e1, "Character.Requested", s, c1, requested_payload),
        expected_fact(g1, "Character.Proposed", s, c1, {"session_id": s, "content": gen1_content}),
        expected_fact(
            r1,
            "Character.RegenerationRequested",
            s,
            c1,
            {"session_id": s, "score": 6.0, "attempts": 1},
        ),
        expected_fact(g2, "Character.Proposed", s, c1, {"session_id": s, "content": gen2_content}),
        expected_fact(r2, "Character.Confirmed", s, c1, {"session_id": s, "score": 8.0}),
        expected_fact(
            e2,
            "Stage.ValidationRequested",
            s,
            c2,
            {**requested_payload, "input": {"stage": "characters"}},
        ),
        expected_fact(
            k1,
            "Stage.Confirmed",
            s,
            c2,
            {"session_id": s, "passed": True, "result": {"ok": True, "notes": "consistent"}},
        ),
    ]
    assert db.facts() == facts

    # -- outbox: each fact, then the capability message its cause dispatched --------------------
    f = [fact_outbox(x) for x in facts]
    expected_outbox = [
        f[0],
        capability_outbox(
            e1, CHAR_REQ, "genesis.character.tasks", s, c1, {"input": {"name": "Aria"}}
        ),
        f[1],
        capability_outbox(
            g1,
            REVIEW_REQ,
            "genesis.review.tasks",
            s,
            c1,
            {"target_type": "character", "input": {"content": gen1_content}},
        ),
        f[2],
        capability_outbox(
            r1,
            CHAR_REQ,
            "genesis.character.tasks",
            s,
            c1,
            {"input": {"prompt_adjust": "structured", "attempt": 1}},
        ),
        f[3],
        capability_outbox(
            g2,
            REVIEW_REQ,
            "genesis.review.tasks",
            s,
            c1,
            {"target_type": "character", "input": {"content": gen2_content}},
        ),
        f[4],
        f[5],
        capability_outbox(
            e2, CHECK_REQ, "genesis.review.tasks", s, c2, {"input": {"stage": "characters"}}
        ),
        f[6],
    ]
    assert outbox_view(db) == expected_outbox

    # -- AsyncTasks: each completed by its result, once (version 1 -> 2) -----------------------
    def result(data: dict[str, Any], correlation: str) -> dict[str, Any]:
        return {"session_id": s, "correlation_id": correlation, **data}

    assert task_view(db) == [
        completed_task(e1, CHAR_REQ, s, c1, {"input": {"name": "Aria"}}, result(gen1_content, c1)),
        completed_task(
            g1,
            REVIEW_REQ,
            s,
            c1,
            {"target_type": "character", "input": {"content": gen1_content}},
            result({"target_type": "character", "score": 6.0}, c1),
        ),
        completed_task(
            r1,
            CHAR_REQ,
            s,
            c1,
            {"input": {"prompt_adjust": "structured", "attempt": 1}},
            result(gen2_content, c1),
        ),
        completed_task(
            g2,
            REVIEW_REQ,
            s,
            c1,
            {"target_type": "character", "input": {"content": gen2_content}},
            result({"target_type": "character", "score": 8.0}, c1),
        ),
        completed_task(
            e2,
            CHECK_REQ,
            s,
            c2,
            {"input": {"stage": "characters"}},
            result({"ok": True, "notes": "consistent"}, c2),
        ),
    ]
    assert [t1, t2, t3, t4, t5] == [t["id"] for t in db.tasks()]
    assert all(t["completed_at"] is not None for t in db.tasks())

    # -- inbox: every input recorded once and processed ----------------------------------------
    inbox = db.inbox()
    assert [(r["message_id"], r["kind"], r["message_type"], r["outcome"]) for r in inbox] == [
        (e1, "command", "Character.Request", "processed"),
        (g1, "capability", "Character.Design.Generated", "processed"),
        (r1, "capability", "Review.Quality.Evaluated", "processed"),
        (g2, "capability", "Character.Design.Generated", "processed"),
        (r2, "capability", "Review.Quality.Evaluated", "processed"),
        (e2, "command", "Stage.Validate", "processed"),
        (k1, "capability", "Review.Consistency.Checked", "processed"),
    ]
    assert all(r["processed"] and r["session_id"] == s for r in inbox)
    assert db.counts() == {
        "inbox": 7,
        "domain_events": 7,
        "event_outbox": 12,
        "async_tasks": 5,
        "dead_letters": 0,
    }


@pytest.mark.parametrize("reported_attempts", [None, 0], ids=["omitted", "always-zero"])
def test_review_attempts_counted_by_orchestrator(
    store: SqlStore, db: Db, wire: type[Wire], reported_attempts: int | None
) -> None:
    """A reviewer that never reports progress still ends in Character.Failed after 3 reviews."""
    agent = make_agent(store)
    s, c = "session-" + wire.new_id(), wire.new_id()
    extra = {} if reported_attempts is None else {"attempts": reported_attempts}
    deliver(agent, wire.command("Character.Request", s, c, {"name": "Bo"}))
    review_ids = []
    for n in range(3):
        deliver(agent, wire.capability("Character.Design.Generated", s, c, name=f"Bo v{n}"))
        rev = wire.capability(
            "Review.Quality.Evaluated", s, c, target_type="character", score=5.0, **extra
        )
        review_ids.append(wire.message_id(rev))
        out = deliver(agent, rev)
        if n < 2:
            assert out.fact_types == ["Genesis.Session.Character.RegenerationRequested"]
            assert len(out.task_ids) == 1
        else:
            assert out.fact_types == ["Genesis.Session.Character.Failed"]
            assert out.task_ids == []
            assert out.message_ids == []

    review_facts = [
        (f["event_type"], f["payload"], f["causation_id"])
        for f in db.facts()
        if f["causation_id"] in review_ids
    ]
    assert review_facts == [
        (
            "Genesis.Session.Character.RegenerationRequested",
            {"session_id": s, "score": 5.0, "attempts": 1},
            review_ids[0],
        ),
        (
            "Genesis.Session.Character.RegenerationRequested",
            {"session_id": s, "score": 5.0, "attempts": 2},
            review_ids[1],
        ),
        (
            "Genesis.Session.Character.Failed",
            {"session_id": s, "score": 5.0, "attempts": 3},
            review_ids[2],
        ),
    ]
    requests = [
        orjson.loads(r["payload"])["data"]["input"]
        for r in db.outbox()
        if r["message_type"] == CHAR_REQ
    ]
    assert requests == [
        {"name": "Bo"},
        {"prompt_adjust": "structured", "attempt": 1},
        {"prompt_adjust": "structured", "attempt": 2},
    ]
    assert [(t["task_type"], t["status"], t["version"]) for t in db.tasks()] == [
        (CHAR_REQ, "COMPLETED", 2),
        (REVIEW_REQ, "COMPLETED", 2),
        (CHAR_REQ, "COMPLETED", 2),
        (REVIEW_REQ, "COMPLETED", 2),
        (CHAR_REQ, "COMPLETED", 2),
        (REVIEW_REQ, "COMPLETED", 2),
    ]
    assert db.counts() == {
        "inbox": 7,
        "domain_events": 7,
        "event_outbox": 13,
        "async_tasks": 6,
        "dead_letters": 0,
    }


def test_reviewer_attempts_beyond_own_count_win(store: SqlStore, db: Db, wire: type[Wire]) -> None:
    """The larger of the reviewer's count and ours applies: a first review reporting 2 fails."""
    agent = make_agent(store)
    s, c = "session-" + wire.new_id(), wire.new_id()
    deliver(agent, wire.command("Character.Request", s, c, {"name": "Cy"}))
    deliver(agent, wire.capability("Character.Design.Generated", s, c, name="Cy"))
    out = deliver(
        agent,
        wire.capability(
            "Review.Quality.Evaluated", s, c, target_type="character", score=7.4, attempts=2
        ),
    )
    assert out.fact_types == ["Genesis.Session.Character.Failed"]
    assert db.facts()[-1]["payload"] == {"session_id": s, "score": 7.4, "attempts": 3}
    assert out.task_ids == []
    assert db.counts()["async_tasks"] == 2


def test_trace_context_flows_from_input_to_every_message(
    store: SqlStore, db: Db, wire: type[Wire]
) -> None:
    """Messages caused by an input with a `traceparent` continue its trace as child spans; an
    input without one starts a trace shared by everything it causes."""
    agent = make_agent(store)
    s, c = "session-" + wire.new_id(), wire.new_id()
    trace_id, parent_span = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    plain = wire.command("Character.Request", s, c, {"name": "Aria"})
    traced = RawMessage(
        plain.topic,
        plain.value,
        plain.key,
        (("traceparent", f"00-{trace_id}-{parent_span}-01".encode()),),
    )
    deliver(agent, traced)
    deliver(agent, wire.capability("Character.Design.Generated", s, c, name="Aria"))
    rows = db.outbox()
    parents = [dict(r["headers"])["traceparent"].decode().split("-") for r in rows]
    assert [(p[0], p[1], p[3]) for p in parents[:2]] == [("00", trace_id, "01")] * 2
    spans = [p[2] for p in parents]
    assert len(set(spans)) == 4 and parent_span not in spans
    assert all(len(p[2]) == 16 and int(p[2], 16) for p in parents)
    # The untraced result starts its own trace, shared by its fact and its review request.
    assert parents[2][1] == parents[3][1] != trace_id
    assert [r["kind"] for r in rows] == ["fact", "capability", "fact", "capability"]
