"""The session drain and the ingester's consumer loop on in-memory ports: no wake-up is lost,
a lost lock is only logged, offsets are stored only after the batch is recorded, a gap is read
again from its first missing offset, and backpressure pauses and resumes the source."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from structlog.testing import capture_logs

from orchestrator.core.errors import TransientError
from orchestrator.core.inbound import RawMessage
from orchestrator.core.records import InboxRow, Outcome, Status
from orchestrator.service.drain import SessionWorker
from orchestrator.service.ingest import BatchResult, Ingester, _length_or_none
from orchestrator.service.ports import Partition

# -- the drain -------------------------------------------------------------------------------


@dataclass
class FakeLock:
    state: FakeState
    session_id: str

    def acquire(self) -> bool:
        if self.session_id in self.state.held:
            self.state.events.append("acquire-busy")
            return False
        self.state.held.add(self.session_id)
        self.state.events.append("acquire")
        return True

    def release(self) -> bool:
        self.state.held.discard(self.session_id)
        self.state.events.append("release")
        return not self.state.lose_locks

    def extend(self) -> bool:
        self.state.events.append("extend")
        return True


@dataclass
class FakeState:
    held: set[str] = field(default_factory=set)
    wake: set[str] = field(default_factory=set)
    done: list[tuple[str, str]] = field(default_factory=list)
    events: list[str] = field(default_factory=list)
    lose_locks: bool = False
    relay_queued: bool = False

    def session_lock(self, session_id: str) -> FakeLock:
        return FakeLock(self, session_id)

    def set_wake(self, session_id: str) -> None:
        self.wake.add(session_id)

    def take_wake(self, session_id: str) -> bool:
        self.events.append("take_wake")
        was = session_id in self.wake
        self.wake.discard(session_id)
        return was

    def has_wake(self, session_id: str) -> bool:
        return session_id in self.wake

    def after_commit(self, done: Sequence[tuple[str, str]], relay: bool) -> bool:
        self.done.extend(done)
        first = relay and not self.relay_queued
        self.relay_queued = self.relay_queued or relay
        return first


def inbox_row(n: int, more: bool) -> InboxRow:
    return InboxRow(
        n, "t", f"m-{n}", "command", "X", "s", None, None, None, b"{}", (), 0, n, 0, False, more
    )


@dataclass
class FakeProcessor:
    """Serves the session's rows in order; `during` runs after the given row is processed."""

    rows: list[InboxRow]
    during: dict[int, Callable[[], None]] = field(default_factory=dict)
    processed: list[int] = field(default_factory=list)

    @property
    def store(self) -> FakeProcessor:
        return self

    @contextmanager
    def session(self) -> Iterator[None]:
        yield

    def begin_next(self, session_id: str) -> InboxRow | None:
        return self.rows.pop(0) if self.rows else None

    def process_row(self, row: InboxRow) -> Outcome:
        self.processed.append(row.id)
        self.during.get(row.id, lambda: None)()
        return Outcome(Status.PROCESSED, row.message_id, "s", wrote_outbox=True)


def worker(agent: FakeProcessor, state: FakeState, relays: list[int]) -> SessionWorker:
    return SessionWorker(agent, state, lambda: relays.append(1))  # type: ignore[arg-type]


def test_rows_are_processed_in_order_and_marked_done_after_each_commit() -> None:
    agent = FakeProcessor([inbox_row(1, more=True), inbox_row(2, more=False)])
    state, relays = FakeState(), []
    result = worker(agent, state, relays).drain("s")
    assert agent.processed == [1, 2]
    assert state.done == [("t", "m-1"), ("t", "m-2")]
    assert (result.busy, result.relay_requested, relays) == (False, True, [1])  # one relay run
    assert state.events == ["acquire", "take_wake", "extend", "release"]
    assert state.held == set()


def test_a_trigger_arriving_while_locked_is_not_lost() -> None:
    state, relays = FakeState(), []
    late = inbox_row(2, more=False)

    def newcomer() -> None:
        # Another task is triggered for the session meanwhile: it finds the lock taken.
        agent.rows.append(late)
        assert worker(FakeProcessor([]), state, []).drain("s").busy

    agent = FakeProcessor([inbox_row(1, more=False)], during={1: newcomer})
    worker(agent, state, relays).drain("s")
    # The holder saw the newcomer's wake flag after releasing and took a second pass.
    assert agent.processed == [1, 2]
    assert state.wake == set()


