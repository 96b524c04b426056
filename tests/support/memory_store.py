"""An in-memory `Store` for unit tests of the service layer, with PostgreSQL's guarantees.

It enforces the unique constraints of the schema (`orchestrator/adapters/postgres/schema.py`
and the migration): the inbox on (topic, message_id), facts on their id and on (causing
message, event type), the outbox and dead letters on their id, AsyncTasks on their id and on
(correlation, type) while PENDING or RUNNING, NULL correlations never conflicting. Every insert
is `ON CONFLICT DO NOTHING` and says whether it wrote, as the real store's do.

A transaction works on a copy of the committed tables and replaces them only when its block
ends without an exception; a savepoint does the same inside it. Transactions run one at a time
(as if each took a table lock), so the fake is serializable; one opened inside another in the
same thread raises instead of waiting for itself. `tests/integration/test_store_contract.py`
runs the same tests against this fake and PostgreSQL.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from orchestrator.core.clock import utc_now
from orchestrator.core.plan import Completion, FactRow, MessageRow
from orchestrator.core.records import (
    CompletionResult,
    DeadLetterRecord,
    InboxRow,
    NewInbox,
    OutboxMessage,
)

ACTIVE = ("PENDING", "RUNNING")


@dataclass
class StoredInbox:
    id: int
    new: NewInbox
    triggered: bool
    attempts: int = 0
    processed: bool = False
    outcome: str | None = None
    last_error: str | None = None
    received_at: datetime | None = None

    def row(self, more: bool = True) -> InboxRow:
        raw = self.new.raw
        return InboxRow(
            self.id,
            raw.topic,
            self.new.message_id,
            self.new.kind,
            self.new.message_type,
            self.new.session_id,
            self.new.correlation_id,
            self.new.traceparent,
            raw.key,
            raw.value,
            raw.headers,
            raw.partition,
            raw.offset,
            self.attempts,
            self.processed,
            more,
        )


@dataclass
class StoredFact:
    fact: FactRow
    aggregate_type: str


@dataclass
class StoredOutbox:
    seq: int
    message: OutboxMessage
    status: str = "PENDING"


@dataclass
class StoredTask:
    id: str
    task_type: str
    correlation_id: str | None
    session_id: str
    causation_id: str
    input: Any
    deadline: datetime
    created_at: datetime
    status: str = "PENDING"
    version: int = 1
    result: Any = None
    error: str | None = None


@dataclass
class Tables:
    inbox: dict[int, StoredInbox] = field(default_factory=dict)
    facts: dict[str, StoredFact] = field(default_factory=dict)
    outbox: dict[str, StoredOutbox] = field(default_factory=dict)
    tasks: dict[str, StoredTask] = field(default_factory=dict)
    dead_letters: dict[str, DeadLetterRecord] = field(default_factory=dict)
    last_inbox_id: int = 0
    last_outbox_seq: int = 0


class MemoryTransaction:
    """The `Transaction` port on a working copy of the tables."""

    def __init__(self, tables: Tables, now: datetime) -> None:
        self.t = tables
        self.now = now  # like PostgreSQL's now(): the transaction's start

    def lock_session(self, session_id: str) -> None:
        """Transactions are already serialized: nothing more to hold."""

    # -- the inbox ---------------------------------------------------------------------------

    def insert_inbox(self, rows: Sequence[NewInbox], triggered: bool) -> list[int]:
        return [i for i, _ in self._insert_inbox(rows, triggered)]

    def insert_inbox_batch(self, rows: Sequence[NewInbox]) -> set[tuple[str, str]]:
        return {key for _, key in self._insert_inbox(rows, triggered=True)}

    def _insert_inbox(
        self, rows: Sequence[NewInbox], triggered: bool
    ) -> list[tuple[int, tuple[str, str]]]:
        taken = {(r.new.raw.topic, r.new.message_id) for r in self.t.inbox.values()}
        written = []
        for new in rows:
            key = (new.raw.topic, new.message_id)
            if key in taken:
                continue
            taken.add(key)
            self.t.last_inbox_id += 1
            self.t.inbox[self.t.last_inbox_id] = StoredInbox(
                self.t.last_inbox_id, new, triggered, received_at=self.now
            )
            written.append((self.t.last_inbox_id, key))
        return written

    def unprocessed_among(self, keys: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
        wanted = set(keys)
        return {
            (r.new.raw.topic, r.new.message_id)
            for r in self.t.inbox.values()
            if not r.processed and (r.new.raw.topic, r.new.message_id) in wanted
        }

    def find_inbox(self, topic: str, message_id: str) -> InboxRow | None:
        for r in self.t.inbox.values():
            if (r.new.raw.topic, r.new.message_id) == (topic, message_id):
                return r.row()
        return None

    def inbox_for_update(self, inbox_id: int) -> InboxRow | None:
        r = self.t.inbox.get(inbox_id)
        return r.row() if r else None

    def lock_and_fetch(self, inbox_id: int, session_id: str) -> InboxRow | None:
        return self.inbox_for_update(inbox_id)

    def mark_processed(self, inbox_id: int, outcome: str, error: str | None = None) -> None:
        r = self.t.inbox.get(inbox_id)
        if r is not None:
            r.processed, r.outcome, r.last_error = True, outcome, error

    def next_unprocessed(self, session_id: str) -> InboxRow | None:
        """What `Store.begin_next` does, inside this transaction."""
        waiting = sorted(
            i for i, r in self.t.inbox.items() if r.new.session_id == session_id and not r.processed
        )
        if not waiting:
            return None
        head = self.t.inbox[waiting[0]]
        head.attempts += 1
        return head.row(more=len(waiting) > 1)

    # -- facts and the outbox ----------------------------------------------------------------

    def count_handled_reviews(
        self, correlation_id: str, event_types: Sequence[str], exclude_causation: str
    ) -> int:
        return sum(
            1
            for s in self.t.facts.values()
            if s.fact.correlation_id == correlation_id
            and s.fact.event_type in event_types
            and s.fact.causation_id != exclude_causation
        )

    def insert_fact(self, fact: FactRow, aggregate_type: str) -> bool:
        cause = (fact.causation_id, fact.event_type)
        if fact.event_id in self.t.facts or any(
            (s.fact.causation_id, s.fact.event_type) == cause for s in self.t.facts.values()
        ):
            return False
        self.t.facts[fact.event_id] = StoredFact(copy.deepcopy(fact), aggregate_type)
        return True

    def insert_outbox(self, message: OutboxMessage) -> bool:
        if message.id in self.t.outbox:
            return False
        self.t.last_outbox_seq += 1
        self.t.outbox[message.id] = StoredOutbox(self.t.last_outbox_seq, message)
        return True

    # -- AsyncTasks --------------------------------------------------------------------------

    def insert_fact_with_outbox(
        self, fact: FactRow, aggregate_type: str, message: OutboxMessage
    ) -> tuple[bool, bool]:
        if not self.insert_fact(fact, aggregate_type):
            return False, False
        return True, self.insert_outbox(message)

    def create_task_with_outbox(
        self, message: MessageRow, deadline: datetime, outbox: OutboxMessage
    ) -> tuple[bool, bool]:
        if not self.create_task(message, deadline):
            return False, False
        return True, self.insert_outbox(outbox)

    def create_task(self, message: MessageRow, deadline: datetime) -> bool:
        if message.message_id in self.t.tasks:
            return False
        if message.correlation_id is not None and any(
            (t.correlation_id, t.task_type) == (message.correlation_id, message.message_type)
            and t.status in ACTIVE
            for t in self.t.tasks.values()
        ):
            return False
        self.t.tasks[message.message_id] = StoredTask(
            message.message_id,
            message.message_type,
            message.correlation_id,
            message.session_id,
            message.causation_id,
            copy.deepcopy(message.envelope.get("data")),
            deadline,
            self.now,
        )
        return True

    def complete_task(self, completion: Completion) -> CompletionResult:
        def matching(statuses: Sequence[str]) -> list[StoredTask]:
            # `correlation_id = NULL` matches nothing in SQL.
            return [
                t
                for t in self.t.tasks.values()
                if completion.correlation_id is not None
                and t.correlation_id == completion.correlation_id
                and t.task_type.startswith(completion.expect_task_prefix)
                and t.status in statuses
            ]

        active = sorted(matching(ACTIVE), key=lambda t: (t.created_at, t.id))
        if active:
            task = active[0]
            task.status, task.result = "COMPLETED", copy.deepcopy(completion.result_data)
            task.version += 1
            return CompletionResult(
                task.id, "completed", (self.now - task.created_at).total_seconds()
            )
        failed = matching(["FAILED"])
        if failed:
            newest = max(t.created_at for t in failed)
            task = min((t for t in failed if t.created_at == newest), key=lambda t: t.id)
            task.result = copy.deepcopy(completion.result_data)
            task.error = (task.error or "") + "; late result received"
            task.version += 1
            return CompletionResult(task.id, "late")
        return CompletionResult(None, "not_found")

    # -- dead letters and savepoints ---------------------------------------------------------

    def insert_dead_letter(self, record: DeadLetterRecord) -> bool:
        if record.id in self.t.dead_letters:
            return False
        self.t.dead_letters[record.id] = record
        return True

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        saved = copy.deepcopy(self.t)
        try:
            yield
        except BaseException:
            self.t = saved
            raise

    # -- what the outcome of a correlation needs to know -------------------------------------

    def active_task_id(self, correlation_id: str | None, task_type: str) -> str | None:
        if correlation_id is None:
            return None
        return next(
            (
                t.id
                for t in self.t.tasks.values()
                if (t.correlation_id, t.task_type) == (correlation_id, task_type)
                and t.status in ACTIVE
            ),
            None,
        )

    def correlation_age_s(self, correlation_id: str, topic: str) -> float | None:
        causes = {
            s.fact.causation_id
            for s in self.t.facts.values()
            if s.fact.correlation_id == correlation_id
        }
        arrivals = [
            r.received_at
            for r in self.t.inbox.values()
            if r.new.raw.topic == topic
            and r.new.kind == "command"
            and r.new.message_id in causes
            and r.received_at is not None
        ]
        return (self.now - min(arrivals)).total_seconds() if arrivals else None


class MemoryStore:
    """The `Store` port in memory; `tables` is the committed state, for assertions."""

    def __init__(self, clock: Callable[[], datetime] = utc_now) -> None:
        self.tables = Tables()
        self.clock = clock
        self._lock = threading.Lock()
        self._owner: int | None = None
        self._last_now: datetime | None = None

    def _now(self) -> datetime:
        """The clock, but later than the previous transaction's: tasks created one after the
        other sort by creation, as they do on a real server."""
        now = self.clock()
        if self._last_now is not None and now <= self._last_now:
            now = self._last_now + timedelta(microseconds=1)
        self._last_now = now
        return now

    @contextmanager
    def session(self) -> Iterator[None]:
        yield

    @contextmanager
    def transaction(self) -> Iterator[MemoryTransaction]:
        if self._owner == threading.get_ident():
            raise RuntimeError("a transaction is already open in this thread")
        with self._lock:
            self._owner = threading.get_ident()
            try:
                tx = MemoryTransaction(copy.deepcopy(self.tables), self._now())
                yield tx
                self.tables = tx.t
            finally:
                self._owner = None

    def begin_next(self, session_id: str) -> InboxRow | None:
        """Count an attempt on the session's oldest unprocessed row, committed on its own."""
        with self.transaction() as tx:
            return tx.next_unprocessed(session_id)

    # -- for assertions and arranging --------------------------------------------------------

    def inbox(self) -> list[StoredInbox]:
        return [self.tables.inbox[i] for i in sorted(self.tables.inbox)]

    def facts(self) -> list[FactRow]:
        return [s.fact for s in self.tables.facts.values()]

    def outbox(self) -> list[OutboxMessage]:
        return [s.message for s in sorted(self.tables.outbox.values(), key=lambda s: s.seq)]

    def tasks(self) -> list[StoredTask]:
        return sorted(self.tables.tasks.values(), key=lambda t: (t.created_at, t.id))

    def dead_letters(self) -> list[DeadLetterRecord]:
        return list(self.tables.dead_letters.values())

    def counts(self) -> dict[str, int]:
        t = self.tables
        return {
            "inbox": len(t.inbox),
            "domain_events": len(t.facts),
            "event_outbox": len(t.outbox),
            "async_tasks": len(t.tasks),
            "dead_letters": len(t.dead_letters),
        }

    def set_task_status(self, task_id: str, status: str) -> None:
        """Arrange a task's state as another writer (the relay, beat's timeouts) would."""
        task = self.tables.tasks[task_id]
        self.tables.tasks[task_id] = replace(task, status=status, version=task.version + 1)
