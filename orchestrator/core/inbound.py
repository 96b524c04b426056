"""Parsing raw Kafka messages into the two input shapes of the source design.

Pure: bytes and headers in, a typed envelope out, or `InvalidInput` with its dead-letter
category. Which well-formed inputs are merely skipped (non-command domain events) is decided by
the caller (`classify`), not here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from orchestrator.core.errors import Category, InvalidInput
from orchestrator.core.ids import content_id

Headers = tuple[tuple[str, bytes | None], ...]
MAX_DEPTH = 64
COMMAND_SUFFIX = "Command.Received"
CORRELATION_HEADERS = ("correlation_id", "correlation-id")
_TEXT_HEADERS = (*CORRELATION_HEADERS, "type", "traceparent", "causation_id", "message_id")


@dataclass(frozen=True, slots=True)
class RawMessage:
    """One message as read from Kafka (or replayed from the inbox / dead-letter store)."""

    topic: str
    value: bytes | None
    key: bytes | None = None
    headers: Headers = ()
    partition: int | None = None
    offset: int | None = None


@dataclass(frozen=True, slots=True)
class DomainEvent:
    """Domain bus envelope: `{event_id, event_type, aggregate_type, aggregate_id, payload, ...}`."""

    event_id: str
    event_type: str
    aggregate_type: str
    aggregate_id: str
    payload: dict[str, Any]
    metadata: dict[str, Any]
    created_at: str | None
    correlation_id: str | None
    traceparent: str | None = None

    @property
    def is_command(self) -> bool:
        return self.event_type.endswith(COMMAND_SUFFIX)

    @property
    def scope_prefix(self) -> str:
        return self.event_type.split(".", 1)[0]

    @property
    def scope_type(self) -> str:
        return self.scope_prefix.upper()

    @property
    def session_id(self) -> str:
        return self.aggregate_id

    @property
    def message_id(self) -> str:
        return self.event_id


@dataclass(frozen=True, slots=True)
class Command:
    """The command carried by a `*.Command.Received` domain event."""

    event: DomainEvent
    command_type: str
    user_input: dict[str, Any]
    user_id: str | None

    @property
    def session_id(self) -> str:
        return self.event.aggregate_id


@dataclass(frozen=True, slots=True)
class CapabilityEvent:
    """Agent bus envelope: `{id, ts, type, data: {...}}`."""

    id: str
    type: str
    ts: str | None
    data: dict[str, Any]
    session_id: str
    correlation_id: str | None
    traceparent: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def message_id(self) -> str:
        return self.id


Envelope = DomainEvent | CapabilityEvent


def decode_headers(headers: Headers) -> dict[str, str]:
    """The text headers we read, decoded; undecodable or conflicting duplicates are bad input."""
    out: dict[str, str] = {}
    for name, raw in headers:
        if name not in _TEXT_HEADERS or raw is None:
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidInput(Category.BAD_HEADERS, f"header {name!r} is not UTF-8") from exc
        if name in out and out[name] != text:
            raise InvalidInput(Category.BAD_HEADERS, f"header {name!r} repeated with other values")
        out[name] = text
    return out


def load_json(value: bytes | None, max_bytes: int) -> dict[str, Any]:
    """Bytes to a JSON object, with every way that can fail mapped to a category."""
    if value is None or value == b"":
        raise InvalidInput(Category.NOT_JSON, "empty message value")
    if len(value) > max_bytes:
        raise InvalidInput(Category.TOO_LARGE, f"{len(value)} bytes exceeds the cap of {max_bytes}")
    try:
        value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInput(Category.NOT_UTF8, f"invalid UTF-8 at byte {exc.start}") from exc
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        if "recursion" in str(exc).lower() or "depth" in str(exc).lower():
            raise InvalidInput(Category.TOO_DEEP, "JSON nested too deeply") from exc
        raise InvalidInput(Category.NOT_JSON, f"invalid JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise InvalidInput(Category.NOT_OBJECT, f"JSON {type(doc).__name__} is not an object")
    _check_tree(doc)
    return doc


def _check_tree(doc: Any) -> None:
    """Refuse NUL characters (PostgreSQL text cannot hold them) and absurd nesting."""
    stack: list[tuple[Any, int]] = [(doc, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise InvalidInput(Category.TOO_DEEP, f"JSON nested deeper than {MAX_DEPTH} levels")
        if isinstance(node, dict):
            for k, v in node.items():
                if "\x00" in k:
                    raise InvalidInput(Category.NUL_CHARACTER, "NUL character in a JSON key")
                stack.append((v, depth + 1))
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)
        elif isinstance(node, str) and "\x00" in node:
            raise InvalidInput(Category.NUL_CHARACTER, "NUL character in a JSON string")


def _text(doc: dict[str, Any], name: str, *, where: str = "", required: bool = True) -> str | None:
    value = doc.get(name)
    label = f"{where}{name}"
    if value is None:
        if required:
            raise InvalidInput(Category.MISSING_FIELD, f"missing field {label!r}")
        return None
    if not isinstance(value, str):
        raise InvalidInput(Category.WRONG_TYPE, f"field {label!r} must be a string")
    if required and not value.strip():
        raise InvalidInput(Category.MISSING_FIELD, f"field {label!r} is empty")
    return value


def _obj(doc: dict[str, Any], name: str, *, where: str = "", required: bool) -> dict[str, Any]:
    value = doc.get(name)
    label = f"{where}{name}"
    if value is None:
        if required:
            raise InvalidInput(Category.MISSING_FIELD, f"missing field {label!r}")
        return {}
    if not isinstance(value, dict):
        raise InvalidInput(Category.WRONG_TYPE, f"field {label!r} must be an object")
    return value


def _correlation(headers: dict[str, str], *bodies: dict[str, Any]) -> str | None:
    """Source order: headers, then metadata, then the event body."""
    for name in CORRELATION_HEADERS:
        if headers.get(name):
            return headers[name]
    for body in bodies:
        value = body.get("correlation_id")
        if isinstance(value, str) and value:
            return value
    return None


def parse_domain_event(doc: dict[str, Any], headers: dict[str, str]) -> DomainEvent:
    metadata = _obj(doc, "metadata", required=False)
    created_at = doc.get("created_at")
    if created_at is not None and not isinstance(created_at, str):
        raise InvalidInput(Category.WRONG_TYPE, "field 'created_at' must be a string")
    return DomainEvent(
        event_id=str(_text(doc, "event_id")),
        event_type=str(_text(doc, "event_type")),
        aggregate_type=_text(doc, "aggregate_type", required=False) or "",
        aggregate_id=str(_text(doc, "aggregate_id")),
        payload=_obj(doc, "payload", required=False),
        metadata=metadata,
        created_at=created_at,
        correlation_id=_correlation(headers, metadata, doc),
        traceparent=headers.get("traceparent"),
    )


def parse_command(event: DomainEvent) -> Command:
    """The command inside a `Command.Received` event; no command_type is its own category."""
    payload = event.payload
    command_type = payload.get("command_type")
    if command_type is None or (isinstance(command_type, str) and not command_type.strip()):
        raise InvalidInput(Category.MISSING_COMMAND_TYPE, "payload.command_type is missing")
    if not isinstance(command_type, str):
        raise InvalidInput(Category.WRONG_TYPE, "field 'payload.command_type' must be a string")
    return Command(
        event=event,
        command_type=command_type,
        user_input=_obj(payload, "payload", where="payload.", required=False),
        user_id=_text(payload, "user_id", where="payload.", required=False),
    )


def parse_capability_event(
    doc: dict[str, Any], headers: dict[str, str], raw: RawMessage
) -> CapabilityEvent:
    msg_type = _text(doc, "type", required=False) or headers.get("type")
    if not msg_type:
        raise InvalidInput(Category.MISSING_FIELD, "missing field 'type' (body or header)")
    data = _obj(doc, "data", required=True)
    session_id = _text(data, "session_id", where="data.", required=False) or _text(
        data, "aggregate_id", where="data.", required=False
    )
    if not session_id or not session_id.strip():
        raise InvalidInput(Category.MISSING_FIELD, "missing field 'data.session_id'")
    ts = doc.get("ts")
    if ts is not None and not isinstance(ts, str):
        raise InvalidInput(Category.WRONG_TYPE, "field 'ts' must be a string")
    msg_id = _text(doc, "id", required=False) or content_id(raw.topic, raw.key, raw.value)
    return CapabilityEvent(
        id=msg_id,
        type=msg_type,
        ts=ts,
        data=data,
        session_id=session_id,
        correlation_id=_correlation(headers, _obj(doc, "metadata", required=False), data, doc),
        traceparent=headers.get("traceparent"),
    )


def parse(raw: RawMessage, max_bytes: int) -> Envelope:
    """Raw message to envelope. Shape: `event_type` -> domain, `type`/`data` -> capability."""
    headers = decode_headers(raw.headers)
    doc = load_json(raw.value, max_bytes)
    if "event_type" in doc:
        return parse_domain_event(doc, headers)
    if "data" in doc or "type" in doc:
        return parse_capability_event(doc, headers, raw)
    raise InvalidInput(
        Category.UNKNOWN_SHAPE, "neither a domain event (event_type) nor a capability event (type)"
    )
