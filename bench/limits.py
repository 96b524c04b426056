"""The ceilings the pipeline is compared with, measured on the same servers in the same run.

* `pg_txn_per_s`: the transaction one command costs, through the real `SqlStore` and agent
  (`MessageProcessor.process_message`: inbox insert, fact, fact outbox row, AsyncTask and
  capability outbox row in a savepoint, inbox marked processed), from 1, 2 and 4 processes on a
  scratch database; the best is the limit.
* `kafka_roundtrip_msgs_per_s`: produce (the relay's producer settings: acks=all, one request
  in flight) and consume back (the ingester's fetch settings) the same messages a command
  involves: the command, its fact and its capability message, bytes and headers as the
  orchestrator writes them.
* `celery_noop_tasks_per_s`: `orchestrator.noop` tasks sent through the real Celery app (same
  Redis, same settings) to the shape's running workers, until the queue is empty and nothing is
  left unacknowledged (acks are late: a task is acknowledged after it ran).
"""

from __future__ import annotations

import multiprocessing
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from bench.traffic import QUIET, make_commands

Sample = tuple[bytes, list[tuple[str, str | bytes | None]]]


# -- PostgreSQL --------------------------------------------------------------------------------


def _pg_worker(url: str, n: int, tag: str, ready: Any, go: Any, results: Any) -> None:
    """One process: `n` commands, each its own session, through `process_message`."""
    from orchestrator.adapters.postgres.engine import make_engine
    from orchestrator.adapters.postgres.store import SqlStore
    from orchestrator.core.inbound import RawMessage
    from orchestrator.core.records import Status
    from orchestrator.observability.logs import configure_logging
    from orchestrator.service.process_message import MessageProcessor

    configure_logging("WARNING")
    engine = make_engine(url)
    agent = MessageProcessor(SqlStore(engine))
    warm = 5
    commands = make_commands(n + warm, n + warm, tag)
    raws = [
        RawMessage("genesis.domain.events", c.value, c.session_id.encode(), (), 0, i)
        for i, c in enumerate(commands)
    ]
    for raw in raws[:warm]:
        outcome = agent.process_message(raw)
        if outcome.status is not Status.PROCESSED or not outcome.fact_ids:
            raise RuntimeError(f"the command was not processed: {outcome}")
    ready.put(1)
    go.wait()
    start = time.monotonic()
    for raw in raws[warm:]:
        agent.process_message(raw)
    results.put((n, start, time.monotonic()))
    engine.dispose()


@dataclass
class PgLimit:
    best: float
    by_processes: dict[int, float]


