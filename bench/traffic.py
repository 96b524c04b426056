"""Commands in, facts and capability messages out: the load generator and the stopwatch.

The producer sends `Genesis.Session.Command.Received` commands to the domain topic. A reader
thread (assign(), no group join) consumes the domain topic and the task topics and notes, per
command, when its `*.Requested` fact and its capability message arrived (both carry the
command's id in their `causation_id` header). A command is complete when both have arrived.

Two drivers:

* closed loop (`run_closed`): at most `window` commands in flight; the throughput is the number
  of commands over the time from the first send to the last completion;
* open loop (`run_open`): one command every 1/rate seconds on a fixed schedule, whatever the
  completions; the latency of a command counts from its scheduled send time, so a producer that
  falls behind cannot hide queueing (no coordinated omission).
"""

from __future__ import annotations

import math
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

COMMAND_TYPES = ("Character.Request", "Theme.Request", "World.Request", "Plot.Request")
# The task topics those commands' capability messages go to (genesis.<base>.tasks).
TASK_BASES = ("character", "outline", "world", "plot")


# librdkafka log level of the benchmark's own clients: warnings and errors only (a broker closing
# an idle connection is logged at level 6).
QUIET = 4
# Without any completion for this long, commands still pending are checked (`Recover`).
RECOVER_AFTER_S = 10.0


class Stalled(RuntimeError):
    """The pipeline stopped completing commands before the deadline."""


@dataclass(frozen=True)
class Command:
    event_id: str
    session_id: str
    correlation_id: str
    value: bytes


def make_commands(n: int, sessions: int, tag: str) -> list[Command]:
    """`n` commands spread round-robin over `sessions` new sessions, types in rotation."""
    session_ids = [f"bench-{tag}-{uuid.uuid4().hex[:12]}" for _ in range(max(1, sessions))]
    out = []
    for i in range(n):
        sid = session_ids[i % len(session_ids)]
        event_id, correlation_id = str(uuid.uuid4()), str(uuid.uuid4())
        doc = {
            "event_id": event_id,
            "event_type": "Genesis.Session.Command.Received",
            "aggregate_type": "GenesisSession",
            "aggregate_id": sid,
            "payload": {
                "command_type": COMMAND_TYPES[i % len(COMMAND_TYPES)],
                "user_id": "bench-user",
                "payload": {"name": f"Ada {i}", "traits": ["curious", "stubborn"]},
            },
            "metadata": {"correlation_id": correlation_id, "causation_id": None},
            "created_at": "2026-11-29T12:00:00Z",
        }
        out.append(Command(event_id, sid, correlation_id, orjson.dumps(doc)))
    return out


def header(msg: Any, name: str) -> str | None:
    """A Kafka message's header as text (None when absent)."""
    for k, v in msg.headers() or []:
        if k == name and v is not None:
            return v.decode() if isinstance(v, bytes) else str(v)
    return None


