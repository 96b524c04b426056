"""Parsing raw messages: every dead-letter category, correlation order, ids, classification."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from orchestrator.core.classify import Kind, classify
from orchestrator.core.command_strategies import default_registry
from orchestrator.core.errors import Category, InvalidInput
from orchestrator.core.ids import content_id
from orchestrator.core.inbound import (
    MAX_DEPTH,
    CapabilityEvent,
    DomainEvent,
    Headers,
    RawMessage,
    parse,
)
from orchestrator.core.plan import plan_command

CAP = 1_048_576
DOMAIN_TOPIC = "genesis.domain.events"
CAP_TOPIC = "genesis.capability.events"
SESSION = "9d0e1f2a-3b4c-4d5e-8f60-718293a4b5c6"


def domain_doc(**overrides: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "event_id": "evt-1",
        "event_type": "Genesis.Session.Command.Received",
        "aggregate_type": "GenesisSession",
        "aggregate_id": SESSION,
        "payload": {
            "command_type": "Character.Request",
            "payload": {"name": "Lin"},
            "user_id": "u-1",
        },
        "metadata": {"correlation_id": "corr-meta"},
        "created_at": "2024-05-01T10:00:00Z",
    }
    doc.update(overrides)
    return doc


def capability_doc(**overrides: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "id": "cap-1",
        "ts": "2024-05-01T10:00:01Z",
        "type": "Character.Design.Generated",
        "data": {"session_id": SESSION, "correlation_id": "corr-data", "name": "Lin"},
    }
    doc.update(overrides)
    return doc


def raw(
    value: bytes | dict[str, Any] | list[Any] | None,
    headers: Headers = (),
    topic: str = DOMAIN_TOPIC,
    key: bytes | None = None,
) -> RawMessage:
    if isinstance(value, dict | list):
        value = orjson.dumps(value)
    return RawMessage(topic=topic, value=value, key=key, headers=headers, partition=0, offset=7)


def category_of(message: RawMessage, max_bytes: int = CAP) -> Category:
    with pytest.raises(InvalidInput) as info:
        classify(message, default_registry(), max_bytes)
    return info.value.category


# --- every dead-letter category --------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [b"\xff\xfe{}", b'{"event_type": "\xc3("}', b'{"a": "\xed\xa0\x80"}'],
    ids=["bom-like", "truncated-sequence", "surrogate"],
)
def test_not_utf8(value: bytes) -> None:
    assert category_of(raw(value)) is Category.NOT_UTF8


@pytest.mark.parametrize(
    "value",
    [None, b"", b"   ", b"{", b"{'a': 1}", b"not json", b'{"a": 1,}', b'{"a": 1} trailing'],
    ids=["none", "empty", "blank", "open-brace", "single-quotes", "text", "trailing-comma", "tail"],
)
def test_not_json(value: bytes | None) -> None:
    assert category_of(raw(value)) is Category.NOT_JSON


@pytest.mark.parametrize(
    "value", [b"[]", b'[{"event_type": "X"}]', b"42", b"3.5", b'"a string"', b"true", b"null"]
)
def test_not_object(value: bytes) -> None:
    assert category_of(raw(value)) is Category.NOT_OBJECT


@pytest.mark.parametrize(
    "doc",
    [{}, {"id": "x", "ts": "t"}, {"eventType": "Genesis.Session.Command.Received"}],
    ids=["empty-object", "id-and-ts-only", "camel-case"],
)
def test_unknown_shape(doc: dict[str, Any]) -> None:
    assert category_of(raw(doc)) is Category.UNKNOWN_SHAPE


MISSING_CASES = [
    (field, how)
    for field in ("event_id", "event_type", "aggregate_id")
    for how in ("absent", "null", "empty", "blank")
    # Without event_type the document is not a domain event at all (see the next test).
    if (field, how) != ("event_type", "absent")
]


@pytest.mark.parametrize(("field", "how"), MISSING_CASES)
def test_domain_missing_required_field(field: str, how: str) -> None:
    doc = domain_doc()
    if how == "absent":
        del doc[field]
    else:
        doc[field] = {"null": None, "empty": "", "blank": "  "}[how]
    assert category_of(raw(doc)) is Category.MISSING_FIELD


def test_domain_without_event_type_and_capability_fields_is_unknown_shape() -> None:
    doc = domain_doc()
    del doc["event_type"]
    assert category_of(raw(doc)) is Category.UNKNOWN_SHAPE


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("event_id", 12),
        ("event_type", ["Genesis.Session.Command.Received"]),
        ("aggregate_type", 3),
        ("aggregate_id", {"id": SESSION}),
        ("payload", "not an object"),
        ("payload", [1, 2]),
        ("metadata", "corr"),
        ("created_at", 1714557600),
    ],
)
def test_domain_wrong_type(field: str, value: Any) -> None:
    assert category_of(raw(domain_doc(**{field: value}))) is Category.WRONG_TYPE


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("command_type", 7),
        ("command_type", ["Character.Request"]),
        ("payload", "x"),
        ("user_id", 1),
    ],
)
def test_command_wrong_type(field: str, value: Any) -> None:
    doc = domain_doc()
    doc["payload"][field] = value
    assert category_of(raw(doc)) is Category.WRONG_TYPE


@pytest.mark.parametrize("command_type", ["<absent>", None, "", "   "])
def test_missing_command_type(command_type: str | None) -> None:
    doc = domain_doc()
    if command_type == "<absent>":
        del doc["payload"]["command_type"]
    else:
        doc["payload"]["command_type"] = command_type
    assert category_of(raw(doc)) is Category.MISSING_COMMAND_TYPE


def test_command_without_payload_is_missing_command_type() -> None:
    doc = domain_doc()
    del doc["payload"]
    assert category_of(raw(doc)) is Category.MISSING_COMMAND_TYPE


def test_unknown_command() -> None:
    doc = domain_doc()
    doc["payload"]["command_type"] = "Character.Delete"
    with pytest.raises(InvalidInput) as info:
        classify(raw(doc), default_registry(), CAP)
    assert info.value.category is Category.UNKNOWN_COMMAND
    assert "Character.Delete" in info.value.reason


def test_command_known_only_to_the_mapping_table_is_a_command() -> None:
    doc = domain_doc()
    doc["payload"]["command_type"] = "Legacy.Request"
    classified = classify(raw(doc), default_registry(), CAP, {"Legacy.Request": "Legacy.Asked"})
    assert classified.kind is Kind.COMMAND
    assert classified.message_type == "Legacy.Request"


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda d: d.pop("type"), id="type-absent"),
        pytest.param(lambda d: d.update(type=""), id="type-empty"),
        pytest.param(lambda d: d.update(type=None), id="type-null"),
        pytest.param(lambda d: d.pop("data"), id="data-absent"),
        pytest.param(lambda d: d.update(data=None), id="data-null"),
        pytest.param(lambda d: d["data"].pop("session_id"), id="session-absent"),
        pytest.param(lambda d: d["data"].update(session_id=""), id="session-empty"),
        pytest.param(lambda d: d["data"].update(session_id="  "), id="session-blank"),
    ],
)
def test_capability_missing_required_field(change: Any) -> None:
    doc = capability_doc()
    change(doc)
    assert category_of(raw(doc, topic=CAP_TOPIC)) is Category.MISSING_FIELD


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda d: d.update(type=5), id="type"),
        pytest.param(lambda d: d.update(data=[1]), id="data-list"),
        pytest.param(lambda d: d.update(data="x"), id="data-string"),
        pytest.param(lambda d: d["data"].update(session_id=42), id="session_id"),
        pytest.param(
            lambda d: d.update(data={"aggregate_id": ["s"]}),
            id="aggregate_id",
        ),
        pytest.param(lambda d: d.update(ts=1714557600), id="ts"),
        pytest.param(lambda d: d.update(id=99), id="id"),
        pytest.param(lambda d: d.update(metadata="m"), id="metadata"),
    ],
)
def test_capability_wrong_type(change: Any) -> None:
    doc = capability_doc()
    change(doc)
    assert category_of(raw(doc, topic=CAP_TOPIC)) is Category.WRONG_TYPE


def test_too_large_and_exactly_cap_is_fine() -> None:
    value = orjson.dumps(capability_doc())
    cap = len(value)
    evt = parse(raw(value, topic=CAP_TOPIC), cap)
    assert isinstance(evt, CapabilityEvent)
    assert evt.id == "cap-1"
    assert category_of(raw(value + b" ", topic=CAP_TOPIC), cap) is Category.TOO_LARGE
    assert category_of(raw(value, topic=CAP_TOPIC), cap - 1) is Category.TOO_LARGE


def test_too_large_is_decided_before_decoding() -> None:
    # An oversized value is too large whatever else is wrong with it.
    assert category_of(raw(b"\xff" * 20), 10) is Category.TOO_LARGE


@pytest.mark.parametrize("name", ["correlation_id", "correlation-id", "type", "traceparent"])
def test_bad_headers_not_utf8(name: str) -> None:
    message = raw(capability_doc(), headers=((name, b"\xff\xfe"),), topic=CAP_TOPIC)
    assert category_of(message) is Category.BAD_HEADERS


def test_bad_headers_duplicate_correlation_with_different_values() -> None:
    headers = (("correlation_id", b"corr-a"), ("correlation_id", b"corr-b"))
    assert category_of(raw(domain_doc(), headers=headers)) is Category.BAD_HEADERS


def test_duplicate_correlation_header_with_same_value_is_fine() -> None:
    headers = (("correlation_id", b"corr-a"), ("correlation_id", b"corr-a"))
    classified = classify(raw(domain_doc(), headers=headers), default_registry(), CAP)
    assert classified.kind is Kind.COMMAND
    assert classified.correlation_id == "corr-a"


def test_headers_we_do_not_read_may_hold_any_bytes() -> None:
    headers = (("x-binary", b"\xff\x00\xfe"), ("x-binary", b"other"), ("correlation_id", None))
    classified = classify(raw(domain_doc(), headers=headers), default_registry(), CAP)
    assert classified.kind is Kind.COMMAND
    assert classified.correlation_id == "corr-meta"


@pytest.mark.parametrize(
    "value",
    [
        b'{"type": "T", "data": {"session_id": "s", "text": "a\\u0000b"}}',
        b'{"event_type": "Genesis.X", "payload": {"list": ["ok", "\\u0000"]}}',
    ],
    ids=["in-value", "in-list-value"],
)
def test_nul_character_in_value(value: bytes) -> None:
    assert category_of(raw(value)) is Category.NUL_CHARACTER


def test_nul_character_in_key() -> None:
    value = b'{"type": "T", "data": {"session_id": "s", "k\\u0000": 1}}'
    assert category_of(raw(value)) is Category.NUL_CHARACTER


def nested(depth: int) -> bytes:
    """A capability event whose data holds `depth` nested lists."""
    inner = b"[" * depth + b"]" * depth
    return b'{"type": "T", "data": {"session_id": "s", "deep": ' + inner + b"}}"


def test_moderate_nesting_is_fine() -> None:
    evt = parse(raw(nested(MAX_DEPTH // 2), topic=CAP_TOPIC), CAP)
    assert isinstance(evt, CapabilityEvent)
    assert evt.session_id == "s"


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 200, 1000])
def test_too_deep(depth: int) -> None:
    assert category_of(raw(nested(depth))) is Category.TOO_DEEP


@pytest.mark.parametrize("depth", [1100, 5000])
def test_too_deep_beyond_the_json_parser_limit(depth: int) -> None:
    assert category_of(raw(nested(depth))) is Category.TOO_DEEP


def test_invalid_input_message_names_category_and_reason() -> None:
    with pytest.raises(InvalidInput) as info:
        parse(raw(b"[]"), CAP)
    assert info.value.category is Category.NOT_OBJECT
    assert str(info.value) == f"not_object: {info.value.reason}"
    assert info.value.reason == "JSON list is not an object"


# --- correlation id order --------------------------------------------------------------------


def domain_with_all_correlations() -> dict[str, Any]:
    return domain_doc(correlation_id="corr-body", metadata={"correlation_id": "corr-meta"})


@pytest.mark.parametrize("name", ["correlation_id", "correlation-id"])
def test_domain_header_beats_metadata_and_body(name: str) -> None:
    headers = ((name, b"corr-header"),)
    evt = parse(raw(domain_with_all_correlations(), headers=headers), CAP)
    assert isinstance(evt, DomainEvent)
    assert evt.correlation_id == "corr-header"


def test_domain_underscore_header_beats_dash_header() -> None:
    headers = (("correlation-id", b"corr-dash"), ("correlation_id", b"corr-underscore"))
    evt = parse(raw(domain_with_all_correlations(), headers=headers), CAP)
    assert isinstance(evt, DomainEvent)
    assert evt.correlation_id == "corr-underscore"


def test_domain_metadata_beats_body() -> None:
    evt = parse(raw(domain_with_all_correlations()), CAP)
    assert isinstance(evt, DomainEvent)
    assert evt.correlation_id == "corr-meta"


def test_domain_body_when_nothing_else() -> None:
    doc = domain_doc(correlation_id="corr-body", metadata={})
    evt = parse(raw(doc), CAP)
    assert isinstance(evt, DomainEvent)
    assert evt.correlation_id == "corr-body"


def test_domain_empty_header_falls_through() -> None:
    headers = (("correlation_id", b""),)
    evt = parse(raw(domain_with_all_correlations(), headers=headers), CAP)
    assert isinstance(evt, DomainEvent)
    assert evt.correlation_id == "corr-meta"


def test_domain_without_any_correlation() -> None:
    doc = domain_doc()
    del doc["metadata"]
    evt = parse(raw(doc), CAP)
    assert isinstance(evt, DomainEvent)
    assert evt.correlation_id is None
    assert evt.metadata == {}


@pytest.mark.parametrize("name", ["correlation_id", "correlation-id"])
def test_capability_header_beats_data(name: str) -> None:
    evt = parse(raw(capability_doc(), headers=((name, b"corr-header"),), topic=CAP_TOPIC), CAP)
    assert isinstance(evt, CapabilityEvent)
    assert evt.correlation_id == "corr-header"


def test_capability_data_correlation_without_header() -> None:
    evt = parse(raw(capability_doc(), topic=CAP_TOPIC), CAP)
    assert isinstance(evt, CapabilityEvent)
    assert evt.correlation_id == "corr-data"


# --- capability envelope details -------------------------------------------------------------


def test_domain_event_fields() -> None:
    headers = (("traceparent", b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),)
    evt = parse(raw(domain_doc(), headers=headers), CAP)
    assert evt == DomainEvent(
        event_id="evt-1",
        event_type="Genesis.Session.Command.Received",
        aggregate_type="GenesisSession",
        aggregate_id=SESSION,
        payload={
            "command_type": "Character.Request",
            "payload": {"name": "Lin"},
            "user_id": "u-1",
        },
        metadata={"correlation_id": "corr-meta"},
        created_at="2024-05-01T10:00:00Z",
        correlation_id="corr-meta",
        traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    )
    assert evt.is_command is True
    assert evt.scope_prefix == "Genesis"
    assert evt.scope_type == "GENESIS"
    assert evt.session_id == SESSION
    assert evt.message_id == "evt-1"


def test_capability_type_from_header() -> None:
    doc = capability_doc()
    del doc["type"]
    evt = parse(raw(doc, headers=(("type", b"Theme.Generated"),), topic=CAP_TOPIC), CAP)
    assert isinstance(evt, CapabilityEvent)
    assert evt.type == "Theme.Generated"


def test_capability_body_type_beats_header() -> None:
    headers = (("type", b"Theme.Generated"),)
    evt = parse(raw(capability_doc(), headers=headers, topic=CAP_TOPIC), CAP)
    assert isinstance(evt, CapabilityEvent)
    assert evt.type == "Character.Design.Generated"


def test_capability_session_from_aggregate_id() -> None:
    doc = capability_doc(data={"aggregate_id": SESSION, "x": 1})
    evt = parse(raw(doc, topic=CAP_TOPIC), CAP)
    assert isinstance(evt, CapabilityEvent)
    assert evt.session_id == SESSION
    assert evt.data == {"aggregate_id": SESSION, "x": 1}


def test_capability_fields() -> None:
    evt = parse(raw(capability_doc(), topic=CAP_TOPIC), CAP)
    assert evt == CapabilityEvent(
        id="cap-1",
        type="Character.Design.Generated",
        ts="2024-05-01T10:00:01Z",
        data={"session_id": SESSION, "correlation_id": "corr-data", "name": "Lin"},
        session_id=SESSION,
        correlation_id="corr-data",
        traceparent=None,
    )
    assert evt.message_id == "cap-1"


def test_capability_without_id_gets_a_stable_content_id() -> None:
    doc = capability_doc()
    del doc["id"]
    value = orjson.dumps(doc)
    key = SESSION.encode()

    first = parse(raw(value, topic=CAP_TOPIC, key=key), CAP)
    again = parse(raw(value, topic=CAP_TOPIC, key=key), CAP)
    other_value = parse(raw(value + b" ", topic=CAP_TOPIC, key=key), CAP)
    other_key = parse(raw(value, topic=CAP_TOPIC, key=b"other"), CAP)
    other_topic = parse(raw(value, topic="elsewhere", key=key), CAP)

    assert isinstance(first, CapabilityEvent)
    assert first.id == content_id(CAP_TOPIC, key, value)
    assert first.id.startswith("sha256:")
    assert len(first.id) == len("sha256:") + 64
    assert again.message_id == first.id
    assert (
        len({first.id, other_value.message_id, other_key.message_id, other_topic.message_id}) == 4
    )


def test_content_id_separates_fields() -> None:
    # Moving bytes between key and value must not collide.
    assert content_id("t", b"ab", b"c") != content_id("t", b"a", b"bc")
    assert content_id("t", None, b"x") != content_id("t", b"", b"x")  # no key is not an empty key
    assert content_id("t", b"k", b"x", (("h", b"1"),)) != content_id("t", b"k", b"x")


# --- classification --------------------------------------------------------------------------


def test_classify_command() -> None:
    classified = classify(raw(domain_doc()), default_registry(), CAP)
    assert classified.kind is Kind.COMMAND
    assert classified.message_id == "evt-1"
    assert classified.session_id == SESSION
    assert classified.message_type == "Character.Request"
    assert classified.correlation_id == "corr-meta"
    assert classified.command is not None
    assert classified.command.command_type == "Character.Request"
    assert classified.command.user_input == {"name": "Lin"}
    assert classified.command.user_id == "u-1"
    assert classified.command.session_id == SESSION


def test_classify_capability() -> None:
    classified = classify(raw(capability_doc(), topic=CAP_TOPIC), default_registry(), CAP)
    assert classified.kind is Kind.CAPABILITY
    assert classified.message_id == "cap-1"
    assert classified.session_id == SESSION
    assert classified.message_type == "Character.Design.Generated"
    assert classified.command is None


def test_our_own_fact_classifies_as_skip() -> None:
    registry = default_registry()
    command = classify(raw(domain_doc()), registry, CAP).command
    assert command is not None
    plan = plan_command(command, registry, None, "2024-05-01T10:00:02Z")
    fact = plan.facts[0]
    assert fact.event_type == "Genesis.Session.Character.Requested"

    classified = classify(raw(fact.envelope), registry, CAP)

    assert classified.kind is Kind.SKIP
    assert classified.message_id == fact.event_id
    assert classified.message_type == "Genesis.Session.Character.Requested"
    assert classified.session_id == SESSION
    assert classified.correlation_id == "corr-meta"
    assert classified.command is None


def test_non_command_domain_event_is_skipped_without_command_checks() -> None:
    # A non-command event is not inspected for command_type, so it is not a dead letter.
    doc = domain_doc(event_type="Genesis.Session.Theme.Proposed", payload={})
    classified = classify(raw(doc), default_registry(), CAP)
    assert classified.kind is Kind.SKIP
