"""The relay's use case on in-memory ports: what each delivery outcome does to its row, when the
publisher is replaced, and how coalesced runs hand over. The SQL and the broker are covered by
tests/integration/test_relay.py."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import pytest

from orchestrator.core.errors import TransientError
from orchestrator.core.inbound import Headers
from orchestrator.service.ports import (
    ClaimedRow,
    PublishError,
    PublishFailed,
    PublishFailure,
    Settlement,
)
from orchestrator.service.relay import NO_REPORT, OutboxRelay, RelayResult
from orchestrator.service.relay_runs import RelayRequests, RelayRuns

TIMED_OUT = PublishError("Local: Message timed out", PublishFailure.TRANSIENT, timed_out=True)
TOO_LARGE = PublishError("Broker: Message size too large", PublishFailure.PERMANENT)
FATAL = PublishError("Broker: Unknown producer id", PublishFailure.FATAL)


@dataclass
class FakeOutbox:
    due: list[list[ClaimedRow]] = field(default_factory=list)  # one list per claim
    settled: list[Settlement] = field(default_factory=list)
    settle_failures: int = 0  # settle raises TransientError this many times first
    claims: list[tuple[float, int]] = field(default_factory=list)

    def claim(self, lease_s: float, limit: int) -> list[ClaimedRow]:
        self.claims.append((lease_s, limit))
        return self.due.pop(0) if self.due else []

    def settle(self, settlement: Settlement) -> None:
        if self.settle_failures:
            self.settle_failures -= 1
            raise TransientError("database unavailable: gone")
        self.settled.append(settlement)


@dataclass
class FakePublisher:
    """Reports each message with the outcome `outcomes` gives its topic's id (None: delivered);
    ids in `unreported` get no report before the flush ends."""

    outcomes: dict[str, PublishError | None] = field(default_factory=dict)
    unreported: set[str] = field(default_factory=set)
    flush_error: PublishError | None = None
    known_topics: set[str] = field(default_factory=set)
    produced: list[tuple[str, bytes | None]] = field(default_factory=list)
    metadata_requests: int = 0
    replaced: int = 0
    _pending: list[tuple[str, Callable[[PublishError | None], None]]] = field(default_factory=list)

    def produce(
        self,
        topic: str,
        value: bytes,
        key: bytes | None,
        headers: Headers,
        on_delivery: Callable[[PublishError | None], None],
    ) -> None:
        message_id = value.decode()
        self.produced.append((topic, key))
        self._pending.append((message_id, on_delivery))

    def flush(self, timeout_s: float) -> int:
        pending, self._pending = self._pending, []
        remaining = 0
        for message_id, report in pending:
            if message_id in self.unreported:
                remaining += 1
                continue
            report(self.outcomes.get(message_id))
        if self.flush_error is not None:
            raise PublishFailed(self.flush_error)
        return remaining

    def missing_topics(self, topics: Iterable[str]) -> set[str]:
        self.metadata_requests += 1
        return set(topics) - self.known_topics

    def replace(self) -> None:
        self.replaced += 1


def rows(*ids: str, kind: str = "fact", topic: str = "t") -> list[ClaimedRow]:
    return [ClaimedRow(i, n, kind, topic, b"k", (), i.encode(), 0, 0.25) for n, i in enumerate(ids)]


def make_relay(outbox: FakeOutbox, publisher: FakePublisher, **overrides: float) -> OutboxRelay:
    options = {"batch_size": 10, "lease_s": 10.0, "backoff_base_s": 4.0, "backoff_max_s": 60.0}
    options.update(overrides)
    return OutboxRelay(outbox, publisher, **options)  # type: ignore[arg-type]


def test_each_outcome_settles_its_row_in_one_settlement() -> None:
    outbox = FakeOutbox([[*rows("f-1", "f-2"), *rows("cap-1", kind="capability"), *rows("big")]])
    publisher = FakePublisher(outcomes={"f-2": TIMED_OUT, "big": TOO_LARGE}, known_topics={"t"})
    result = make_relay(outbox, publisher).run_once()

    assert (result.claimed, result.sent, result.retried, result.failed) == (4, 2, 1, 1)
    assert result.sent_by_kind == {"fact": 1, "capability": 1}
    assert result.lag_s == [0.25, 0.25]
    [settlement] = outbox.settled
    assert settlement.sent == ["f-1", "cap-1"]
    assert settlement.tasks_started == ["cap-1"]
    assert settlement.failures == [("big", TOO_LARGE.reason)]
    [(retried_id, reason, delay)] = settlement.retries
    assert (retried_id, reason) == ("f-2", TIMED_OUT.reason)
    assert 2.0 <= delay <= 4.0  # attempts 0: uniform(base / 2, base)
    assert outbox.claims == [(10.0, 10)]
    assert result.missing_topics == []  # a timeout on a topic the broker knows
    assert publisher.replaced == 0


def test_a_row_without_a_report_backs_off() -> None:
    outbox = FakeOutbox([rows("slow", "quick")])
    result = make_relay(outbox, FakePublisher(unreported={"slow"})).run_once()
    assert (result.sent, result.retried) == (1, 1)
    assert [(i, e) for i, e, _d in outbox.settled[0].retries] == [("slow", NO_REPORT)]


def test_backoff_grows_with_attempts_up_to_the_cap() -> None:
    relay = make_relay(FakeOutbox(), FakePublisher(), backoff_base_s=1.0, backoff_max_s=30.0)
    assert 4.0 <= relay.backoff(3) <= 8.0
    assert 15.0 <= relay.backoff(40) <= 30.0


def test_timed_out_deliveries_name_the_topics_the_broker_lacks() -> None:
    outbox = FakeOutbox([rows("a", topic="gone"), rows("b", topic="here")])
    publisher = FakePublisher(outcomes={"a": TIMED_OUT}, known_topics={"here"})
    relay = make_relay(outbox, publisher)
    assert relay.run_once().missing_topics == ["gone"]
    assert relay.run_once().missing_topics == []
    assert publisher.metadata_requests == 1  # asked only on the run that had a timeout


def test_a_fatal_error_replaces_the_publisher_and_retries_the_row() -> None:
    outbox = FakeOutbox([rows("a", "b")])
    publisher = FakePublisher(outcomes={"a": FATAL})
    result = make_relay(outbox, publisher).run_once()
    assert (result.sent, result.retried, result.failed) == (1, 1, 0)
    assert publisher.replaced == 1


def test_three_runs_delivering_nothing_replace_the_publisher() -> None:
    outbox = FakeOutbox([rows("a"), rows("a"), [], rows("a"), rows("a"), rows("a"), rows("a")])
    publisher = FakePublisher(outcomes={"a": TIMED_OUT}, known_topics={"t"})
    relay = make_relay(outbox, publisher)
    for _ in range(3):  # an idle run (nothing claimed) does not count
        relay.run_once()
    assert publisher.replaced == 0
    relay.run_once()
    assert publisher.replaced == 1
    for _ in range(3):
        relay.run_once()
    assert publisher.replaced == 2


def test_a_publisher_failing_in_flush_retries_only_the_unreported_rows() -> None:
    outbox = FakeOutbox([rows("done", "stuck")])
    publisher = FakePublisher(unreported={"stuck"}, flush_error=FATAL)
    result = make_relay(outbox, publisher).run_once()
    assert (result.sent, result.retried) == (1, 1)
    assert [(i, e) for i, e, _d in outbox.settled[0].retries] == [("stuck", FATAL.reason)]
    assert publisher.replaced == 1


def test_settling_retries_while_the_database_is_briefly_away() -> None:
    outbox = FakeOutbox([rows("a", "b")], settle_failures=2)
    result = make_relay(outbox, FakePublisher()).run_once()
    assert (result.sent, len(result.lag_s)) == (2, 2)  # counted once, not per attempt
    assert len(outbox.settled) == 1


def test_settling_gives_up_when_the_lease_would_run_out() -> None:
    outbox = FakeOutbox([rows("a")], settle_failures=100)
    with pytest.raises(TransientError):
        make_relay(outbox, FakePublisher(), lease_s=0.5).run_once()
    assert outbox.settled == []


# -- coalesced runs ------------------------------------------------------------------------------


@dataclass
class FakeFlags:
    """The relay request flags: `arrivals` says, per finish, whether a request came meanwhile."""

    arrivals: list[bool] = field(default_factory=list)
    queued: bool = False
    calls: list[str] = field(default_factory=list)

    def request_relay(self) -> bool:
        self.calls.append("request")
        first, self.queued = not self.queued, True
        return first

    def clear_dirty(self) -> None:
        self.calls.append("clear")

    def finish_relay_run(self) -> bool:
        self.calls.append("finish")
        self.queued = bool(self.arrivals.pop(0)) if self.arrivals else False
        return self.queued


def runs(
    outbox: FakeOutbox, flags: FakeFlags, enqueued: list[int], **kw: float
) -> tuple[RelayRuns, list[RelayResult]]:
    seen: list[RelayResult] = []
    requests = RelayRequests(flags, lambda: enqueued.append(1))  # type: ignore[arg-type]
    relay = make_relay(outbox, FakePublisher(), batch_size=2)
    return RelayRuns(relay, requests, seen.append, **kw), seen


def test_a_request_enqueues_a_run_only_when_none_is_queued() -> None:
    enqueued: list[int] = []
    requests = RelayRequests(FakeFlags(), lambda: enqueued.append(1))  # type: ignore[arg-type]
    requests.request()
    requests.request()
    assert enqueued == [1]


def test_a_coalesced_run_takes_over_a_request_that_arrived_meanwhile() -> None:
    outbox = FakeOutbox([rows("a", "b"), rows("c"), rows("d")])
    flags = FakeFlags(arrivals=[True, False])
    enqueued: list[int] = []
    relay_runs, seen = runs(outbox, flags, enqueued)
    total = relay_runs.run(coalesced=True)
    # A full batch goes on at once; a short one ends unless a request arrived meanwhile.
    assert flags.calls == ["clear", "clear", "finish", "clear", "finish"]
    assert [r.sent for r in seen] == [2, 1, 1]
    assert (total.claimed, total.sent) == (4, 4)
    assert enqueued == []


def test_beats_tick_ignores_the_request_flags() -> None:
    outbox = FakeOutbox([rows("a")])
    flags = FakeFlags(arrivals=[True])
    relay_runs, _seen = runs(outbox, flags, [])
    assert relay_runs.run(coalesced=False).sent == 1
    assert flags.calls == []


def test_a_run_past_its_time_hands_over_to_a_queued_successor() -> None:
    outbox = FakeOutbox([rows("a", "b"), rows("c", "d")])
    flags = FakeFlags(queued=True)
    enqueued: list[int] = []
    relay_runs, seen = runs(outbox, flags, enqueued, max_run_s=0.0)
    assert relay_runs.run(coalesced=True).sent == 2
    assert len(seen) == 1
    assert flags.calls == ["clear", "finish", "request"]
    assert enqueued == [1]


def test_totals_add_up_and_keep_missing_topics_sorted_and_unique() -> None:
    total = RelayResult()
    total.add(RelayResult(1, 1, 0, 0, [0.5], {"fact": 1}, ["b", "a"]))
    total.add(RelayResult(2, 1, 1, 0, [0.25], {"fact": 1, "capability": 1}, ["a", "c"]))
    assert total == RelayResult(
        3, 2, 1, 0, [0.5, 0.25], {"fact": 2, "capability": 1}, ["a", "b", "c"]
    )
