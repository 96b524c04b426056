"""Input for the fault scenarios: a steady stream of commands across many sessions, and a tap on
the capability results (to deliver them a second time, or to send them again after the broker
lost its memory).

Every message is produced with a delivery report; a message the broker did not take is produced
again, so the input itself is never what gets lost.
"""

from __future__ import annotations

import heapq
import random
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition

from tests.support.harness import command

# (command type, payload, weight): generations of five kinds and stage validations.
COMMAND_MIX: tuple[tuple[str, dict[str, Any], int], ...] = (
    ("Character.Request", {"name": "Ada"}, 3),
    ("Theme.Request", {"name": "exile"}, 2),
    ("World.Request", {"name": "Tessaly"}, 2),
    ("Plot.Request", {"name": "the return"}, 2),
    ("Details.Request", {"name": "chapter one"}, 1),
    ("Stage.Validate", {"stage": "characters"}, 2),
)


@dataclass(frozen=True)
class Sent:
    """One command as produced (the same bytes are used for every copy)."""

    event_id: str
    session_id: str
    correlation_id: str
    command_type: str
    value: bytes
    at: float  # monotonic time of the first produce

    @property
    def key(self) -> bytes:
        return self.session_id.encode()


def _producer(bootstrap: str) -> Producer:
    return Producer(
        {
            "bootstrap.servers": bootstrap,
            "linger.ms": 1,
            "message.timeout.ms": 10_000,
            # Input waits for `orchestrator topics create` after a broker restart, as in
            # production (no auto-creation); the broker would make four partitions.
            "allow.auto.create.topics": False,
            "log_level": 2,
        }
    )


class Resender:
    """A producer that produces again whatever the broker did not acknowledge."""

    def __init__(self, bootstrap: str) -> None:
        self.producer = _producer(bootstrap)
        self._lock = threading.Lock()
        self._failed: list[tuple[str, bytes, bytes | None, list[tuple[str, bytes]]]] = []
        self.produced = 0
        self.redelivered = 0

    def produce(
        self,
        topic: str,
        value: bytes,
        key: bytes | None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> None:
        hdrs = list(headers or [])

        def on_delivery(err: KafkaError | None, _msg: Any) -> None:
            if err is not None:
                with self._lock:
                    self._failed.append((topic, value, key, hdrs))

        while True:
            try:
                self.producer.produce(
                    topic,
                    value=value,
                    key=key,
                    headers=list(hdrs),
                    on_delivery=on_delivery,
                )
                break
            except BufferError:
                self.producer.poll(0.05)
        self.produced += 1
        self.producer.poll(0)

    def retry_failed(self) -> int:
        self.producer.poll(0)
        with self._lock:
            failed, self._failed = self._failed, []
        for topic, value, key, headers in failed:
            self.redelivered += 1
            self.produce(topic, value, key, headers)
        return len(failed)

    def settled(self) -> bool:
        """Every message produced so far is acknowledged."""
        self.producer.flush(0.5)
        self.retry_failed()
        return len(self.producer) == 0 and not self._failed

    def close(self) -> None:
        self.producer.flush(5)


class Load:
    """`commands` commands over `sessions` sessions at `rate` per second, on a thread.

    With `duplicates`, every command is produced a second time (same bytes) after a random delay
    of up to `duplicate_delay_s`. `on_sent` sees each first copy (scenarios add hand-made
    input).
    """

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        rng: random.Random,
        *,
        commands: int,
        rate: float,
        sessions: int,
        duplicates: bool = False,
        duplicate_delay_s: float = 2.0,
        mix: tuple[tuple[str, dict[str, Any], int], ...] = COMMAND_MIX,
        on_sent: Callable[[Sent], None] | None = None,
    ) -> None:
        self.topic = topic
        self.rng = random.Random(rng.random())
        self.commands = commands
        self.rate = rate
        self.session_ids = [
            str(uuid.uuid5(uuid.NAMESPACE_URL, f"s{self.rng.random()}")) for _ in range(sessions)
        ]
        self.duplicates = duplicates
        self.duplicate_delay_s = duplicate_delay_s
        self.mix = mix
        self.on_sent = on_sent
        self.out = Resender(bootstrap)
        self.sent: list[Sent] = []
        self.copies = 0
        self.started_at: float | None = None
        self.finished_at: float | None = None
        self._later: list[tuple[float, int]] = []  # (due, index into sent) second copies
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="load", daemon=True)
        self.error: BaseException | None = None

    @property
    def duration_s(self) -> float:
        return self.commands / self.rate

    def start(self) -> None:
        self.started_at = time.monotonic()
        self._thread.start()

    def done(self) -> bool:
        return self.finished_at is not None

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)

    def _pick(self) -> tuple[str, dict[str, Any]]:
        types, payloads, weights = zip(*self.mix, strict=True)
        i = self.rng.choices(range(len(types)), weights=weights)[0]
        return types[i], dict(payloads[i])

    def _run(self) -> None:
        try:
            assert self.started_at is not None
            for i in range(self.commands):
                due = self.started_at + i / self.rate
                self._wait_until(due)
                if self._stop.is_set():
                    return
                self._send_one()
            while self._later and not self._stop.is_set():
                self._wait_until(self._later[0][0])
            self.finished_at = time.monotonic()
            self.out.producer.flush(1)
        except Exception as exc:  # reported by the run, not lost in a thread
            self.error = exc

    def _wait_until(self, due: float) -> None:
        while not self._stop.is_set():
            now = time.monotonic()
            while self._later and self._later[0][0] <= now:
                _, index = heapq.heappop(self._later)
                s = self.sent[index]
                self.out.produce(self.topic, s.value, s.key)
                self.copies += 1
            self.out.retry_failed()
            if now >= due:
                return
            time.sleep(min(0.005, due - now))

    def _send_one(self) -> None:
        session = self.rng.choice(self.session_ids)
        command_type, payload = self._pick()
        event_id = str(uuid.UUID(int=self.rng.getrandbits(128), version=4))
        corr = str(uuid.UUID(int=self.rng.getrandbits(128), version=4))
        value = orjson.dumps(command(session, command_type, payload, corr, event_id))
        s = Sent(event_id, session, corr, command_type, value, time.monotonic())
        self.sent.append(s)
        self.out.produce(self.topic, value, s.key)
        self.copies += 1
        if self.duplicates:
            delay = 0.0 if self.rng.random() < 0.3 else self.rng.uniform(0, self.duplicate_delay_s)
            heapq.heappush(self._later, (time.monotonic() + delay, len(self.sent) - 1))
        if self.on_sent is not None:
            self.on_sent(s)

    def resend_all(self) -> int:
        """Produce every command sent so far once more (after the broker lost them)."""
        sent = list(self.sent)
        for s in sent:
            self.out.produce(self.topic, s.value, s.key)
            self.copies += 1
        return len(sent)

    def settled(self) -> bool:
        return self.done() and self.out.settled()

    def close(self) -> None:
        self.stop()
        self.out.close()


