"""Planning (command -> fact + capability task) and the outbox messages built from a plan."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from orchestrator.core import ids
from orchestrator.core import trace_context as tracing
from orchestrator.core.classify import Kind, classify
from orchestrator.core.command_strategies import default_registry
from orchestrator.core.inbound import CapabilityEvent, Command, Headers, RawMessage, parse
from orchestrator.core.outbound import (
    capability_message,
    dead_letter_message,
    fact_message,
    inbox_dead_letter_id,
    raw_dead_letter_id,
)
from orchestrator.core.plan import Completion, Plan, plan_capability, plan_command
from orchestrator.core.records import DeadLetterRecord, OutboxMessage
from orchestrator.core.result_handlers import default_handler_registry

CAP = 1_048_576
NOW = "2024-05-01T12:00:00Z"
SESSION = "1e2d3c4b-5a69-4788-9a0b-c1d2e3f4a5b6"
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
# The `traceparent` of what the command of `command_doc(user_input=USER_INPUT)` produces, written
# out: the input's trace id and flags, and a span id of the produced message's own (the first
# 16 hex digits of sha256("span:" + the message's id)).
FACT_TRACEPARENT = b"00-4bf92f3577b34da6a3ce929d0e0e4736-93720b18f31daacd-01"
TASK_TRACEPARENT = b"00-4bf92f3577b34da6a3ce929d0e0e4736-a554a1f489c0fe7f-01"


def command_doc(
    *,
    event_id: str = "evt-100",
    command_type: str = "Character.Request",
    user_input: dict[str, Any] | None = None,
    user_id: str | None = "user-9",
    created_at: str | None = "2024-05-01T11:59:00Z",
    correlation_id: str | None = "corr-100",
    event_type: str = "Genesis.Session.Command.Received",
) -> dict[str, Any]:
    payload: dict[str, Any] = {"command_type": command_type}
    if user_input is not None:
        payload["payload"] = user_input
    if user_id is not None:
        payload["user_id"] = user_id
    doc: dict[str, Any] = {
        "event_id": event_id,
        "event_type": event_type,
        "aggregate_type": "GenesisSession",
        "aggregate_id": SESSION,
        "payload": payload,
        "metadata": {"correlation_id": correlation_id} if correlation_id else {},
    }
    if created_at is not None:
        doc["created_at"] = created_at
    return doc


def command_of(doc: dict[str, Any], headers: Headers = ()) -> Command:
    raw = RawMessage("genesis.domain.events", orjson.dumps(doc), SESSION.encode(), headers)
    classified = classify(raw, default_registry(), CAP)
    assert classified.kind is Kind.COMMAND
    assert classified.command is not None
    return classified.command


def plan_of(doc: dict[str, Any], headers: Headers = (), mapping: Any = None) -> Plan:
    return plan_command(command_of(doc, headers), default_registry(), mapping, NOW)


USER_INPUT = {"name": "Lin Feng", "role": "protagonist"}


# --- plan_command ----------------------------------------------------------------------------


def test_character_request_fact() -> None:
    plan = plan_of(command_doc(user_input=USER_INPUT))

    assert len(plan.facts) == 1
    fact = plan.facts[0]
    assert fact.event_type == "Genesis.Session.Character.Requested"
    assert fact.session_id == SESSION
    assert fact.correlation_id == "corr-100"
    assert fact.causation_id == "evt-100"
    assert fact.payload == {
        "session_id": SESSION,
        "input": USER_INPUT,
        "user_id": "user-9",
        "timestamp": "2024-05-01T11:59:00Z",
    }
    assert fact.event_id == ids.derive("evt-100", "fact", "Genesis.Session.Character.Requested")
    assert fact.envelope == {
        "event_id": fact.event_id,
        "event_type": "Genesis.Session.Character.Requested",
        "aggregate_type": "GenesisSession",
        "aggregate_id": SESSION,
        "payload": fact.payload,
        "metadata": {"correlation_id": "corr-100", "causation_id": "evt-100"},
        "created_at": NOW,
    }
    assert plan.notes == {"requested_action": "Character.Requested"}
    assert plan.completions == ()
    assert plan.empty is False


def test_fact_payload_omits_user_id_and_timestamp_when_absent() -> None:
    plan = plan_of(command_doc(user_input=USER_INPUT, user_id=None, created_at=None))
    assert plan.facts[0].payload == {"session_id": SESSION, "input": USER_INPUT}


def test_fact_payload_with_only_user_id() -> None:
    plan = plan_of(command_doc(user_input=None, created_at=None))
    assert plan.facts[0].payload == {"session_id": SESSION, "input": {}, "user_id": "user-9"}


def test_character_request_capability_message() -> None:
    plan = plan_of(command_doc(user_input=USER_INPUT))

    assert len(plan.messages) == 1
    msg = plan.messages[0]
    expected_id = ids.derive("evt-100", "capability", "Character.Design.GenerationRequested")
    assert msg.message_id == expected_id
    assert msg.message_type == "Character.Design.GenerationRequested"
    assert msg.topic == "genesis.character.tasks"
    assert msg.key == SESSION
    assert msg.session_id == SESSION
    assert msg.correlation_id == "corr-100"
    assert msg.causation_id == "evt-100"
    assert msg.envelope == {
        "id": expected_id,
        "ts": NOW,
        "type": "Character.Design.GenerationRequested",
        "data": {"session_id": SESSION, "correlation_id": "corr-100", "input": USER_INPUT},
    }
    assert "_topic" not in msg.envelope["data"]
    assert "_key" not in msg.envelope["data"]


def test_plan_is_deterministic() -> None:
    first = plan_of(command_doc(user_input=USER_INPUT))
    second = plan_of(command_doc(user_input=USER_INPUT))
    assert first == second
    assert first.facts[0].event_id == second.facts[0].event_id
    assert first.messages[0].message_id == second.messages[0].message_id


def test_different_event_id_gives_different_ids() -> None:
    first = plan_of(command_doc(event_id="evt-A", user_input=USER_INPUT))
    second = plan_of(command_doc(event_id="evt-B", user_input=USER_INPUT))
    assert first.facts[0].event_id != second.facts[0].event_id
    assert first.messages[0].message_id != second.messages[0].message_id
    # Within one plan the fact and the message never share an id.
    assert first.facts[0].event_id != first.messages[0].message_id


def test_correlation_defaults_to_the_command_event_id() -> None:
    plan = plan_of(command_doc(event_id="evt-lonely", correlation_id=None, user_input=USER_INPUT))
    assert plan.facts[0].correlation_id == "evt-lonely"
    assert plan.facts[0].envelope["metadata"] == {
        "correlation_id": "evt-lonely",
        "causation_id": "evt-lonely",
    }
    assert plan.messages[0].correlation_id == "evt-lonely"
    assert plan.messages[0].envelope["data"]["correlation_id"] == "evt-lonely"


def test_header_correlation_flows_into_the_plan() -> None:
    plan = plan_of(
        command_doc(user_input=USER_INPUT), headers=(("correlation-id", b"corr-header"),)
    )
    assert plan.facts[0].correlation_id == "corr-header"
    assert plan.messages[0].envelope["data"]["correlation_id"] == "corr-header"


def test_other_scope_prefix() -> None:
    plan = plan_of(
        command_doc(event_type="Novel.Session.Command.Received", command_type="WORLD_REQUEST")
    )
    assert plan.facts[0].event_type == "Novel.Session.World.Requested"
    assert plan.facts[0].envelope["aggregate_type"] == "NovelSession"
    assert plan.messages[0].topic == "novel.world.tasks"
    assert plan.messages[0].message_type == "Worldbuilder.World.GenerationRequested"


def test_mapping_override_changes_the_fact_type() -> None:
    plan = plan_of(command_doc(), mapping={"Character.Request": "Character.Asked"})
    assert plan.facts[0].event_type == "Genesis.Session.Character.Asked"
    assert plan.notes == {"requested_action": "Character.Asked"}
    assert [m.message_type for m in plan.messages] == ["Character.Design.GenerationRequested"]


def test_mapped_command_without_strategy_plans_only_the_fact() -> None:
    mapping = {"Legacy.Request": "Legacy.Requested"}
    doc = command_doc(command_type="Legacy.Request")
    raw = RawMessage("genesis.domain.events", orjson.dumps(doc))
    classified = classify(raw, default_registry(), CAP, mapping)
    assert classified.command is not None
    plan = plan_command(classified.command, default_registry(), mapping, NOW)
    assert [f.event_type for f in plan.facts] == ["Genesis.Session.Legacy.Requested"]
    assert plan.messages == ()


# --- plan_capability -------------------------------------------------------------------------


def capability_event(body: dict[str, Any], headers: Headers = ()) -> CapabilityEvent:
    raw = RawMessage("genesis.capability.events", orjson.dumps(body), SESSION.encode(), headers)
    evt = parse(raw, CAP)
    assert isinstance(evt, CapabilityEvent)
    return evt


def test_generation_result_plan() -> None:
    evt = capability_event(
        {
            "id": "cap-7",
            "type": "Character.Design.Generated",
            "data": {"session_id": SESSION, "correlation_id": "corr-100", "name": "Lin"},
        }
    )
    plan = plan_capability(evt, default_handler_registry(), 0, NOW)

    assert plan.handler == "handle_generation_completed"
    assert [f.event_type for f in plan.facts] == ["Genesis.Session.Character.Proposed"]
    assert plan.facts[0].event_id == ids.derive(
        "cap-7", "fact", "Genesis.Session.Character.Proposed"
    )
    assert plan.facts[0].causation_id == "cap-7"
    assert plan.facts[0].payload == {"session_id": SESSION, "content": {"name": "Lin"}}
    assert plan.completions == (
        Completion(
            "corr-100",
            "Character.Design.Generation",
            {"session_id": SESSION, "correlation_id": "corr-100", "name": "Lin"},
        ),
    )
    assert len(plan.messages) == 1
    review = plan.messages[0]
    assert review.topic == "genesis.review.tasks"
    assert review.key == SESSION
    assert review.message_id == ids.derive(
        "cap-7", "capability", "Review.Quality.EvaluationRequested"
    )
    assert review.envelope == {
        "id": review.message_id,
        "ts": NOW,
        "type": "Review.Quality.EvaluationRequested",
        "data": {
            "session_id": SESSION,
            "target_type": "character",
            "input": {"content": {"name": "Lin"}},
            "correlation_id": "corr-100",
        },
    }


def test_unmatched_capability_event_plans_nothing() -> None:
    evt = capability_event({"id": "cap-8", "type": "Unknown.Event", "data": {"session_id": "s"}})
    plan = plan_capability(evt, default_handler_registry(), 0, NOW)
    assert plan == Plan()
    assert plan.empty is True
    assert plan.handler is None


def test_header_correlation_fills_missing_data_correlation() -> None:
    evt = capability_event(
        {"id": "cap-9", "type": "Theme.Generated", "data": {"session_id": SESSION, "t": 1}},
        headers=(("correlation_id", b"corr-h"),),
    )
    plan = plan_capability(evt, default_handler_registry(), 0, NOW)
    assert plan.facts[0].correlation_id == "corr-h"
    assert plan.completions[0].correlation_id == "corr-h"
    assert plan.messages[0].correlation_id == "corr-h"
    # The envelope's own data is left untouched.
    assert evt.data == {"session_id": SESSION, "t": 1}


def test_header_correlation_wins_over_data_for_every_effect() -> None:
    evt = capability_event(
        {
            "id": "cap-10",
            "type": "Character.Generated",
            "data": {"session_id": SESSION, "correlation_id": "corr-body", "x": 1},
        },
        headers=(("correlation_id", b"corr-header"),),
    )
    assert evt.correlation_id == "corr-header"
    plan = plan_capability(evt, default_handler_registry(), 0, NOW)
    assert plan.messages[0].correlation_id == "corr-header"
    assert plan.facts[0].correlation_id == "corr-header"
    assert plan.completions[0].correlation_id == "corr-header"


def test_quality_review_plan_uses_handled_reviews() -> None:
    evt = capability_event(
        {
            "id": "cap-11",
            "type": "Review.Quality.Evaluated",
            "data": {
                "session_id": SESSION,
                "correlation_id": "corr-100",
                "score": 3,
                "target_type": "world",
            },
        }
    )
    plan = plan_capability(evt, default_handler_registry(), 1, NOW)
    assert [f.event_type for f in plan.facts] == ["Genesis.Session.World.RegenerationRequested"]
    assert plan.facts[0].payload == {"session_id": SESSION, "score": 3.0, "attempts": 2}
    assert [m.topic for m in plan.messages] == ["genesis.world.tasks"]
    assert plan.messages[0].envelope["data"] == {
        "session_id": SESSION,
        "input": {"prompt_adjust": "refined", "attempt": 2},
        "correlation_id": "corr-100",
    }
    assert [c.expect_task_prefix for c in plan.completions] == ["Review.Quality.Evaluation"]


# --- outgoing --------------------------------------------------------------------------------


def header_dict(message: OutboxMessage) -> dict[str, bytes | None]:
    names = [name for name, _ in message.headers]
    assert len(names) == len(set(names)), f"duplicate header names: {names}"
    return dict(message.headers)


def test_fact_outbox_message() -> None:
    fact = plan_of(command_doc(user_input=USER_INPUT)).facts[0]
    message = fact_message(fact, "genesis.domain.events", TRACEPARENT)

    assert message.id == fact.event_id
    assert message.kind == "fact"
    assert message.message_type == "Genesis.Session.Character.Requested"
    assert message.topic == "genesis.domain.events"
    assert message.key == SESSION.encode()
    assert message.session_id == SESSION
    assert message.correlation_id == "corr-100"
    assert orjson.loads(message.payload) == fact.envelope
    assert header_dict(message) == {
        "message_id": fact.event_id.encode(),
        "correlation_id": b"corr-100",
        "causation_id": b"evt-100",
        "type": b"Genesis.Session.Character.Requested",
        "traceparent": FACT_TRACEPARENT,
    }


def test_a_produced_message_is_a_child_span_of_its_input() -> None:
    """Same trace id and flags as the input; the span id derives from the produced message's
    id alone, so a re-run yields the same header."""
    span = hashlib.sha256(b"span:message-1").hexdigest()[:16]
    assert tracing.child(TRACEPARENT, "message-1") == (
        f"00-4bf92f3577b34da6a3ce929d0e0e4736-{span}-01"
    )
    sampled_off = TRACEPARENT[:-2] + "00"
    assert tracing.child(sampled_off, "message-1").endswith(f"-{span}-00")


def test_fact_outbox_message_without_traceparent_starts_a_trace() -> None:
    fact = plan_of(command_doc()).facts[0]
    message = fact_message(fact, "genesis.domain.events", None)
    assert [name for name, _ in message.headers] == [
        "message_id",
        "correlation_id",
        "causation_id",
        "type",
        "traceparent",
    ]
    header = dict(message.headers)["traceparent"]
    assert header is not None and tracing.parse(header.decode()) is not None
    again = fact_message(fact, "genesis.domain.events", None)
    assert dict(again.headers)["traceparent"] == header  # deterministic on a re-run


def test_capability_outbox_message() -> None:
    msg = plan_of(command_doc(user_input=USER_INPUT)).messages[0]
    message = capability_message(msg, TRACEPARENT)

    assert message.id == msg.message_id
    assert message.kind == "capability"
    assert message.message_type == "Character.Design.GenerationRequested"
    assert message.topic == "genesis.character.tasks"
    assert message.key == SESSION.encode()
    assert message.session_id == SESSION
    assert message.correlation_id == "corr-100"
    assert orjson.loads(message.payload) == msg.envelope
    assert header_dict(message) == {
        "message_id": msg.message_id.encode(),
        "correlation_id": b"corr-100",
        "causation_id": b"evt-100",
        "type": b"Character.Design.GenerationRequested",
        "traceparent": TASK_TRACEPARENT,
    }
    without = capability_message(msg, None)
    assert tracing.parse(header_dict(without)["traceparent"].decode()) is not None  # type: ignore[union-attr]
    assert len(without.headers) == 5


def test_published_capability_message_parses_back() -> None:
    msg = plan_of(command_doc(user_input=USER_INPUT)).messages[0]
    out = capability_message(msg, TRACEPARENT)
    evt = parse(RawMessage(out.topic, out.payload, out.key, out.headers), CAP)
    assert isinstance(evt, CapabilityEvent)
    assert evt.id == msg.message_id
    assert evt.type == "Character.Design.GenerationRequested"
    assert evt.session_id == SESSION
    assert evt.correlation_id == "corr-100"
    assert evt.traceparent == TASK_TRACEPARENT.decode()


def test_dead_letter_message() -> None:
    original = b'{"event_type": "Genesis.Session.Command.Received", "broken": '
    raw = RawMessage(
        topic="genesis.domain.events",
        value=original,
        key=b"session-key",
        headers=(("correlation_id", b"corr-x"), ("x-bin", b"\xff\x00"), ("empty", None)),
        partition=3,
        offset=1042,
    )
    record = DeadLetterRecord(
        id=raw_dead_letter_id(raw),
        category="not_json",
        reason="invalid JSON: unexpected end",
        raw=raw,
        session_id=None,
        message_id=None,
    )

    message = dead_letter_message(record, "genesis.orchestrator.dlq")

    assert message.id == record.id
    assert message.kind == "dead_letter"
    assert message.message_type == "DeadLetter"
    assert message.topic == "genesis.orchestrator.dlq"
    assert message.payload == original
    assert message.key == b"session-key"
    assert message.correlation_id is None
    assert message.headers == (
        ("dlq_category", b"not_json"),
        ("dlq_reason", b"invalid JSON: unexpected end"),
        ("source_topic", b"genesis.domain.events"),
        ("source_partition", b"3"),
        ("source_offset", b"1042"),
        ("message_id", record.id.encode()),
        ("type", b"DeadLetter"),
        ("correlation_id", b"corr-x"),  # the input's trace context (tests/unit/test_dlq_records)
        ("orig.correlation_id", b"corr-x"),
        ("orig.x-bin", b"\xff\x00"),
        ("orig.empty", None),
    )


def test_dead_letter_without_key_partition_or_offset() -> None:
    raw = RawMessage(topic="genesis.capability.events", value=b"\xff")
    record = DeadLetterRecord("dl-1", "not_utf8", "invalid UTF-8 at byte 0", raw, "s", "m")
    message = dead_letter_message(record, "dlq")
    assert message.key is None
    assert message.payload == b"\xff"
    assert message.session_id == "s"
    headers = dict(message.headers)
    assert headers["source_partition"] == b""
    assert headers["source_offset"] == b""
    assert not any(name.startswith("orig.") for name, _ in message.headers)


def test_dead_letter_ids_are_stable() -> None:
    raw = RawMessage("t", b"v", b"k", (), 0, 1)
    same_bytes_other_offset = RawMessage("t", b"v", b"k", (), 5, 99)
    assert raw_dead_letter_id(raw) == raw_dead_letter_id(same_bytes_other_offset)
    assert raw_dead_letter_id(raw) != raw_dead_letter_id(RawMessage("t", b"w", b"k"))
    assert raw_dead_letter_id(raw) != raw_dead_letter_id(RawMessage("u", b"v", b"k"))
    assert inbox_dead_letter_id("t", "m-1", "processing_failed") == inbox_dead_letter_id(
        "t", "m-1", "processing_failed"
    )
    assert inbox_dead_letter_id("t", "m-1", "processing_failed") != inbox_dead_letter_id(
        "t", "m-1", "unknown_command"
    )