@dataclass
class Tracker:
    """Reads the output topics in a thread; records arrival times per causing command."""

    kafka_conf: dict[str, Any]
    domain_topic: str
    task_topics: Sequence[str]
    sent: dict[str, float] = field(default_factory=dict)
    sent_wall: dict[str, float] = field(default_factory=dict)
    fact_at: dict[str, float] = field(default_factory=dict)
    cap_at: dict[str, float] = field(default_factory=dict)
    done_at: dict[str, float] = field(default_factory=dict)
    # Commands completed without the reader seeing both messages: cause -> why.
    anomalies: dict[str, str] = field(default_factory=dict)
    offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    gaps: list[tuple[str, int, int]] = field(default_factory=list)
    received: int = 0

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._expected: set[str] = set()
        self._slots: threading.Semaphore | None = None
        self._all_done = threading.Event()
        self._stop = threading.Event()
        self._consumer = Consumer(
            {
                **self.kafka_conf,
                "group.id": f"bench-reader-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 10,
                "log_level": QUIET,
            }
        )
        topics = [self.domain_topic, *self.task_topics]
        self._consumer.assign([TopicPartition(t, 0, OFFSET_BEGINNING) for t in topics])
        self._thread = threading.Thread(target=self._run, name="bench-reader", daemon=True)
        self._thread.start()

    # -- the reader thread -------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            # Block for the first message only: consume(n, timeout) would wait for n messages
            # or the whole timeout, adding up to the timeout to every measured latency.
            first = self._consumer.poll(0.05)
            if first is None:
                continue
            now = time.perf_counter()
            msgs = [first, *self._consumer.consume(1000, 0)]
            for m in msgs:
                if m.error() is not None:
                    continue
                self.received += 1
                tp, offset = (str(m.topic()), int(m.partition() or 0)), int(m.offset() or 0)
                last = self.offsets.get(tp)
                if last is not None and offset != last + 1:
                    self.gaps.append((tp[0], last, offset))
                self.offsets[tp] = offset
                cause = header(m, "causation_id")
                if cause is None:
                    continue  # our own command on the domain topic
                fact = m.topic() == self.domain_topic
                (self.fact_at if fact else self.cap_at).setdefault(cause, now)
                if cause in self.fact_at and cause in self.cap_at and cause not in self.done_at:
                    self._complete(cause, max(self.fact_at[cause], self.cap_at[cause]))

    def _complete(self, cause: str, at: float) -> None:
        with self._lock:
            self.done_at[cause] = at
            if cause in self._expected:
                self._expected.discard(cause)
                if self._slots is not None:
                    self._slots.release()
                if not self._expected:
                    self._all_done.set()

    def resolve(self, cause: str, why: str) -> None:
        """Settle a command whose messages the reader did not both see (see `Recover`)."""
        if cause not in self.done_at:
            self.anomalies[cause] = why
            self._complete(cause, time.perf_counter())

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._consumer.close()

    # -- bookkeeping for a phase ---------------------------------------------------------------

    def expect(self, ids: Iterable[str], slots: threading.Semaphore | None) -> None:
        with self._lock:
            self._expected = {i for i in ids if i not in self.done_at}
            self._slots = slots
            if self._expected:
                self._all_done.clear()
            else:
                self._all_done.set()

    def pending_ids(self) -> list[str]:
        with self._lock:
            return sorted(self._expected)

    def pending(self) -> int:
        with self._lock:
            return len(self._expected)

    def wait_done(self, timeout: float) -> bool:
        return self._all_done.wait(timeout)


@dataclass
class PhaseResult:
    commands: int
    elapsed_s: float
    latencies_ms: list[float]
    send_lateness_ms: float = 0.0

    @property
    def rate(self) -> float:
        return self.commands / self.elapsed_s if self.elapsed_s > 0 else 0.0


def command_producer(kafka_conf: dict[str, Any]) -> Producer:
    return Producer({**kafka_conf, "linger.ms": 1, "acks": "all", "log_level": QUIET})


def _send(producer: Producer, topic: str, cmd: Command) -> None:
    while True:
        try:
            producer.produce(topic, value=cmd.value, key=cmd.session_id.encode())
            producer.poll(0)
            return
        except BufferError:
            producer.poll(0.01)


Recover = Callable[[list[str]], None]


def run_closed(
    tracker: Tracker,
    producer: Producer,
    commands: Sequence[Command],
    window: int,
    stall_s: float,
    check: Any = None,
    recover: Recover | None = None,
) -> PhaseResult:
    """At most `window` commands in flight; returns commands/s from first send to last done."""
    slots = threading.Semaphore(max(1, window))
    tracker.expect([c.event_id for c in commands], slots)
    topic = tracker.domain_topic
    start = time.perf_counter()
    for cmd in commands:
        if not slots.acquire(timeout=RECOVER_AFTER_S):
            if recover is not None:
                recover(tracker.pending_ids())
            if not slots.acquire(timeout=stall_s):
                raise Stalled(f"no command completed within {stall_s:.0f}s")
        tracker.sent[cmd.event_id] = time.perf_counter()
        tracker.sent_wall[cmd.event_id] = time.time()
        _send(producer, topic, cmd)
        if check is not None:
            check()
    producer.flush(30)
    _wait(tracker, stall_s, check, recover)
    elapsed = _last(tracker, commands) - start
    return PhaseResult(len(commands), elapsed, _latencies(tracker, commands))


