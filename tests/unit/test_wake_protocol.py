"""The no-lost-wake-up protocol of `SessionWorker.drain`, on fakes, with a second trigger
interleaved at the exact moments a lost wake-up could happen.

The holder reads a session's last row (`more` false: it will not query again), processes it
and releases the lock, then looks at the wake flag. A row committed after that last read comes
with its own trigger; that trigger finds the session locked, raises the wake flag and tries the
lock once more. Wherever the trigger lands (between the last read and the release, or between
the release and the holder's look at the flag), the row is processed by one of the two, at once,
and only once: no row waits for beat's re-drive.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest

from orchestrator.core.records import Outcome, Status
from orchestrator.service.drain import DrainResult, SessionWorker

SESSION = "s-1"


@dataclass
class Row:
    message_id: str
    topic: str = "domain"
    more: bool = False


@dataclass
class World:
    """One session's inbox, its lock and its wake flag; hooks fire at the protocol's steps."""

    committed: list[str] = field(default_factory=list)  # message ids in inbox order
    processed: list[str] = field(default_factory=list)
    holder: str | None = None
    wake: bool = False
    on_last_read: Callable[[], None] | None = None  # after a read that returned more=False
    before_release: Callable[[], None] | None = None  # lock still held, every read done
    after_release: Callable[[], None] | None = None  # lock free, wake flag not looked at yet
    log: list[str] = field(default_factory=list)

    def fire(self, name: str) -> None:
        hook = getattr(self, name)
        if hook is not None:
            setattr(self, name, None)  # once: the interleaving under test
            self.log.append(name)
            hook()


class Lock:
    def __init__(self, world: World, owner: str) -> None:
        self.world, self.owner = world, owner

    def acquire(self) -> bool:
        if self.world.holder is None:
            self.world.holder = self.owner
            return True
        return False

    def release(self) -> bool:
        self.world.fire("before_release")
        held = self.world.holder == self.owner
        if held:
            self.world.holder = None
        self.world.fire("after_release")
        return held

    def extend(self) -> bool:
        return self.world.holder == self.owner


class State:
    def __init__(self, world: World, owner: str) -> None:
        self.world, self.owner = world, owner

    def session_lock(self, session_id: str) -> Lock:
        return Lock(self.world, self.owner)

    def set_wake(self, session_id: str) -> None:
        self.world.wake = True

    def take_wake(self, session_id: str) -> bool:
        was, self.world.wake = self.world.wake, False
        return was

    def has_wake(self, session_id: str) -> bool:
        return self.world.wake

    def after_commit(self, done: Any, relay: bool) -> bool:
        return False


class Store:
    def __init__(self, world: World) -> None:
        self.world = world

    @contextmanager
    def session(self) -> Iterator[None]:
        yield

    def begin_next(self, session_id: str) -> Row | None:
        waiting = [m for m in self.world.committed if m not in self.world.processed]
        if not waiting:
            return None
        return Row(waiting[0], more=len(waiting) > 1)


class Processor:
    def __init__(self, world: World) -> None:
        self.world = world
        self.store = Store(world)

    def process_row(self, row: Row) -> Outcome:
        assert self.world.holder is not None, "a row processed without the lock"
        assert row.message_id not in self.world.processed, "a row processed twice"
        self.world.processed.append(row.message_id)
        if not row.more:
            self.world.fire("on_last_read")
        return Outcome(Status.PROCESSED, message_id=row.message_id, session_id=SESSION)


def worker(world: World, owner: str, cls: type[SessionWorker] = SessionWorker) -> SessionWorker:
    return cls(Processor(world), State(world, owner), lambda: None)  # type: ignore[arg-type]


MOMENTS = ("on_last_read", "before_release", "after_release")


def run_race(moment: str, cls: type[SessionWorker] = SessionWorker) -> World:
    """The holder drains m-1; at `moment` m-2 is committed and its trigger runs to its end."""
    world = World(committed=["m-1"])
    second: list[Any] = []

    def commit_and_trigger() -> None:
        world.committed.append("m-2")
        second.append(worker(world, "trigger-2", cls).drain(SESSION))

    setattr(world, moment, commit_and_trigger)
    first = worker(world, "holder", cls).drain(SESSION)
    assert world.log == [moment], "the interleaving did not happen"
    world.log.append(f"holder busy={first.busy}, trigger busy={second[0].busy}")
    return world


@pytest.mark.parametrize("moment", MOMENTS)
def test_a_trigger_landing_while_the_holder_finishes_loses_no_row(moment: str) -> None:
    world = run_race(moment)
    assert world.processed == ["m-1", "m-2"], world.log
    assert world.holder is None and world.wake is False


def test_the_trigger_that_finds_the_lock_taken_leaves_the_row_to_the_holder() -> None:
    """Between the last read and the release the trigger cannot get the lock: it only raises
    the flag, and the holder goes round once more."""
    world = run_race("before_release")
    assert world.log[-1] == "holder busy=False, trigger busy=True"
    assert world.processed == ["m-1", "m-2"]


def test_without_the_second_look_the_row_waits_for_the_re_drive() -> None:
    """The race is real: a drain that does not look at the wake flag after releasing (the
    protocol minus its second half) leaves m-2 unprocessed, which the tests above would catch."""

    class NoSecondLook(SessionWorker):
        def drain(self, session_id: str) -> DrainResult:
            result = DrainResult()
            lock = self.state.session_lock(session_id)
            if not lock.acquire():
                self.state.set_wake(session_id)
                if not lock.acquire():
                    result.busy = True
                    return result
            try:
                self._drain_locked(session_id, lock, result)
            finally:
                lock.release()
            return result

    world = run_race("before_release", NoSecondLook)
    assert world.processed == ["m-1"]
