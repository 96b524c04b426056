"""Operator queries and actions: what the `orchestrator` operator commands show and do.

The story of one session (`trace`), AsyncTasks, the outbox and its re-drive, dead letters with
replay and discard, and the pipeline's figures over a time window (`stats`), all on the
`OperatorStore` port. Arguments are checked here, so every store gets the same refusals: a
refused action (unknown id, wrong state, bad filter) raises `OperationRefused`; connection
trouble surfaces as `TransientError`.
"""

from __future__ import annotations

from orchestrator.core.records import DEAD_LETTER_STATES, OUTBOX_STATES, TASK_STATES
from orchestrator.service.dead_letters import replay
from orchestrator.service.operator_ports import OperatorStore
from orchestrator.service.operator_stats import Stats, figures
from orchestrator.service.operator_trace import timeline
from orchestrator.service.operator_views import (
    DeadLetterDetail,
    DeadLetterRow,
    OperationRefused,
    OutboxListing,
    OutboxSummary,
    ReplayResult,
    TaskRow,
    TimelineEntry,
)
from orchestrator.service.process_message import MessageProcessor


def _check_choice(what: str, value: str | None, allowed: tuple[str, ...]) -> None:
    if value is not None and value not in allowed:
        raise OperationRefused(f"unknown {what} {value!r} (one of {', '.join(allowed)})")


def _check_window(seconds: float) -> None:
    if seconds <= 0:
        raise OperationRefused("the window must be a positive number of seconds")


class Operations:
    """Read the pipeline's state and act on it; nothing here talks to Kafka or Redis."""

    def __init__(self, store: OperatorStore) -> None:
        self.store = store

    def trace(self, session_id: str) -> list[TimelineEntry]:
        """Everything recorded for one session, in time order (empty when nothing is)."""
        return timeline(self.store.session_records(session_id))

    def tasks(
        self,
        *,
        session_id: str | None = None,
        type_prefix: str | None = None,
        state: str | None = None,
        older_than_s: float | None = None,
        limit: int = 50,
    ) -> list[TaskRow]:
        """AsyncTasks, newest first; every filter optional (`type_prefix` matches the start)."""
        _check_choice("task state", state, TASK_STATES)
        return self.store.tasks(session_id, type_prefix, state, older_than_s, limit)

    # -- the outbox ----------------------------------------------------------------------------

    def outbox_summary(self) -> OutboxSummary:
        return self.store.outbox_summary()

    def outbox(self, *, status: str | None = None, limit: int = 50) -> OutboxListing:
        """Outbox rows, newest first, with the pending/failed summary."""
        _check_choice("outbox status", status, OUTBOX_STATES)
        return self.store.outbox(status, limit)

    def retry_outbox(self, outbox_id: str) -> int:
        """Hand one FAILED row back to the relay (PENDING, due now, no lease)."""
        if self.store.retry_failed(outbox_id):
            return 1
        status = self.store.outbox_status(outbox_id)
        if status is None:
            raise OperationRefused(f"no outbox row {outbox_id}")
        raise OperationRefused(f"outbox row {outbox_id} is {status}, not FAILED")

    def retry_failed_outbox(self) -> list[str]:
        """Hand every FAILED row back to the relay; returns their ids."""
        return self.store.retry_all_failed()

    def republish_sent(self, seconds: float) -> list[str]:
        """Hand the rows SENT in the last `seconds` back to the relay, for a broker that lost
        messages it had acknowledged. They keep their ids and their order (seq)."""
        _check_window(seconds)
        return self.store.republish_sent(seconds)

    # -- dead letters --------------------------------------------------------------------------

    def dead_letters(
        self, *, category: str | None = None, status: str | None = None, limit: int = 50
    ) -> list[DeadLetterRow]:
        """Dead letters, newest first."""
        _check_choice("dead-letter status", status, DEAD_LETTER_STATES)
        return self.store.dead_letters(category, status, limit)

    def dead_letter(self, dead_letter_id: str) -> DeadLetterDetail:
        detail = self.store.dead_letter(dead_letter_id)
        if detail is None:
            raise OperationRefused(f"no dead letter {dead_letter_id}")
        return detail

    def open_dead_letter_ids(self, category: str | None = None) -> list[str]:
        return self.store.open_dead_letter_ids(category)

    def discard_dead_letter(self, dead_letter_id: str, reason: str) -> None:
        """Close an OPEN dead letter for good; the reason is required and kept."""
        if not reason.strip():
            raise OperationRefused("a reason is required to discard a dead letter")
        if self.store.discard(dead_letter_id, reason.strip()):
            return
        status = self.store.dead_letter_status(dead_letter_id)
        if status is None:
            raise OperationRefused(f"no dead letter {dead_letter_id}")
        raise OperationRefused(f"dead letter {dead_letter_id} is {status}, not OPEN")

    def replay_dead_letter(self, dead_letter_id: str, processor: MessageProcessor) -> ReplayResult:
        """Feed an OPEN dead letter's original message through the pipeline again, with
        `processor`'s configuration and registries (see `dead_letters.replay`)."""
        return replay(self.store, self.dead_letter(dead_letter_id), processor)

    # -- figures -------------------------------------------------------------------------------

    def stats(self, window_s: float = 300.0) -> Stats:
        """The figures over the last `window_s` seconds; see `Stats`."""
        _check_window(window_s)
        return figures(self.store.window_counts(float(window_s)), window_s)
