"""`python -m bench.broker_drift`: does the test broker get slower as its log grows?

The fault suite's soaks near 20 commands/s fell behind after a few minutes (docs/reliability.md).
This runs the same shape of Kafka traffic with no orchestrator at all: producers with the relay's
settings (idempotent, short linger, small batches) write a steady rate over several
single-partition topics, and consumer groups with the ingester's fetch settings keep up and
commit after every batch. It prints the broker's CPU in each interval; a broker whose cost per
message is constant shows a flat column.

    python -m bench.broker_drift                         # 80 messages/s for 240 s
    python -m bench.broker_drift --rate 40 --seconds 120
    python -m bench.broker_drift --groups 0           # producers only
    python -m bench.broker_drift --no-commit          # consumers that commit no offsets

Embedded Tansu (memory storage) by default; `--bootstrap HOST:PORT --broker-pid PID` measures
another broker on loopback (the topics are created with a unique prefix and left behind).
"""

from __future__ import annotations

import argparse
import itertools
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

import psutil
from confluent_kafka import Consumer, Producer

from orchestrator.adapters.kafka.topics import create_topics
from orchestrator.devtools.embedded import EmbeddedKafka

VALUE = b"x" * 900  # about the size of a fact or a capability message


@dataclass
class Traffic:
    """Producers and consumer groups on their own threads, until `stop` is set."""

    bootstrap: str
    topics: list[str]
    rate: float
    producers: int
    groups: int
    commit: bool = True
    stop: threading.Event = field(default_factory=threading.Event)
    consumed: int = 0
    produced: int = 0
    _assigned: list[threading.Event] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def consumer_threads(self) -> list[threading.Thread]:
        self._assigned = [threading.Event() for _ in range(self.groups)]
        return [
            threading.Thread(target=self._consume, args=(g,), daemon=True)
            for g in range(self.groups)
        ]

    def producer_threads(self) -> list[threading.Thread]:
        return [
            threading.Thread(target=self._produce, args=(p,), daemon=True)
            for p in range(self.producers)
        ]

    def wait_assigned(self, timeout: float) -> None:
        """Every group has joined and holds its partitions: the clock starts after that."""
        deadline = time.monotonic() + timeout
        for event in self._assigned:
            if not event.wait(max(0.0, deadline - time.monotonic())):
                raise TimeoutError(f"consumer groups not assigned within {timeout:.0f} s")

    def _produce(self, index: int) -> None:
        producer = Producer(
            {
                "bootstrap.servers": self.bootstrap,
                "enable.idempotence": True,
                "linger.ms": 2,
                "allow.auto.create.topics": False,
            }
        )
        interval = self.producers / self.rate
        due = time.monotonic()
        for n in itertools.count():
            if self.stop.is_set():
                break
            topic = self.topics[(n + index) % len(self.topics)]
            producer.produce(topic, VALUE, key=f"{index}-{n % 75}".encode())
            producer.poll(0)
            with self._lock:
                self.produced += 1
            due += interval
            time.sleep(max(0.0, due - time.monotonic()))
        producer.flush(10)

    def _consume(self, group: int) -> None:
        consumer = Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                "group.id": f"drift-{uuid.uuid4().hex[:8]}-{group}",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 10,
                "auto.offset.reset": "earliest",
            }
        )
        consumer.subscribe(
            self.topics[group :: self.groups],
            on_assign=lambda _consumer, _partitions: self._assigned[group].set(),
        )
        try:
            while not self.stop.is_set():
                messages = consumer.consume(200, 0.1)
                if messages:
                    with self._lock:
                        self.consumed += len(messages)
                    if self.commit:
                        consumer.commit(asynchronous=False)
        finally:
            consumer.close()


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def measure(
    bootstrap: str, broker: psutil.Process, args: argparse.Namespace
) -> list[tuple[float, float, int]]:
    """(elapsed s, broker CPU s in the interval, messages sent so far) per interval."""
    prefix = f"drift.{uuid.uuid4().hex[:8]}"
    topics = [f"{prefix}.t{i}" for i in range(args.topics)]
    create_topics(bootstrap, topics)
    traffic = Traffic(
        bootstrap, topics, args.rate, args.producers, args.groups, commit=not args.no_commit
    )
    threads = traffic.consumer_threads()
    for t in threads:
        t.start()
    rows: list[tuple[float, float, int]] = []
    try:
        traffic.wait_assigned(60.0)
        producers = traffic.producer_threads()
        threads += producers
        for t in producers:
            t.start()
        start = time.monotonic()
        last = cpu_seconds(broker)
        while time.monotonic() - start < args.seconds:
            time.sleep(args.interval)
            now = cpu_seconds(broker)
            rows.append((time.monotonic() - start, now - last, traffic.produced))
            last = now
            print(
                f"{rows[-1][0]:6.0f} s  broker CPU {rows[-1][1]:6.2f} s in {args.interval:.0f} s"
                f"  ({100 * rows[-1][1] / args.interval:5.1f}% of a core)"
                f"  sent {traffic.produced:7d}  consumed {traffic.consumed:8d}",
                flush=True,
            )
    finally:
        traffic.stop.set()
        for t in threads:
            t.join(30)
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.broker_drift", description=__doc__)
    parser.add_argument("--rate", type=float, default=80.0, help="messages/s, all producers")
    parser.add_argument("--seconds", type=float, default=240.0)
    parser.add_argument("--interval", type=float, default=30.0)
    parser.add_argument("--topics", type=int, default=7)
    parser.add_argument("--producers", type=int, default=4)
    parser.add_argument("--groups", type=int, default=3, help="consumer groups; 0: none")
    parser.add_argument("--no-commit", action="store_true", help="consumers commit no offsets")
    parser.add_argument("--bootstrap", help="measure this broker instead of an embedded one")
    parser.add_argument("--broker-pid", type=int, help="its process, for the CPU figures")
    args = parser.parse_args(argv)
    if args.bootstrap:
        if args.broker_pid is None:
            parser.error("--bootstrap needs --broker-pid")
        measure(args.bootstrap, psutil.Process(args.broker_pid), args)
        return 0
    with EmbeddedKafka() as kafka:
        assert kafka.pid is not None
        rows = measure(kafka.bootstrap, psutil.Process(kafka.pid), args)
    if len(rows) >= 2:
        first, end = rows[0], rows[-1]
        print(
            f"broker CPU per message sent: {1000 * first[1] / max(1, first[2]):.2f} ms in the"
            f" first interval, {1000 * end[1] / max(1, end[2] - rows[-2][2]):.2f} ms in the last"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
