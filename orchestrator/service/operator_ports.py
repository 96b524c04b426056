"""The port the operator use cases work on: reads of the pipeline's state and the few writes
an operator may make (re-drive outbox rows, resolve dead letters).

`orchestrator.adapters.postgres.operator_store` implements it on PostgreSQL. Each method is one
transaction; ages and windows are measured on the store's clock, the one that wrote the rows.
Connection trouble surfaces as `TransientError`.
"""

from __future__ import annotations

from typing import Protocol

from orchestrator.service.operator_stats import WindowCounts
from orchestrator.service.operator_views import (
    DeadLetterDetail,
    DeadLetterRow,
    InboxState,
    OutboxListing,
    OutboxSummary,
    SessionRecords,
    TaskRow,
)


class OperatorStore(Protocol):
    # -- reads -----------------------------------------------------------------------------------

    def session_records(self, session_id: str) -> SessionRecords:
        """The session's rows; dead letters of raw input (no session id) by their Kafka key."""
        ...

    def tasks(
        self,
        session_id: str | None,
        type_prefix: str | None,
        state: str | None,
        older_than_s: float | None,
        limit: int,
    ) -> list[TaskRow]:
        """Newest first; a None filter matches everything."""
        ...

    def outbox(self, status: str | None, limit: int) -> OutboxListing:
        """Rows newest first, with the summary of the whole outbox."""
        ...

    def outbox_summary(self) -> OutboxSummary: ...
    def outbox_status(self, outbox_id: str) -> str | None: ...

    def dead_letters(
        self, category: str | None, status: str | None, limit: int
    ) -> list[DeadLetterRow]:
        """Newest first; a None filter matches everything."""
        ...

    def dead_letter(self, dead_letter_id: str) -> DeadLetterDetail | None: ...
    def dead_letter_status(self, dead_letter_id: str) -> str | None: ...

    def open_dead_letter_ids(self, category: str | None) -> list[str]:
        """Oldest first."""
        ...

    def inbox_state(self, topic: str, message_id: str) -> InboxState | None: ...
    def window_counts(self, window_s: float) -> WindowCounts: ...

    # -- the outbox: back to the relay (PENDING, due now, no lease) ------------------------------

    def retry_failed(self, outbox_id: str) -> bool:
        """False when the row is not FAILED (or does not exist)."""
        ...

    def retry_all_failed(self) -> list[str]: ...

    def republish_sent(self, seconds: float) -> list[str]:
        """The rows SENT in the last `seconds`; they keep their ids and their `seq`."""
        ...

    # -- dead letters and the inbox rows of replayed messages ------------------------------------

    def discard(self, dead_letter_id: str, reason: str) -> bool:
        """Close an OPEN dead letter; False when it is not OPEN (or does not exist)."""
        ...

    def mark_replayed(self, dead_letter_id: str, resolution: str) -> None: ...

    def keep_open(self, dead_letter_id: str, category: str, reason: str) -> None:
        """An OPEN dead letter whose replay failed again takes the latest category and reason."""
        ...

    def reopen_inbox(self, topic: str, message_id: str) -> InboxState | None:
        """Open the message's processed inbox row again (attempts from zero, triggered now);
        the row as it was, or None when there is no processed row."""
        ...

    def restore_inbox(self, inbox_id: int, outcome: str, error: str) -> None:
        """Close a reopened row again (if it is still open)."""
        ...
