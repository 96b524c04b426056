"""When the relay runs: coalesced requests from the workers, and beat's safety-net tick.

A worker that committed outbox rows raises the `dirty` flag and, unless a run is already queued,
queues one. A coalesced run clears the flag before each pass and, when the outbox has nothing
claimable, hands over to a request that arrived meanwhile instead of ending. Runs are bounded in
time so that none holds a worker slot for long: an unfinished one queues its successor.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from orchestrator.service.ports import SessionState
from orchestrator.service.relay import OutboxRelay, RelayResult

RELAY_RUN_MAX_S = 5.0


@dataclass
class RelayRequests:
    state: SessionState
    enqueue_relay: Callable[[], None]

    def request(self) -> None:
        """Ask for a run, unless one is queued or running already."""
        if self.state.request_relay():
            self.enqueue_relay()


@dataclass
class RelayRuns:
    relay: OutboxRelay
    requests: RelayRequests
    on_result: Callable[[RelayResult], None] = lambda _r: None
    max_run_s: float = RELAY_RUN_MAX_S

    def run(self, coalesced: bool) -> RelayResult:
        """Relay until the outbox has nothing claimable; a coalesced run also honours requests
        that arrive meanwhile."""
        state = self.requests.state
        total = RelayResult()
        started = time.monotonic()
        while True:
            if coalesced:
                state.clear_dirty()
            r = self.relay.run_once()
            self.on_result(r)
            total.add(r)
            if time.monotonic() - started > self.max_run_s:
                if coalesced:
                    state.finish_relay_run()
                    self.requests.request()
                break
            if r.claimed >= self.relay.batch_size:
                continue
            if not coalesced or not state.finish_relay_run():
                break
        return total
