"""One session's story (`orchestrator trace`): its rows of every table as one timeline.

Rows written by one transaction share a timestamp, so ties are broken by the order in which
that transaction writes them (inbox, fact, task, dead letter, outbox), then by row order.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from orchestrator.service.operator_views import (
    DeadLetterRow,
    FactEntry,
    InboxEntry,
    OutboxRow,
    SessionRecords,
    TaskRow,
    TimelineEntry,
    ms_between,
)

KIND_RANK = {"inbox": 0, "fact": 1, "task": 2, "dead_letter": 3, "outbox": 4}


def timeline(records: SessionRecords) -> list[TimelineEntry]:
    """Every record as a timeline entry, in time order."""
    entries = list(_entries(records))
    entries.sort(key=lambda e: (e[1].at, KIND_RANK[e[1].kind], e[0], e[1].id))
    return [entry for _, entry in entries]


def _entries(records: SessionRecords) -> Iterator[tuple[int, TimelineEntry]]:
    """(tie-break within a kind, entry) for every record."""
    for i in records.inbox:
        yield i.id, TimelineEntry(i.received_at, "inbox", i.message_type, i.message_id, _inbox(i))
    for f in records.facts:
        yield 0, TimelineEntry(f.created_at, "fact", f.event_type, f.event_id, _fact(f))
    for t in records.tasks:
        yield 0, TimelineEntry(t.created_at, "task", t.task_type, t.id, _task(t))
    for o in records.outbox:
        yield o.seq, TimelineEntry(o.created_at, "outbox", o.message_type, o.id, _outbox(o))
    for d in records.dead_letters:
        yield 0, TimelineEntry(d.created_at, "dead_letter", d.category, d.id, _dead_letter(d))


def _inbox(r: InboxEntry) -> dict[str, Any]:
    return {
        "inbox_id": r.id,
        "message_kind": r.kind,
        "topic": r.topic,
        "partition": r.partition,
        "offset": r.offset,
        "correlation_id": r.correlation_id,
        "received_at": r.received_at,
        "processed_at": r.processed_at,
        "processing_ms": ms_between(r.received_at, r.processed_at),
        "outcome": r.outcome,
        "attempts": r.attempts,
        "last_error": r.last_error,
    }


def _fact(f: FactEntry) -> dict[str, Any]:
    return {
        "correlation_id": f.correlation_id,
        "causation_id": f.causation_id,
        "payload": f.payload,
    }


def _task(t: TaskRow) -> dict[str, Any]:
    return {
        "status": t.status,
        "correlation_id": t.correlation_id,
        "causation_id": t.causation_id,
        "created_at": t.created_at,
        "started_at": t.started_at,
        "completed_at": t.completed_at,
        "deadline_at": t.deadline_at,
        "duration_ms": t.duration_ms,
        "error": t.error,
    }


def _outbox(o: OutboxRow) -> dict[str, Any]:
    return {
        "message_kind": o.kind,
        "topic": o.topic,
        "status": o.status,
        "attempts": o.attempts,
        "created_at": o.created_at,
        "sent_at": o.sent_at,
        "lag_ms": o.lag_ms,
        "last_error": o.last_error,
    }


def _dead_letter(d: DeadLetterRow) -> dict[str, Any]:
    return {
        "category": d.category,
        "reason": d.reason,
        "status": d.status,
        "source_topic": d.source_topic,
        "source_partition": d.source_partition,
        "source_offset": d.source_offset,
        "message_id": d.message_id,
        "resolved_at": d.resolved_at,
        "resolution": d.resolution,
    }
