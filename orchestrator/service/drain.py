"""Draining one session's inbox under its Redis lock, without ever losing a wake-up.

A task that finds the session locked raises the session's wake flag and tries the lock once
more; the holder clears the flag before each pass over the inbox and, after releasing, looks at
the flag again. Either the holder sees the flag or the newcomer gets the lock: no row waits for
the re-drive. The lock only avoids contention: each row's transaction also takes a PostgreSQL
advisory lock on the session and re-checks the row, so a lost lock never breaks order or
duplicates effects.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from orchestrator.core.records import Outcome, Status
from orchestrator.observability.logs import get_logger
from orchestrator.service.ports import SessionLock, SessionState
from orchestrator.service.process_message import MessageProcessor

log = get_logger("orchestrator.worker")


@dataclass
class DrainResult:
    outcomes: list[Outcome] = field(default_factory=list)
    busy: bool = False
    relay_requested: bool = False


class SessionWorker:
    def __init__(
        self,
        processor: MessageProcessor,
        state: SessionState,
        enqueue_relay: Callable[[], None],
        on_outcome: Callable[[Outcome], None] = lambda _o: None,
    ) -> None:
        self.processor = processor
        self.state = state
        self.enqueue_relay = enqueue_relay
        self.on_outcome = on_outcome

    def drain(self, session_id: str) -> DrainResult:
        """Raises `TransientError` while the session state is unreachable (the task retries)."""
        result = DrainResult()
        while True:
            lock = self.state.session_lock(session_id)
            if not lock.acquire():
                self.state.set_wake(session_id)
                if not lock.acquire():
                    result.busy = True
                    return result
            try:
                self._drain_locked(session_id, lock, result)
            finally:
                if not lock.release():
                    log.warning("orchestrator_session_lock_lost", session_id=session_id)
            if not self.state.has_wake(session_id):
                return result

    def _drain_locked(self, session_id: str, lock: SessionLock, result: DrainResult) -> None:
        """Rows in order on one connection. A row read with no later row pending ends the pass
        without another query: a row committed since then comes with its own trigger, which
        raises the wake flag that `drain` looks at after releasing (or takes the lock)."""
        store = self.processor.store
        with store.session():
            self.state.take_wake(session_id)
            row = store.begin_next(session_id)
            while row is not None:
                outcome = self.processor.process_row(row)
                self._after_commit(outcome, row.topic, result)
                if not row.more:
                    return  # the caller looks at the wake flag once the lock is released
                lock.extend()
                row = store.begin_next(session_id)

    def _after_commit(self, outcome: Outcome, topic: str, result: DrainResult) -> None:
        result.outcomes.append(outcome)
        self.on_outcome(outcome)
        done = []
        if outcome.message_id and outcome.status is not Status.DUPLICATE:
            done.append((topic, outcome.message_id))
        if self.state.after_commit(done, relay=outcome.wrote_outbox):
            result.relay_requested = True
            self.enqueue_relay()
