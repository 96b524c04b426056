"""The batched drain: one task, one claim and one transaction serve many sessions.

A pass holds every free session with pending rows (up to its bounds), counts an attempt on
their fresh rows in one statement, processes the rows in arrival order and commits all of their
effects at once; the Redis work after the commit (done markers, relay request) is one pipeline.

Poison isolation: when the batch's transaction fails, its attempts are taken back and its
sessions are processed row by row, each row counted right before its own work, so exactly the
offending row is counted (and, at the limit, dead-lettered) while the others commit. A session
with a row attempted before (a crash, a failure) is always processed row by row.

No lost wake-up: a row committed for a session held here is seen by the check after the release
(`DrainStore.release`); a row for any other session comes with its own drain request, which
queues a task unless one is queued and not yet started (`DrainRequests`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from orchestrator.core.errors import TransientError
from orchestrator.core.records import InboxRow, Outcome, Status
from orchestrator.observability.logs import bound, get_logger
from orchestrator.service.ports import ClaimedBatch, DrainStore, SessionState
from orchestrator.service.process_message import MessageProcessor

log = get_logger("orchestrator.worker")

DRAIN_RUN_MAX_S = 5.0


@dataclass(frozen=True)
class DrainBounds:
    """How much one pass takes: bigger passes cost fewer round trips per row, smaller ones
    spread a burst over more worker processes sooner."""

    max_sessions: int = 100
    max_rows: int = 500
    max_run_s: float = DRAIN_RUN_MAX_S


@dataclass
class BatchResult:
    outcomes: list[Outcome] = field(default_factory=list)
    passes: int = 0
    fallbacks: int = 0
    relay_requested: bool = False
    # Sessions whose row failed in this run: not taken again by it, so a failing row is retried
    # by a later drain (or the re-drive), not in a loop that would spend its attempts at once.
    failed: set[str] = field(default_factory=set)


class BatchDrainer:
    def __init__(
        self,
        processor: MessageProcessor,
        drains: DrainStore,
        state: SessionState,
        request_drain: Callable[[], None],
        enqueue_relay: Callable[[], None],
        on_outcome: Callable[[Outcome], None] = lambda _o: None,
        bounds: DrainBounds | None = None,
    ) -> None:
        self.processor = processor
        self.store = processor.store
        self.drains = drains
        self.state = state
        self.request_drain = request_drain
        self.enqueue_relay = enqueue_relay
        self.on_outcome = on_outcome
        self.bounds = bounds or DrainBounds()

    def run(self) -> BatchResult:
        """Pass after pass until nothing is pending for the sessions this task can hold, or the
        run's time is up (a successor is then requested). Raises `TransientError`."""
        result = BatchResult()
        started = time.monotonic()
        with self.store.session():
            try:
                return self._passes(result, started)
            finally:
                # Whatever happened, no session lock goes back to the pool with the connection.
                self._give_back()

    def _passes(self, result: BatchResult, started: float) -> BatchResult:
        while True:
            batch = self.drains.claim(
                self.bounds.max_sessions, self.bounds.max_rows, sorted(result.failed)
            )
            if batch.empty:
                return result
            if batch.full:
                self.request_drain()  # another worker process may take the rest meanwhile
            result.passes += 1
            pending = self._pass(batch, result)
            if not pending and not batch.full:
                return result
            if time.monotonic() - started > self.bounds.max_run_s:
                self.request_drain()
                return result

    def _pass(self, batch: ClaimedBatch, result: BatchResult) -> list[str]:
        done: list[tuple[InboxRow, Outcome]] = []
        try:
            self._work(batch, done, result)
        finally:
            self._after_commit(done, result)
        return [s for s in self.drains.release(batch.held) if s not in result.failed]

    def _work(
        self,
        batch: ClaimedBatch,
        done: list[tuple[InboxRow, Outcome]],
        result: BatchResult,
    ) -> None:
        if batch.fresh:
            try:
                done.extend(self._in_one_transaction(batch.fresh))
            except TransientError:
                raise
            except Exception as exc:
                result.fallbacks += 1
                log.warning(
                    "orchestrator_drain_batch_failed",
                    rows=len(batch.fresh),
                    sessions=len({r.session_id for r in batch.fresh}),
                    error=str(exc),
                )
                self.drains.uncount([r.id for r in batch.fresh])
                self._row_by_row(_sessions(batch.fresh), done, result)
        self._row_by_row(batch.suspect, done, result)

    def _in_one_transaction(self, rows: Sequence[InboxRow]) -> list[tuple[InboxRow, Outcome]]:
        with self.drains.transaction() as tx:
            return [(row, self.processor.process_held(tx, row)) for row in rows]

    def _row_by_row(
        self,
        sessions: Sequence[str],
        done: list[tuple[InboxRow, Outcome]],
        result: BatchResult,
    ) -> None:
        """Each row counted, then processed in its own transaction; a session whose row fails
        stops there (its later rows keep their order) and the other sessions go on."""
        for session_id in sessions:
            with bound(session_id=session_id):
                try:
                    row = self.store.begin_next(session_id)
                    while row is not None:
                        done.append((row, self.processor.process_row(row)))
                        row = self.store.begin_next(session_id) if row.more else None
                except TransientError:
                    raise
                except Exception as exc:
                    result.failed.add(session_id)
                    log.error("orchestrator_drain_row_failed", error=str(exc))

    def _after_commit(self, done: list[tuple[InboxRow, Outcome]], result: BatchResult) -> None:
        if not done:
            return
        keys = []
        relay = False
        for row, outcome in done:
            result.outcomes.append(outcome)
            self.on_outcome(outcome)
            relay |= outcome.wrote_outbox
            if outcome.message_id and outcome.status is not Status.DUPLICATE:
                keys.append((row.topic, outcome.message_id))
        try:
            if self.state.after_commit(keys, relay=relay):
                result.relay_requested = True
                self.enqueue_relay()
        except TransientError as exc:
            # Committed already: the markers are a fast path and beat's relay tick is the net.
            log.warning("orchestrator_relay_request_failed", error=str(exc))

    def _give_back(self) -> None:
        try:
            self.drains.release_all()
        except Exception as exc:  # the connection is gone: so are its locks
            log.warning("orchestrator_session_release_failed", error=str(exc))


def _sessions(rows: Sequence[InboxRow]) -> list[str]:
    return list(dict.fromkeys(r.session_id for r in rows))
