"""How Python values are stored in columns and read back.

Kafka header values are raw bytes, which JSON cannot hold: they are stored as
`[[name, base64 value or null], ...]` in a `jsonb` column, so a header survives byte for byte.
"""

from __future__ import annotations

import base64
from typing import Any

import orjson
from sqlalchemy import func

from orchestrator.core.inbound import Headers
from orchestrator.core.records import InboxRow, NewInbox


def header_pairs(headers: Headers) -> list[list[str | None]]:
    """Headers as JSON-ready pairs: the name, and the value in base64 (or None)."""
    return [[n, base64.b64encode(v).decode() if v is not None else None] for n, v in headers]


def encode_headers(headers: Headers) -> str:
    """Headers as JSON text: `[[name, base64 value or null], ...]` (values are raw bytes)."""
    return orjson.dumps(header_pairs(headers)).decode()


def decode_headers(stored: Any) -> Headers:
    """The stored pairs back as headers with byte values."""
    return tuple(
        (str(n), base64.b64decode(v) if v is not None else None) for n, v in (stored or [])
    )


def json_text(value: Any) -> str:
    """A value as JSON text for a `CAST(:param AS jsonb)` parameter."""
    return orjson.dumps(value).decode()


def inbox_values(r: NewInbox, triggered: bool) -> dict[str, Any]:
    """The column values of a new inbox row (`triggered` stamps `triggered_at` now)."""
    raw = r.raw
    return {
        "topic": raw.topic,
        "message_id": r.message_id,
        "kind": r.kind,
        "message_type": r.message_type,
        "session_id": r.session_id,
        "correlation_id": r.correlation_id,
        "traceparent": r.traceparent,
        "key": raw.key,
        "value": raw.value,
        "partition": raw.partition,
        "offset": raw.offset,
        "headers": header_pairs(raw.headers),
        "triggered_at": func.now() if triggered else None,
    }


def inbox_row(row: Any) -> InboxRow:
    """A result row selected with `sql.INBOX_COLUMNS` (and maybe `more`) as an `InboxRow`."""
    m = row._mapping
    return InboxRow(
        id=m["id"],
        topic=m["topic"],
        message_id=m["message_id"],
        kind=m["kind"],
        message_type=m["message_type"],
        session_id=m["session_id"],
        correlation_id=m["correlation_id"],
        traceparent=m["traceparent"],
        key=bytes(m["key"]) if m["key"] is not None else None,
        value=bytes(m["value"]) if m["value"] is not None else None,
        headers=decode_headers(m["headers"]),
        partition=m["partition"],
        offset=m["offset"],
        attempts=m["attempts"],
        processed=m["processed"],
        more=bool(m.get("more", True)),
    )
