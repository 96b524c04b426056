"""The pipeline's figures over a time window (`orchestrator stats`).

The store counts what happened in the window against its own clock, the clock that wrote the
timestamps; the rates and the task-creation success rate are derived here.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from orchestrator.core.errors import Category
from orchestrator.service.operator_views import AsDict, OutboxSummary


@dataclass(frozen=True, slots=True)
class Percentiles:
    count: int
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None


@dataclass(frozen=True, slots=True)
class ErrorCounts:
    dead_letters: dict[str, int]  # created in the window, by category
    outbox_failed: int  # outbox rows created in the window that are FAILED
    tasks_failed: dict[str, int]  # AsyncTasks failed in the window, by error ("timeout", ...)


@dataclass(frozen=True, slots=True)
class InboxBacklog:
    unprocessed: int
    oldest_age_ms: float | None


@dataclass(frozen=True, slots=True)
class WindowCounts:
    """What the store counts over the window (and the outbox and inbox as they are now)."""

    at: datetime
    commands_processed: int
    messages_processed: int
    facts_emitted: int
    tasks_created: int
    errors: ErrorCounts
    end_to_end_latency: Percentiles
    task_latency: Percentiles
    outbox: OutboxSummary
    inbox: InboxBacklog


@dataclass(frozen=True, slots=True)
class Stats(AsDict):
    """The pipeline's figures over the last `window_s` seconds (up to `at`, database time).

    - commands_per_s: command inbox rows processed in the window / window (messages_per_s: all
      inbox rows, commands and capability results); facts_per_s: facts written / window.
    - task_creation_success_rate: tasks created / (tasks created + `capability_dispatch_failed`
      dead letters), both in the window; null when there was no attempt in the window.
    - end_to_end_latency: AsyncTasks completed in the window whose causing message is a command:
      completed_at - received_at of that command's inbox row. task_latency: every AsyncTask
      completed in the window, created_at -> completed_at.
    - errors, outbox (now), inbox backlog (now).
    """

    window_s: float
    at: datetime
    commands_processed: int
    commands_per_s: float
    messages_processed: int
    messages_per_s: float
    facts_emitted: int
    facts_per_s: float
    tasks_created: int
    task_dispatch_failures: int
    task_creation_success_rate: float | None
    end_to_end_latency: Percentiles
    task_latency: Percentiles
    errors: ErrorCounts
    outbox: OutboxSummary
    inbox: InboxBacklog


def figures(counts: WindowCounts, window_s: float) -> Stats:
    """The rates over the window: per second, and tasks created per creation attempt."""
    dispatch_failed = counts.errors.dead_letters.get(Category.CAPABILITY_DISPATCH_FAILED.value, 0)
    created = counts.tasks_created
    attempts = created + dispatch_failed
    return Stats(
        window_s=float(window_s),
        at=counts.at,
        commands_processed=counts.commands_processed,
        commands_per_s=round(counts.commands_processed / window_s, 6),
        messages_processed=counts.messages_processed,
        messages_per_s=round(counts.messages_processed / window_s, 6),
        facts_emitted=counts.facts_emitted,
        facts_per_s=round(counts.facts_emitted / window_s, 6),
        tasks_created=created,
        task_dispatch_failures=dispatch_failed,
        task_creation_success_rate=round(created / attempts, 6) if attempts else None,
        end_to_end_latency=counts.end_to_end_latency,
        task_latency=counts.task_latency,
        errors=counts.errors,
        outbox=counts.outbox,
        inbox=counts.inbox,
    )