def test_a_lost_lock_is_logged_not_raised() -> None:
    agent = FakeProcessor([inbox_row(1, more=False)])
    state = FakeState(lose_locks=True)
    with capture_logs() as logs:
        assert len(worker(agent, state, []).drain("s").outcomes) == 1
    assert [e["event"] for e in logs if e["log_level"] == "warning"] == [
        "orchestrator_session_lock_lost"
    ]


# -- the consumer loop -----------------------------------------------------------------------


def message(offset: int, partition: int = 0) -> RawMessage:
    return RawMessage("t", b"{}", b"k", (), partition, offset)


@dataclass
class FakeSource:
    batches: list[list[RawMessage]]
    stop: threading.Event
    events: list[Any] = field(default_factory=list)
    revoke: Callable[[list[Partition]], None] | None = None

    def subscribe(
        self, topics: Sequence[str], on_revoke: Callable[[list[Partition]], None]
    ) -> None:
        self.revoke = on_revoke
        self.events.append(("subscribe", list(topics)))

    def next_batch(self, max_messages: int, timeout_s: float) -> list[RawMessage]:
        if not self.batches:
            self.stop.set()
            return []
        return self.batches.pop(0)

    def idle(self, timeout_s: float) -> None:
        self.events.append("idle")
        self.stop.set()

    def pause(self) -> None:
        self.events.append("pause")

    def resume(self) -> None:
        self.events.append("resume")

    def store_offsets(self, messages: Sequence[RawMessage]) -> None:
        self.events.append(("store", [m.offset for m in messages]))

    def seek(self, topic: str, partition: int, offset: int) -> None:
        self.events.append(("seek", partition, offset))

    def close(self) -> None:
        self.events.append("close")


def ingester(handled: list[list[int | None]], failures: int = 0) -> Ingester:
    ing = Ingester(None, None, None, lambda *_: None, lambda: None, "t")  # type: ignore[arg-type]
    left = [failures]

    def handle_batch(raws: Sequence[RawMessage]) -> BatchResult:
        if left[0]:
            left[0] -= 1
            raise TransientError("database unavailable: gone")
        handled.append([r.offset for r in raws])
        return BatchResult(received=len(raws))

    ing.handle_batch = handle_batch  # type: ignore[method-assign]
    return ing


def test_offsets_are_stored_after_the_batch_and_gaps_are_read_again() -> None:
    stop = threading.Event()
    handled: list[list[int | None]] = []
    ing = ingester(handled)
    ing.gaps.expect("t", 0, 0)
    # Offsets 2-3 skipped on partition 0; partition 1 reads on.
    source = FakeSource([[message(0), message(1), message(4), message(0, 1)]], stop)
    ing.run(source, ["t"], stop)  # type: ignore[arg-type]
    assert handled == [[0, 1, 0]]
    assert source.events == [
        ("subscribe", ["t"]),
        ("store", [0, 1, 0]),
        ("seek", 0, 2),
        "close",
    ]


def test_a_batch_is_kept_while_the_inbox_is_away() -> None:
    stop = threading.Event()
    handled: list[list[int | None]] = []
    source = FakeSource([[message(0)]], stop)
    ingester(handled, failures=2).run(source, ["t"], stop)  # type: ignore[arg-type]
    assert handled == [[0]]
    assert ("store", [0]) in source.events


def test_a_revoked_partition_sets_a_new_baseline() -> None:
    stop = threading.Event()
    ing = ingester([])
    ing.gaps.expect("t", 0, 5)
    source = FakeSource([], stop)
    ing.run(source, ["t"], stop)  # type: ignore[arg-type]
    assert source.revoke is not None
    source.revoke([("t", 0)])
    assert ing.gaps.expected() == {}


def test_backpressure_pauses_while_the_queue_is_long_and_holds_while_unknown() -> None:
    stop = threading.Event()
    source = FakeSource([], stop)

    def redis_away() -> int:
        raise TransientError("redis unavailable: gone")

    ing = ingester([])
    # Redis cannot say: the loop reads on rather than failing.
    ing.run(source, ["t"], stop, max_queue_length=10, queue_length=redis_away)  # type: ignore[arg-type]
    assert source.events == [("subscribe", ["t"]), "close"]
    assert _length_or_none(redis_away) is None
    assert ing._backpressure(source, False, None, 10) is False  # unknown: hold still
    assert ing._backpressure(source, False, 11, 10) is True
    assert ing._backpressure(source, True, 9, 10) is True  # above 80 % of the limit
    assert ing._backpressure(source, True, 8, 10) is False
    assert source.events[-2:] == ["pause", "resume"]
