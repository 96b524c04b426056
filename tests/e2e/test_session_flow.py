"""The whole Genesis session driven only by Kafka messages, through every real process."""

from __future__ import annotations

import uuid

from tests.support.harness import Stack
from tests.support.helpers import wait_for

CHARACTER_FACTS = [
    "Character.Requested",
    "Character.Proposed",
    "Character.RegenerationRequested",
    "Character.Proposed",
    "Character.Confirmed",
]


def test_whole_session_through_kafka(stack: Stack) -> None:
    stack.start_all("--scores", "6,8")
    session, corr, stage_corr = str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4())
    cmd_id = stack.send_command(session, "Character.Request", {"name": "Ada"}, corr)
    stage_id = stack.send_command(session, "Stage.Validate", {"stage": "characters"}, stage_corr)
    stack.flush()

    wait_for(
        lambda: {"Character.Confirmed", "Stage.Confirmed"} <= set(stack.facts(session)),
        timeout=60,
        message="Character.Confirmed and Stage.Confirmed",
    )
    stack.wait_idle()
    # Every row is SENT now; read the topics with a fence, so nothing published is missed.
    records = stack.read_all()

    facts = [
        r
        for r in records
        if r.topic == stack.domain_topic
        and r.type
        and r.type.startswith("Genesis.Session.")
        and "Command" not in r.type
    ]
    char_facts = [
        r.type.removeprefix("Genesis.Session.")
        for r in facts  # type: ignore[union-attr]
        if r.json()["metadata"]["correlation_id"] == corr
    ]
    assert char_facts == CHARACTER_FACTS
    stage_facts = [r.type for r in facts if r.json()["metadata"]["correlation_id"] == stage_corr]
    assert stage_facts == [
        "Genesis.Session.Stage.ValidationRequested",
        "Genesis.Session.Stage.Confirmed",
    ]
    for r in facts:
        body = r.json()
        assert r.key == session.encode()
        assert body["aggregate_id"] == session and body["aggregate_type"] == "GenesisSession"
        assert r.headers["message_id"] == body["event_id"]
        assert r.headers["type"] == body["event_type"]
        assert r.headers["correlation_id"] == body["metadata"]["correlation_id"]
        assert r.headers["causation_id"] == body["metadata"]["causation_id"]
    requested = next(r for r in facts if r.type == "Genesis.Session.Character.Requested")
    assert requested.json()["metadata"]["causation_id"] == cmd_id
    assert requested.json()["payload"] == {
        "session_id": session,
        "input": {"name": "Ada"},
        "user_id": "user-1",
        "timestamp": "2026-11-29T12:00:00Z",
    }
    validation = next(r for r in facts if r.type == "Genesis.Session.Stage.ValidationRequested")
    assert validation.json()["metadata"]["causation_id"] == stage_id

    gen_topic = stack.task_topic("character")
    gens = [r for r in records if r.topic == gen_topic]
    assert [g.json()["data"]["input"] for g in gens] == [
        {"name": "Ada"},
        {"prompt_adjust": "structured", "attempt": 1},
    ]
    for g in gens:
        assert g.key == session.encode()
        assert g.headers["type"] == "Character.Design.GenerationRequested"
        assert g.headers["message_id"] == g.json()["id"]
        assert g.json()["data"]["correlation_id"] == corr
    reviews = [r for r in records if r.topic == stack.task_topic("review")]
    assert sorted(r.type for r in reviews) == [  # type: ignore[type-var]
        "Review.Consistency.CheckRequested",
        "Review.Quality.EvaluationRequested",
        "Review.Quality.EvaluationRequested",
    ]
    assert {
        r.json()["data"]["target_type"]
        for r in reviews
        if r.type == "Review.Quality.EvaluationRequested"
    } == {"character"}

    tasks = stack.rows(
        "SELECT task_type, status FROM async_tasks WHERE session_id = :s ORDER BY created_at",
        s=session,
    )
    assert [tuple(t) for t in tasks if t[0].startswith("Character")] == [
        ("Character.Design.GenerationRequested", "COMPLETED")
    ] * 2
    assert {t[1] for t in tasks} == {"COMPLETED"} and len(tasks) == 5