def run_open(
    tracker: Tracker,
    producer: Producer,
    commands: Sequence[Command],
    rate: float,
    stall_s: float,
    check: Any = None,
    recover: Recover | None = None,
) -> PhaseResult:
    """One command every 1/rate s on a fixed schedule; latency counts from the schedule."""
    tracker.expect([c.event_id for c in commands], None)
    topic = tracker.domain_topic
    interval = 1.0 / rate
    start = time.perf_counter() + 0.05
    wall0 = time.time() + (start - time.perf_counter())
    late = 0.0
    for i, cmd in enumerate(commands):
        due = start + i * interval
        now = time.perf_counter()
        if due > now:
            time.sleep(due - now)
        else:
            late = max(late, now - due)
        tracker.sent[cmd.event_id] = due
        tracker.sent_wall[cmd.event_id] = wall0 + i * interval
        _send(producer, topic, cmd)
        if check is not None and i % 64 == 0:
            check()
    producer.flush(30)
    _wait(tracker, stall_s, check, recover)
    return PhaseResult(
        len(commands),
        _last(tracker, commands) - start,
        _latencies(tracker, commands),
        send_lateness_ms=late * 1000,
    )


def _wait(tracker: Tracker, stall_s: float, check: Any, recover: Recover | None) -> None:
    """Wait for every expected command. After `RECOVER_AFTER_S` without progress, `recover`
    may settle commands whose messages the reader missed; fail when none completes for
    `stall_s`."""
    last_pending, last_progress = tracker.pending(), time.monotonic()
    recovered = False
    while tracker.pending():
        tracker.wait_done(0.2)
        if check is not None:
            check()
        pending = tracker.pending()
        idle = time.monotonic() - last_progress
        if pending < last_pending:
            last_pending, last_progress, recovered = pending, time.monotonic(), False
        elif recover is not None and not recovered and idle > RECOVER_AFTER_S:
            recovered = True
            recover(tracker.pending_ids())
        elif idle > stall_s:
            raise Stalled(f"{pending} command(s) made no progress for {stall_s:.0f}s")


def _settled(tracker: Tracker, commands: Sequence[Command]) -> list[Command]:
    """The commands whose completion time was observed (not settled by `recover`)."""
    return [c for c in commands if c.event_id not in tracker.anomalies]


def _last(tracker: Tracker, commands: Sequence[Command]) -> float:
    return max(tracker.done_at[c.event_id] for c in _settled(tracker, commands))


def _latencies(tracker: Tracker, commands: Sequence[Command]) -> list[float]:
    return [
        (tracker.done_at[c.event_id] - tracker.sent[c.event_id]) * 1000
        for c in _settled(tracker, commands)
    ]


def reread(
    kafka_conf: dict[str, Any], topics: Sequence[str], causes: set[str]
) -> list[tuple[str, str, int]]:
    """Read `topics` again from the beginning with a new consumer: (cause, topic, offset) of
    every message caused by one of `causes` (tells a message the broker never had from one
    the reader missed)."""
    consumer = Consumer(
        {
            **kafka_conf,
            "group.id": f"bench-reread-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "log_level": QUIET,
        }
    )
    consumer.assign([TopicPartition(t, 0, OFFSET_BEGINNING) for t in topics])
    found: list[tuple[str, str, int]] = []
    eof: set[str] = set()
    deadline = time.monotonic() + 30
    while len(eof) < len(topics) and time.monotonic() < deadline:
        for m in consumer.consume(1000, 0.2):
            if m.error() is not None:
                eof.add(str(m.topic()))
                continue
            cause = header(m, "causation_id")
            if cause in causes:
                found.append((cause, str(m.topic()), int(m.offset() or 0)))
    consumer.close()
    return found


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100); 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(p / 100 * len(ordered))))
    return ordered[rank - 1]
