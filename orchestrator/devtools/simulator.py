"""A capability-service simulator for tests, the demo and the benchmark.

It consumes the `*.tasks` topics and answers on the capability topic in the wire contract:
generations get content, quality reviews get scores from a configurable sequence (per
correlation and target, so a session can be made to regenerate), consistency checks pass or
fail. It can also stay silent for some types (to fire timeouts), add latency, or answer some
requests with malformed results. It stands in for services outside the orchestrator, so it
produces to Kafka directly.

Like a well-behaved service it deduplicates on the request's id (the wire contract's
at-least-once delivery): a copy of a request it already answered (a relay that published a
batch again, a redelivery after a rebalance) gets no second answer, and its answer's id is
derived from the request's id, so even a copy seen after the memory of answered ids moved on
is answered under the same id, which the orchestrator's inbox absorbs.
"""

from __future__ import annotations

import heapq
import random
import threading
import time
import uuid
from collections import OrderedDict, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from orchestrator.core.catalogue import (
    CONSISTENCY_CHECK_REQUEST,
    QUALITY_REVIEW_REQUEST,
    RESULT_TYPE_OF_REQUEST,
    task_topics,
)
from orchestrator.core.ids import derive
from orchestrator.core.offset_gaps import OffsetGapGuard
from orchestrator.observability.logs import get_logger

log = get_logger("orchestrator.simulator")

RESULT_TYPES = RESULT_TYPE_OF_REQUEST
# Request ids remembered to drop copies; older ones fall back on the derived answer id.
ANSWERED_MEMORY = 100_000
TASK_TOPICS = tuple(task_topics())


@dataclass
class SimulatorConfig:
    scores: Sequence[float] = (8.0,)
    consistency_ok: bool = True
    latency_ms: float = 0.0
    silent_types: frozenset[str] = frozenset()
    malformed_rate: float = 0.0
    report_attempts: bool = False
    seed: int | None = None


@dataclass
class Answer:
    due: float
    topic: str
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]] = field(default_factory=list)

    def __lt__(self, other: Answer) -> bool:
        return self.due < other.due


