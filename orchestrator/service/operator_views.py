"""What the operator commands show: plain records whose `as_dict()` is the commands' JSON.

Stable keys, ISO-8601 UTC timestamps and durations in milliseconds (`*_ms`), so scripts can rely
on the documents; the store port fills the records and the use cases assemble them.
"""

from __future__ import annotations

import base64
import dataclasses
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from orchestrator.core.clock import iso
from orchestrator.core.errors import OrchestratorError
from orchestrator.core.inbound import RawMessage


class OperationRefused(OrchestratorError):
    """An operator action that cannot apply: unknown id, or a row in another state."""


# -- JSON ------------------------------------------------------------------------------------


def to_json(value: Any) -> Any:
    """Dataclasses, datetimes and containers -> JSON-ready values (timestamps as ISO-8601 UTC)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: to_json(getattr(value, f.name))
            for f in dataclasses.fields(value)
            if f.metadata.get("json", True)
        }
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    return value


class AsDict:
    """`as_dict()`: the record as its JSON document."""

    __slots__ = ()

    def as_dict(self) -> dict[str, Any]:
        return dict(to_json(self))


def ms_between(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return round((end - start).total_seconds() * 1000, 3)


def blob(data: bytes | None) -> tuple[str | None, str | None]:
    """Bytes for display: `(text, "utf-8")` when they decode, else `(base64, "base64")`."""
    if data is None:
        return None, None
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return base64.b64encode(data).decode(), "base64"


# -- a session's story -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TimelineEntry(AsDict):
    """One event of a session's story. `kind`: inbox | fact | task | outbox | dead_letter."""

    at: datetime
    kind: str
    type: str
    id: str
    details: dict[str, Any]


@dataclass(frozen=True, slots=True)
class InboxEntry:
    """An inbox row as the trace shows it."""

    id: int
    topic: str
    message_id: str
    kind: str
    message_type: str
    correlation_id: str | None
    partition: int | None
    offset: int | None
    attempts: int
    outcome: str | None
    last_error: str | None
    received_at: datetime
    triggered_at: datetime | None
    processed_at: datetime | None


@dataclass(frozen=True, slots=True)
class FactEntry:
    event_id: str
    event_type: str
    correlation_id: str | None
    causation_id: str | None
    payload: Any
    created_at: datetime


@dataclass(frozen=True, slots=True)
class SessionRecords:
    """Everything recorded for one session, read in one transaction."""

    inbox: list[InboxEntry]
    facts: list[FactEntry]
    tasks: list[TaskRow]
    outbox: list[OutboxRow]
    dead_letters: list[DeadLetterRow]


# -- tasks and the outbox --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TaskRow(AsDict):
    id: str
    task_type: str
    status: str
    session_id: str
    correlation_id: str | None
    causation_id: str
    created_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    deadline_at: datetime | None
    duration_ms: float | None  # created -> completed (or failed); null while active
    age_ms: float  # created -> now
    error: str | None


@dataclass(frozen=True, slots=True)
class OutboxRow(AsDict):
    id: str
    seq: int
    kind: str
    message_type: str
    topic: str
    key: str | None
    session_id: str | None
    correlation_id: str | None
    status: str
    attempts: int
    created_at: datetime
    next_attempt_at: datetime
    claimed_until: datetime | None
    sent_at: datetime | None
    lag_ms: float  # created -> sent, or created -> now while not sent
    last_error: str | None


@dataclass(frozen=True, slots=True)
class OutboxSummary:
    pending: int
    oldest_pending_age_ms: float | None
    failed: int
    sent: int


@dataclass(frozen=True, slots=True)
class OutboxListing(AsDict):
    summary: OutboxSummary
    rows: list[OutboxRow]


# -- dead letters ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeadLetterRow(AsDict):
    id: str
    category: str
    reason: str
    status: str
    source_topic: str
    source_partition: int | None
    source_offset: int | None
    session_id: str | None
    message_id: str | None
    created_at: datetime
    resolved_at: datetime | None
    resolution: str | None


@dataclass(frozen=True, slots=True)
class HeaderView:
    name: str
    value: str | None
    encoding: str | None  # utf-8 | base64 | null (no value)


@dataclass(frozen=True, slots=True)
class DeadLetterDetail(DeadLetterRow):
    """A dead letter with its original message: bytes shown as text when UTF-8, else base64."""

    key: str | None
    key_encoding: str | None
    value: str | None
    value_encoding: str | None
    value_size: int
    headers: list[HeaderView]
    raw: RawMessage = field(repr=False, compare=False, metadata={"json": False})


def dead_letter_detail(row: DeadLetterRow, raw: RawMessage) -> DeadLetterDetail:
    """The dead letter with `raw`, its original message, ready to show and to replay."""
    key_text, key_encoding = blob(raw.key)
    value_text, value_encoding = blob(raw.value)
    headers = [HeaderView(name, *blob(value)) for name, value in raw.headers]
    return DeadLetterDetail(
        **{f.name: getattr(row, f.name) for f in dataclasses.fields(DeadLetterRow)},
        key=key_text,
        key_encoding=key_encoding,
        value=value_text,
        value_encoding=value_encoding,
        value_size=len(raw.value) if raw.value is not None else 0,
        headers=headers,
        raw=raw,
    )


@dataclass(frozen=True, slots=True)
class InboxState:
    """Where a dead-lettered message stands in the inbox (when it got that far)."""

    id: int
    outcome: str | None
    processed: bool


@dataclass(frozen=True, slots=True)
class ReplayResult(AsDict):
    """What one replay did. `replayed` is True when the message went through the pipeline;
    otherwise it is still a dead letter (`category`, `reason`) and nothing was lost."""

    dead_letter_id: str
    replayed: bool
    status: str  # the dead letter's status afterwards: REPLAYED | OPEN
    outcome: str  # processed | no_handler | ignored | duplicate | dead_lettered | error
    category: str | None
    reason: str | None
    fact_ids: list[str]
    task_ids: list[str]
    dead_letter_ids: list[str]  # dead letters the replay wrote (or found) again
    resolution: str | None
