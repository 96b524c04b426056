"""The ports the service layer depends on.

`orchestrator.adapters.postgres.store` implements the store on PostgreSQL; the relay's outbox,
the maintenance sweeps, the publisher, the message source and the session state have their
adapters beside it (`adapters/postgres/`, `adapters/kafka/`, `adapters/redis/`).

Kept as Protocols so the service layer and its tests never import a driver: the unit tests
run it on an in-memory store (`tests/support/memory_store.py`) that keeps the same constraints.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Protocol

from orchestrator.core.errors import OrchestratorError
from orchestrator.core.inbound import Headers, RawMessage
from orchestrator.core.plan import Completion, FactRow, MessageRow
from orchestrator.core.records import (
    CompletionResult,
    DeadLetterRecord,
    InboxRow,
    NewInbox,
    OutboxMessage,
)


class Transaction(Protocol):
    """One database transaction: every write of one input message commits together."""

    def lock_session(self, session_id: str) -> None: ...
    def insert_inbox(self, rows: Sequence[NewInbox], triggered: bool) -> list[int]: ...
    def insert_inbox_batch(self, rows: Sequence[NewInbox]) -> set[tuple[str, str]]: ...
    def unprocessed_among(self, keys: Sequence[tuple[str, str]]) -> set[tuple[str, str]]: ...
    def find_inbox(self, topic: str, message_id: str) -> InboxRow | None: ...
    def inbox_for_update(self, inbox_id: int) -> InboxRow | None: ...
    def lock_and_fetch(self, inbox_id: int, session_id: str) -> InboxRow | None: ...
    def mark_processed(self, inbox_id: int, outcome: str, error: str | None = None) -> None: ...
    def count_handled_reviews(
        self, correlation_id: str, event_types: Sequence[str], exclude_causation: str
    ) -> int: ...
    def insert_fact(self, fact: FactRow, aggregate_type: str) -> bool: ...
    def insert_outbox(self, message: OutboxMessage) -> bool: ...
    def create_task(self, message: MessageRow, deadline: datetime) -> bool: ...
    def insert_fact_with_outbox(
        self, fact: FactRow, aggregate_type: str, message: OutboxMessage
    ) -> tuple[bool, bool]:
        """The fact and, only if it is new, its outbox row: (fact new, outbox row written)."""
        ...

    def create_task_with_outbox(
        self, message: MessageRow, deadline: datetime, outbox: OutboxMessage
    ) -> tuple[bool, bool]:
        """The task and, only if it is new, its message: (task created, outbox row written)."""
        ...

    def complete_task(self, completion: Completion) -> CompletionResult: ...
    def insert_dead_letter(self, record: DeadLetterRecord) -> bool: ...
    def savepoint(self) -> AbstractContextManager[None]: ...
    def active_task_id(self, correlation_id: str | None, task_type: str) -> str | None:
        """The PENDING or RUNNING task of this correlation and type (None for no correlation)."""
        ...

    def correlation_age_s(self, correlation_id: str, topic: str) -> float | None:
        """Seconds (the database's clock) since the first command of this correlation arrived
        in the inbox on `topic`; None when no such inbox row is left (pruned, or no command)."""
        ...


class Store(Protocol):
    """Transactions that commit on leaving their block and roll back on an exception; inside
    `session()` they share one connection. `begin_next` commits on its own."""

    def session(self) -> AbstractContextManager[None]: ...
    def transaction(self) -> AbstractContextManager[Transaction]: ...
    def begin_next(self, session_id: str) -> InboxRow | None: ...


# -- the relay: an outbox to claim from and a publisher to deliver to ------------------------


@dataclass(frozen=True, slots=True)
class ClaimedRow:
    """An outbox row claimed under a lease, with what publishing it needs."""

    id: str
    seq: int
    kind: str
    topic: str
    key: bytes | None
    headers: Headers
    payload: bytes | None  # None: a NULL value (a tombstone's DLQ record)
    attempts: int
    age_s: float  # since the row was committed


@dataclass
class Settlement:
    """What became of a run's claimed rows; recorded in one transaction."""

    sent: list[str] = field(default_factory=list)
    tasks_started: list[str] = field(default_factory=list)  # capability rows among `sent`
    retries: list[tuple[str, str, float]] = field(default_factory=list)  # id, error, delay_s
    failures: list[tuple[str, str]] = field(default_factory=list)  # id, error


class Outbox(Protocol):
    """The relay's view of the outbox: claims are leases, so a crashed relay's rows come back."""

    def claim(self, lease_s: float, limit: int) -> list[ClaimedRow]:
        """Each (topic, key)'s run of oldest due rows, in `seq` order: a key whose older row is
        leased elsewhere or backing off is left out, so its order holds across relays."""
        ...

    def settle(self, settlement: Settlement) -> None: ...


class PublishFailure(StrEnum):
    """What a failed delivery means for the row and for the publisher."""

    TRANSIENT = "transient"  # try the row again later
    PERMANENT = "permanent"  # publishing this row again cannot succeed: mark it failed
    FATAL = "fatal"  # the publisher is unusable for good: replace it; the row is retried


@dataclass(frozen=True, slots=True)
class PublishError:
    reason: str
    failure: PublishFailure
    timed_out: bool = False  # no acknowledgement before the message timeout


class PublishFailed(OrchestratorError):
    """The publisher failed as a whole while waiting for its deliveries."""

    def __init__(self, error: PublishError) -> None:
        super().__init__(error.reason)
        self.error = error


class Publisher(Protocol):
    """Delivers messages to the broker, reporting each delivery once."""

    def produce(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None,
        headers: Headers,
        on_delivery: Callable[[PublishError | None], None],
    ) -> None:
        """Queue one message; a message refused at once is reported at once."""
        ...

    def flush(self, timeout_s: float) -> int:
        """Wait for the delivery reports; how many are still outstanding. Raises
        `PublishFailed` when the publisher itself failed."""
        ...

    def missing_topics(self, topics: Iterable[str]) -> set[str]:
        """Those of `topics` the broker does not know (empty when it cannot say)."""
        ...

    def replace(self) -> None:
        """Start over with a new client (a no-op where none can be built)."""
        ...


# -- beat's maintenance ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ExpiredTask:
    task_id: str
    task_type: str
    session_id: str
    correlation_id: str


class MaintenanceStore(Protocol):
    """The sweeps beat runs; each is safe to run twice and at once."""

    def redrive(self, after_s: float, growth_max_s: float) -> list[tuple[str, str]]:
        """Mark each session's overdue head row triggered; (session id, topic) of each."""
        ...

    def expire_tasks(
        self, limit: int
    ) -> AbstractContextManager[tuple[list[ExpiredTask], Transaction]]:
        """Tasks past their deadline, marked failed in the transaction yielded with them."""
        ...

    def prune(self, keep_s: float, limit: int) -> tuple[int, int]:
        """Delete sent outbox and processed inbox rows older than `keep_s`; how many of each."""
        ...


# -- what the workers keep outside the database (Redis) --------------------------------------


class SessionLock(Protocol):
    def acquire(self) -> bool:
        """Take the lock if it is free; never waits."""
        ...

    def release(self) -> bool:
        """False when the lock was lost meanwhile (it expired, or its store forgot it)."""
        ...

    def extend(self) -> bool: ...


class SessionState(Protocol):
    """Session locks, wake flags, done markers and the relay request flags. A fast path only:
    the database decides whenever this forgot. Raises `TransientError` when unreachable."""

    def session_lock(self, session_id: str) -> SessionLock: ...
    def set_wake(self, session_id: str) -> None: ...
    def take_wake(self, session_id: str) -> bool: ...
    def has_wake(self, session_id: str) -> bool: ...
    def after_commit(self, done: Sequence[tuple[str, str]], relay: bool) -> bool: ...
    def done_among(self, keys: Sequence[tuple[str, str]]) -> set[tuple[str, str]]: ...
    def request_relay(self) -> bool: ...
    def clear_dirty(self) -> None: ...
    def finish_relay_run(self) -> bool: ...


# -- the ingester's input ----------------------------------------------------------------------

Partition = tuple[str, int]


class MessageSource(Protocol):
    """A partitioned log read at least once: the caller says which offsets are done."""

    def subscribe(
        self, topics: Sequence[str], on_revoke: Callable[[list[Partition]], None]
    ) -> None: ...

    def next_batch(self, max_messages: int, timeout_s: float) -> list[RawMessage]:
        """Up to `max_messages`, waiting at most `timeout_s` for the first; each message has
        its partition and offset set."""
        ...

    def idle(self, timeout_s: float) -> None:
        """Keep the membership alive while paused."""
        ...

    def pause(self) -> None: ...
    def resume(self) -> None: ...
    def store_offsets(self, messages: Sequence[RawMessage]) -> None: ...
    def seek(self, topic: str, partition: int, offset: int) -> None: ...

    def close(self) -> None:
        """Commit what was stored and leave."""
        ...


# -- the batched drain: many sessions per claim and per transaction ---------------------------


@dataclass
class ClaimedBatch:
    """Sessions held for one drain pass, with their pending rows in arrival order.

    `fresh` rows (never attempted) had their attempt counted in one statement before the
    work; `suspect` sessions have a row that was attempted before (a crash or a failure) and
    are processed one row at a time so that only the offending row is counted again."""

    held: list[str] = field(default_factory=list)
    fresh: list[InboxRow] = field(default_factory=list)
    suspect: list[str] = field(default_factory=list)
    full: bool = False  # the pass hit its bound: more may be waiting

    @property
    def empty(self) -> bool:
        return not self.held


class DrainStore(Protocol):
    """Claims of whole sessions for a batched drain, on one connection (`Store.session`)."""

    def claim(self, max_sessions: int, max_rows: int, skip: Sequence[str] = ()) -> ClaimedBatch:
        """Hold every free session with pending rows (up to the bounds, none of `skip`) until
        `release`; count an attempt on the fresh rows, committed before any work."""
        ...

    def transaction(self) -> AbstractContextManager[Transaction]:
        """One transaction for a whole pass: no savepoint (a failure fails the pass, which then
        goes row by row), and the rows marked processed in one statement at the end."""
        ...

    def uncount(self, inbox_ids: Sequence[int]) -> None:
        """Take back the attempt counted by `claim` (the batch failed as a whole)."""
        ...

    def release(self, sessions: Sequence[str]) -> list[str]:
        """Let the sessions go; those of them that still have pending rows."""
        ...

    def release_all(self) -> None:
        """After a failure: let every session this connection holds go (or drop it)."""
        ...


class DrainRequests(Protocol):
    """Coalesced drain requests: at most one drain task queued (and not started) per queue."""

    def request_drain(self, queue: str) -> bool:
        """True when no drain is queued on `queue`: the caller must queue one."""
        ...

    def start_drain(self, queue: str) -> None:
        """A drain task has started: the next request queues another."""
        ...