class CapabilitySimulator:
    def __init__(self, config: SimulatorConfig, result_topic: str) -> None:
        self.config = config
        self.result_topic = result_topic
        self.reviews: dict[tuple[str, str], int] = defaultdict(int)
        self.rng = random.Random(config.seed)
        self.answered = 0
        self.received = 0
        self.duplicates = 0
        self._answered_ids: OrderedDict[str, None] = OrderedDict()

    def answer(
        self, value: bytes | None, key: bytes | None, now: float, traceparent: bytes | None = None
    ) -> Answer | None:
        """The answer to one request, or None (silent type, or not a request we know)."""
        self.received += 1
        try:
            req = orjson.loads(value or b"")
            req_type, data = req["type"], req["data"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return None
        result_type = RESULT_TYPES.get(req_type)
        if result_type is None or req_type in self.config.silent_types:
            return None
        request_id = req.get("id")
        if isinstance(request_id, str) and request_id:
            if request_id in self._answered_ids:
                self.duplicates += 1
                return None
            self._remember(request_id)
        out = {
            "session_id": data.get("session_id"),
            "correlation_id": data.get("correlation_id"),
            **self._result(req_type, data),
        }
        body = {
            "id": derive(request_id, "answer")
            if isinstance(request_id, str) and request_id
            else str(uuid.uuid4()),
            "ts": datetime.now(UTC).isoformat(),
            "type": result_type,
            "data": out,
        }
        raw = orjson.dumps(body)
        if self.config.malformed_rate and self.rng.random() < self.config.malformed_rate:
            raw = raw[: len(raw) // 2]
        self.answered += 1
        headers = [
            ("type", result_type.encode()),
            ("correlation_id", str(data.get("correlation_id") or "").encode()),
        ]
        if traceparent:  # a service answers within the trace of the request
            headers.append(("traceparent", traceparent))
        return Answer(now + self.config.latency_ms / 1000.0, self.result_topic, key, raw, headers)

    def _remember(self, request_id: str) -> None:
        self._answered_ids[request_id] = None
        if len(self._answered_ids) > ANSWERED_MEMORY:
            self._answered_ids.popitem(last=False)

    def _result(self, req_type: str, data: dict[str, Any]) -> dict[str, Any]:
        if req_type == QUALITY_REVIEW_REQUEST:
            target = str(data.get("target_type") or "content")
            k = (str(data.get("correlation_id")), target)
            n = self.reviews[k]
            self.reviews[k] = n + 1
            scores = self.config.scores
            result: dict[str, Any] = {
                "score": scores[min(n, len(scores) - 1)],
                "target_type": target,
            }
            if self.config.report_attempts:
                result["attempts"] = n
            return result
        if req_type == CONSISTENCY_CHECK_REQUEST:
            ok = self.config.consistency_ok
            return {"ok": ok, "score": 1.0 if ok else 0.0, "issues": [] if ok else ["conflict"]}
        inp = data.get("input") or {}
        kind = req_type.split(".")[0]
        return {
            "name": inp.get("name", kind.lower()),
            "attempt": inp.get("attempt", 0),
            "text": f"{kind} draft {inp.get('attempt', 0)} for {inp.get('name', 'session')}",
        }

    def run(
        self, consumer: Any, producer: Any, topics: Sequence[str], stop: threading.Event
    ) -> None:
        from confluent_kafka import TopicPartition

        gaps = OffsetGapGuard()  # a request the broker let it skip would never be answered
        ready: list[float] = []
        began = time.monotonic()

        def assigned(_c: Any, parts: list[Any]) -> None:
            if not ready:  # the first assignment: requests are read from now on
                ready.append(time.monotonic() - began)
                log.info(
                    "orchestrator_simulator_ready",
                    partitions=len(parts),
                    after_s=round(ready[0], 3),
                )

        consumer.subscribe(
            list(topics),
            on_assign=assigned,
            on_revoke=lambda _c, parts: gaps.forget((p.topic, p.partition) for p in parts),
        )
        pending: list[Answer] = []
        try:
            while not stop.is_set():
                timeout = 0.02 if pending else 0.1
                msgs = [m for m in consumer.consume(500, timeout) if m.error() is None]
                keep, found = gaps.admit([(m.topic(), m.partition(), m.offset()) for m in msgs])
                for gap in found:
                    log.warning("orchestrator_simulator_gap", topic=gap.topic, attempt=gap.attempt)
                    if not gap.accepted:
                        consumer.seek(TopicPartition(gap.topic, gap.partition, gap.missing_from))
                for msg in (msgs[i] for i in keep):
                    tp = dict(msg.headers() or []).get("traceparent")
                    a = self.answer(msg.value(), msg.key(), time.monotonic(), tp)
                    if a is not None:
                        heapq.heappush(pending, a)
                now = time.monotonic()
                while pending and pending[0].due <= now:
                    a = heapq.heappop(pending)
                    producer.produce(a.topic, value=a.value, key=a.key, headers=a.headers)
                producer.poll(0)
        finally:
            producer.flush(5)
            consumer.close()


def run_simulator(
    settings: Any,
    config: SimulatorConfig,
    stop: threading.Event,
    group: str = "genesis-capability-simulator",
    topics: Sequence[str] = TASK_TOPICS,
) -> CapabilitySimulator:
    """Answer until `stop` is set. A broker that does not answer within
    `settings.kafka_connect_timeout_s` raises `KafkaUnreachable` (naming it) before anything
    is subscribed; its connection errors are logged once per backoff step meanwhile."""
    from confluent_kafka import Consumer, Producer

    from orchestrator.adapters.kafka.connectivity import wait_for_metadata, watched

    common = settings.kafka_common()
    bootstrap = settings.kafka_bootstrap_servers
    consumer_watch = watched(bootstrap)
    consumer = Consumer(
        {
            **common,
            **consumer_watch,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "fetch.wait.max.ms": settings.kafka_fetch_wait_max_ms,
            "session.timeout.ms": settings.kafka_session_timeout_ms,
            "heartbeat.interval.ms": settings.kafka_heartbeat_interval_ms,
        }
    )
    # Like every producer of this project, it never lets the broker create a topic its own way.
    producer = Producer(
        {
            **common,
            **watched(bootstrap),
            "linger.ms": 1,
            "allow.auto.create.topics": False,
        }
    )
    sim = CapabilitySimulator(config, settings.capability_topic)
    try:
        timeout = float(getattr(settings, "kafka_connect_timeout_s", 15.0))
        answered = wait_for_metadata(consumer, consumer_watch["error_cb"], bootstrap, timeout, stop)
    except BaseException:
        consumer.close()
        raise
    if answered is None:  # stopped while waiting
        consumer.close()
        return sim
    log.info("orchestrator_simulator_started", topics=list(topics))
    prefix = getattr(settings, "task_topic_prefix", "")
    sim.run(consumer, producer, [prefix + t for t in topics], stop)
    return sim