def pg_txn_per_s(url: str, n: int, processes: Sequence[int] = (1, 2, 4)) -> PgLimit:
    ctx = multiprocessing.get_context("spawn")
    rates: dict[int, float] = {}
    for p in processes:
        ready, results, go = ctx.Queue(), ctx.Queue(), ctx.Event()
        per = max(1, n // p)
        procs = [
            ctx.Process(
                target=_pg_worker,
                args=(url, per, f"pg{p}x{i}-{uuid.uuid4().hex[:6]}", ready, go, results),
                daemon=True,
            )
            for i in range(p)
        ]
        for proc in procs:
            proc.start()
        try:
            for _ in procs:
                ready.get(timeout=120)
            go.set()
            done = [results.get(timeout=600) for _ in procs]
        finally:
            for proc in procs:
                proc.join(30)
                if proc.is_alive():
                    proc.kill()
                    proc.join(5)
        total = sum(d[0] for d in done)
        elapsed = max(d[2] for d in done) - min(d[1] for d in done)
        rates[p] = total / elapsed
    return PgLimit(max(rates.values()), rates)


def outbox_samples(url: str) -> list[Sample]:
    """One fact and one capability message as the orchestrator stored them (bytes, headers)."""
    from orchestrator.adapters.postgres.codec import decode_headers

    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            rows = list(
                conn.execute(
                    text(
                        "SELECT DISTINCT ON (kind) kind, payload, headers FROM event_outbox"
                        " WHERE kind IN ('fact', 'capability') ORDER BY kind, seq"
                    )
                )
            )
    finally:
        engine.dispose()
    return [(bytes(r.payload), [(k, v or b"") for k, v in decode_headers(r.headers)]) for r in rows]


# -- Kafka -------------------------------------------------------------------------------------


def kafka_roundtrip_msgs_per_s(
    producer_conf: dict[str, Any],
    consumer_conf: dict[str, Any],
    topic: str,
    samples: Sequence[Sample],
    n: int,
    timeout_s: float = 120.0,
) -> float:
    """Produce `n` messages (the samples in turn) and consume them back; messages per second
    from the first produce to the last message consumed."""
    consumer = Consumer(
        {**consumer_conf, "group.id": f"bench-kafka-{uuid.uuid4().hex[:8]}", "log_level": QUIET}
    )
    consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    got = 0
    last = 0.0
    finished = threading.Event()

    def read() -> None:
        nonlocal got, last
        deadline = time.monotonic() + timeout_s
        while got < n and time.monotonic() < deadline:
            first = consumer.poll(0.05)
            if first is None:
                continue
            msgs = [first, *consumer.consume(1000, 0)]
            ok = sum(1 for m in msgs if m.error() is None)
            if ok:
                got += ok
                last = time.perf_counter()
        finished.set()

    producer = Producer({**producer_conf, "log_level": QUIET})
    # Connections and metadata are set up before the clock runs.
    producer.produce(topic, value=b"warm-up", key=b"warm-up")
    producer.flush(timeout_s)
    deadline = time.monotonic() + timeout_s
    while not any(m.error() is None for m in consumer.consume(10, 0.05)):
        if time.monotonic() > deadline:
            raise RuntimeError("Kafka round trip: the warm-up message never came back")
    reader = threading.Thread(target=read, name="bench-kafka-reader", daemon=True)
    reader.start()
    keys = [f"bench-session-{i}".encode() for i in range(64)]
    start = time.perf_counter()
    for i in range(n):
        value, headers = samples[i % len(samples)]
        while True:
            try:
                producer.produce(topic, value=value, key=keys[i % len(keys)], headers=headers)
                break
            except BufferError:
                producer.poll(0.01)
        if i % 256 == 0:
            producer.poll(0)
    producer.flush(timeout_s)
    finished.wait(timeout_s)
    reader.join(5)
    consumer.close()
    if got < n:
        raise RuntimeError(f"Kafka round trip: consumed {got} of {n} messages")
    return n / (last - start)


# -- Celery ------------------------------------------------------------------------------------


def celery_noop_tasks_per_s(
    app: Any, redis_client: Any, queue: str, n: int, timeout_s: float = 120.0
) -> float:
    """Send `n` noop tasks to `queue` and wait until the running workers have executed them
    all: the queue is empty and no message is unacknowledged, on three polls in a row (the
    first of them is the completion time)."""
    from orchestrator.adapters.celery.app import NOOP_TASK

    _wait_quiet(redis_client, queue, timeout_s)
    start = time.perf_counter()
    with app.producer_or_acquire() as producer:
        for _ in range(n):
            app.send_task(NOOP_TASK, queue=queue, producer=producer)
    deadline = time.monotonic() + timeout_s
    done = _wait_quiet(redis_client, queue, max(1.0, deadline - time.monotonic()))
    return n / (done - start)


def _wait_quiet(redis_client: Any, queue: str, timeout_s: float) -> float:
    deadline = time.monotonic() + timeout_s
    streak: list[float] = []
    while time.monotonic() < deadline:
        pipe = redis_client.pipeline(transaction=False)
        pipe.llen(queue)
        pipe.hlen("unacked")
        waiting, unacked = pipe.execute()
        now = time.perf_counter()
        if int(waiting) == 0 and int(unacked) == 0:
            streak.append(now)
            if len(streak) >= 3:
                return streak[0]
        else:
            streak.clear()
        time.sleep(0.003)
    raise RuntimeError(f"Celery queue {queue} did not drain within {timeout_s:.0f}s")