@dataclass
class Result:
    """A capability result as the simulator produced it."""

    message_id: str
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]


@dataclass
class Tap:
    """Reads every capability result from the beginning of its topic, on a thread.

    With `duplicates`, produces each result once more (same bytes) after a random delay of up
    to `delay_s`; `resend_all()` produces every result seen so far again (after a broker
    restart). Results this tap produced itself are recognised by their id and not copied again.
    """

    bootstrap: str
    topic: str
    rng: random.Random
    duplicates: bool = False
    delay_s: float = 1.0
    results: dict[str, Result] = field(default_factory=dict)
    copies: int = 0
    error: Exception | None = None

    def __post_init__(self) -> None:
        self.rng = random.Random(self.rng.random())
        self.out = Resender(self.bootstrap)
        self._later: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._reset = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tap", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)
        self.out.close()

    def reconnect(self) -> None:
        """Read the topic from its (new) beginning: the broker was restarted."""
        self._reset.set()

    def resend_all(self) -> int:
        results = list(self.results.values())
        for r in results:
            self.out.produce(self.topic, r.value, r.key, r.headers)
            self.copies += 1
        return len(results)

    def pending(self) -> int:
        return len(self._later)

    def _consumer(self) -> Consumer:
        consumer = Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                "group.id": f"tap-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 10,
                "log_level": 2,
            }
        )
        consumer.assign([TopicPartition(self.topic, 0, OFFSET_BEGINNING)])
        return consumer

    def _run(self) -> None:
        try:
            self._loop()
        except Exception as exc:  # reported by the run, not lost in a thread
            self.error = exc

    def _loop(self) -> None:
        consumer = self._consumer()
        try:
            while not self._stop.is_set():
                if self._reset.is_set():
                    self._reset.clear()
                    consumer.close()
                    consumer = self._consumer()
                for m in consumer.consume(500, 0.02):
                    value = m.value()
                    if m.error() is not None or not isinstance(value, bytes):
                        continue
                    try:
                        mid = str(orjson.loads(value)["id"])
                    except (orjson.JSONDecodeError, KeyError, TypeError):
                        continue
                    if mid in self.results:
                        continue
                    headers = [
                        (str(k), v if isinstance(v, bytes) else (v or "").encode())
                        for k, v in list[Any](m.headers() or [])
                    ]
                    key = m.key()
                    self.results[mid] = Result(
                        mid, key if isinstance(key, bytes) else None, value, headers
                    )
                    if self.duplicates:
                        delay = (
                            0.0 if self.rng.random() < 0.3 else self.rng.uniform(0, self.delay_s)
                        )
                        heapq.heappush(self._later, (time.monotonic() + delay, mid))
                now = time.monotonic()
                while self._later and self._later[0][0] <= now:
                    _, mid = heapq.heappop(self._later)
                    r = self.results[mid]
                    self.out.produce(self.topic, r.value, r.key, r.headers)
                    self.copies += 1
                self.out.retry_failed()
        finally:
            consumer.close()
