"""Replay of a dead letter: its original message through the message processor again.

For use once the cause is fixed (a command type registered, a size cap raised, a transient
failure gone). The replay runs on the processor's own store, watched, so that a message that is
still bad is recognised by the dead letter the processor writes (or finds) for it again.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, suppress
from typing import Any

from orchestrator.core.errors import TransientError
from orchestrator.core.records import DeadLetterRecord, InboxRow, Outcome, Status
from orchestrator.service.operator_ports import OperatorStore
from orchestrator.service.operator_views import (
    DeadLetterDetail,
    InboxState,
    OperationRefused,
    ReplayResult,
)
from orchestrator.service.ports import Store, Transaction
from orchestrator.service.process_message import MessageProcessor

DEAD = Status.DEAD_LETTERED.value


class _WatchedTransaction:
    """A transaction that remembers every dead letter the processor writes (or finds)."""

    def __init__(self, tx: Transaction, seen: list[DeadLetterRecord]) -> None:
        self._tx = tx
        self._seen = seen

    def insert_dead_letter(self, record: DeadLetterRecord) -> bool:
        self._seen.append(record)
        return self._tx.insert_dead_letter(record)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._tx, name)


class WatchedStore:
    """The replay's store: the processor's own writes, plus a record of dead-lettering."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.dead_letters: list[DeadLetterRecord] = []

    def session(self) -> AbstractContextManager[None]:
        return self._store.session()

    def begin_next(self, session_id: str) -> InboxRow | None:
        return self._store.begin_next(session_id)

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        with self._store.transaction() as tx:
            yield _WatchedTransaction(tx, self.dead_letters)


def replay(store: OperatorStore, dl: DeadLetterDetail, processor: MessageProcessor) -> ReplayResult:
    """Feed an OPEN dead letter's message through a processor configured as `processor` is.

    A message that already has an inbox row (dead-lettered while processing) gets that row
    opened again first. Success marks the dead letter REPLAYED. A message that is still bad is
    dead-lettered again by the processor: the same row (kept OPEN, with the current category and
    reason), or, if it now fails for another reason, a new row that supersedes this one.
    """
    if dl.status != "OPEN":
        raise OperationRefused(f"dead letter {dl.id} is {dl.status}, not OPEN")
    reopened = None
    if dl.message_id is not None:
        reopened = store.reopen_inbox(dl.source_topic, dl.message_id)
    watched = WatchedStore(processor.store)
    p = processor
    rerun = MessageProcessor(watched, p.config, p.commands, p.handlers, p.clock)
    try:
        outcome = rerun.process_message(dl.raw)
    except TransientError:
        _restore_inbox(store, reopened, "replay interrupted: database unavailable")
        raise
    except Exception as exc:
        reason = f"replay raised {type(exc).__name__}: {' '.join(str(exc).split())}"
        _restore_inbox(store, reopened, reason)
        return ReplayResult(dl.id, False, "OPEN", "error", dl.category, reason, [], [], [], None)
    return _settle(store, dl, outcome, watched.dead_letters)


def _settle(
    store: OperatorStore, dl: DeadLetterDetail, outcome: Outcome, records: list[DeadLetterRecord]
) -> ReplayResult:
    """Resolve the dead letter by what the replay did."""
    again = list(dict.fromkeys(r.id for r in records))
    if again:
        return _still_dead(store, dl, records, again, outcome.fact_ids)
    if outcome.status is Status.DUPLICATE and _dead_lettered_meanwhile(store, dl, outcome):
        reason = f"message {outcome.message_id} was dead-lettered again while processing"
        return ReplayResult(dl.id, False, "OPEN", DEAD, dl.category, reason, [], [], [], None)
    resolution = (
        f"replayed: {outcome.status.value} ({len(outcome.fact_ids)} fact(s),"
        f" {len(outcome.task_ids)} task(s))"
    )
    store.mark_replayed(dl.id, resolution)
    facts, tasks = list(outcome.fact_ids), list(outcome.task_ids)
    status = outcome.status.value
    return ReplayResult(dl.id, True, "REPLAYED", status, None, None, facts, tasks, [], resolution)


def _dead_lettered_meanwhile(store: OperatorStore, dl: DeadLetterDetail, outcome: Outcome) -> bool:
    """A duplicate was processed meanwhile (by a worker, or an earlier replay): did it die?"""
    if outcome.message_id is None:
        return False
    state = store.inbox_state(dl.source_topic, outcome.message_id)
    return state is not None and state.outcome == DEAD


def _still_dead(
    store: OperatorStore,
    dl: DeadLetterDetail,
    records: Sequence[DeadLetterRecord],
    again: list[str],
    fact_ids: list[str],
) -> ReplayResult:
    latest = records[-1]
    if dl.id in again:
        store.keep_open(dl.id, latest.category, latest.reason)
        status, resolution = "OPEN", None
    else:
        resolution = (
            f"replayed, dead-lettered again as {', '.join(again)}"
            f" ({latest.category}: {latest.reason})"
        )
        store.mark_replayed(dl.id, resolution)
        status = "REPLAYED"
    return ReplayResult(
        dl.id,
        False,
        status,
        DEAD,
        latest.category,
        latest.reason,
        list(fact_ids),
        [],
        again,
        resolution,
    )


def _restore_inbox(store: OperatorStore, reopened: InboxState | None, error: str) -> None:
    """Close a reopened inbox row again after a failed replay (best effort: if the database
    is gone, the row stays open and beat's re-drive hands it to a worker)."""
    if reopened is None:
        return
    with suppress(TransientError):
        store.restore_inbox(reopened.id, reopened.outcome or DEAD, error)
