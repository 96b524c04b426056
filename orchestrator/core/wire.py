"""Builders for every message the orchestrator writes: capability requests, facts, wire bytes.

Pure functions. Strategy and handler results are plain dicts (the source's shape, with `_topic`
and `_key` routing fields); `capability_envelope` and `fact_envelope` turn them into the wire
contract of architecture.md.
"""

from __future__ import annotations

from typing import Any

from orchestrator.core.catalogue import QUALITY_REVIEW_REQUEST, REVIEW_TOPIC_BASE, task_topic

ROUTING_FIELDS = frozenset({"_topic", "_key"})
DATA_ROUTING_FIELDS = frozenset({"session_id", "correlation_id", "aggregate_id", "causation_id"})


def default_topic(scope_prefix: str, message_type: str) -> str:
    """Topic of a capability message that names none: its type's first segment as the base."""
    return task_topic(scope_prefix, message_type.split(".", 1)[0].lower())


def capability_request(
    message_type: str, *, session_id: str, topic: str, **fields: Any
) -> dict[str, Any]:
    """A capability message in the source's dict shape, routed to `topic`, keyed by session."""
    return {
        "type": message_type,
        "session_id": session_id,
        **fields,
        "_topic": topic,
        "_key": session_id,
    }


def review_request(
    session_id: str, target_type: str, content: Any, scope_prefix: str = "Genesis"
) -> dict[str, Any]:
    return capability_request(
        QUALITY_REVIEW_REQUEST,
        session_id=session_id,
        topic=task_topic(scope_prefix, REVIEW_TOPIC_BASE),
        target_type=target_type,
        input={"content": content},
    )


def result_content(data: dict[str, Any]) -> dict[str, Any]:
    """A capability result's content: its data minus the routing fields."""
    return {k: v for k, v in data.items() if k not in DATA_ROUTING_FIELDS}


def fact_type(scope_prefix: str, action: str) -> str:
    """`Genesis.Session.Character.Requested` for `Genesis` + `Character.Requested`."""
    return f"{scope_prefix}.Session.{action}"


def scope_prefix_of(scope_type: str) -> str:
    """`GENESIS` -> `Genesis` (the envelope prefix of a scope type)."""
    return scope_type[:1].upper() + scope_type[1:].lower() if scope_type else "Genesis"


def fact_envelope(
    *,
    event_id: str,
    event_type: str,
    scope_prefix: str,
    session_id: str,
    payload: dict[str, Any],
    correlation_id: str | None,
    causation_id: str | None,
    created_at: str,
) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "event_type": event_type,
        "aggregate_type": f"{scope_prefix}Session",
        "aggregate_id": session_id,
        "payload": payload,
        "metadata": {"correlation_id": correlation_id, "causation_id": causation_id},
        "created_at": created_at,
    }


def capability_envelope(
    *, message_id: str, message: dict[str, Any], correlation_id: str | None, ts: str
) -> dict[str, Any]:
    """`{id, ts, type, data}`: every non-routing field of the dict goes into `data`."""
    data = {k: v for k, v in message.items() if k not in ROUTING_FIELDS and k != "type"}
    data["correlation_id"] = correlation_id
    return {"id": message_id, "ts": ts, "type": message["type"], "data": data}


def standard_headers(
    *,
    message_id: str,
    message_type: str,
    correlation_id: str | None,
    causation_id: str | None,
    traceparent: str | None,
) -> list[tuple[str, str]]:
    headers = [
        ("message_id", message_id),
        ("correlation_id", correlation_id or ""),
        ("causation_id", causation_id or ""),
        ("type", message_type),
    ]
    if traceparent:
        headers.append(("traceparent", traceparent))
    return headers
