"""A whole orchestrator stack as real processes, for end-to-end tests.

Every process is started through its real command line (`orchestrator ingest`, `celery -A tasks
worker`, `celery -A tasks beat`, `orchestrator simulate`) from a scratch directory, configured
only by environment variables, against the session's Tansu broker, a fresh PostgreSQL database
and a private Redis database. Each stack gets its own topics, consumer groups and Redis prefix,
so stacks never see each other's messages.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import psutil
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from orchestrator.core.inbound import RawMessage
from orchestrator.core.offset_gaps import OffsetGapGuard
from orchestrator.core.queues import queue_list
from orchestrator.devtools.supervisor import BIN, Child, Supervisor
from tests.support.helpers import wait_for

# The handle of one started process, as the tests call it.
Proc = Child
ALL_QUEUES = queue_list()
TASK_BASES = ("character", "outline", "world", "plot", "writer", "review")


@dataclass
class Record:
    topic: str
    key: bytes | None
    value: bytes | None
    headers: dict[str, str]

    def json(self) -> Any:
        return orjson.loads(self.value or b"null")

    @property
    def type(self) -> str | None:
        try:
            doc = self.json()
        except orjson.JSONDecodeError:
            return self.headers.get("type")
        if isinstance(doc, dict):
            return doc.get("event_type") or doc.get("type")
        return None


class TopicReader:
    """Reads topics from the beginning with assign() (no group join: immediate)."""

    def __init__(self, bootstrap: str, topics: Iterable[str]) -> None:
        self.consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": "reader-unused",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 10,
                "auto.offset.reset": "earliest",
            }
        )
        self.consumer.assign([TopicPartition(t, 0, OFFSET_BEGINNING) for t in topics])
        self.records: list[Record] = []

    def poll(self) -> list[Record]:
        for m in self.consumer.consume(500, 0.05):
            if m.error() is None:
                headers = {k: (v or b"").decode(errors="replace") for k, v in m.headers() or []}
                self.records.append(Record(m.topic(), m.key(), m.value(), headers))
        return self.records

    def wait(
        self,
        predicate: Callable[[list[Record]], bool],
        timeout: float = 30.0,
        message: str = "records",
    ) -> list[Record]:
        wait_for(
            lambda: predicate(self.poll()),
            timeout=timeout,
            message=lambda: f"{message}; seen {[(r.topic, r.type) for r in self.records]}",
        )
        return self.records

    def close(self) -> None:
        self.consumer.close()


FENCE_HEADER = "fence"


def header(message: RawMessage, name: str) -> bytes | None:
    return dict(message.headers).get(name)


def message_id(message: RawMessage) -> str | None:
    raw = header(message, "message_id")
    return raw.decode() if raw is not None else None


class RawTail:
    """Reads topics from the beginning (assign, no group join), headers kept as raw bytes (a bad
    input's may not be UTF-8). `drain()` returns everything on the topics so far, for sure.

    It must not skip records either: a fetch that skipped offsets is read again
    (`OffsetGapGuard`), an out-of-range answer sends it back to the start, and a record read
    again (after a seek or a reset) is kept once. With `stall_s`, a partition that serves
    nothing from one offset for that long (the test broker sometimes stops there for good) is
    read on from the next offset, which is kept in `unreadable` with what a fresh consumer
    reads around it: a message there is then missing, never hidden."""

    def __init__(self, stack: Stack, topics: Iterable[str]) -> None:
        self.stack = stack
        self.topics = list(topics)
        self.consumer = Consumer(
            {
                "bootstrap.servers": stack.bootstrap,
                "group.id": f"tail-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 10,
                "auto.offset.reset": "earliest",
                "log_level": 2,
            }
        )
        self.consumer.assign([TopicPartition(t, 0, OFFSET_BEGINNING) for t in self.topics])
        self.messages: list[RawMessage] = []
        self.fences: dict[tuple[str, bytes], int] = {}  # (topic, token) -> the fence's offset
        self.last_fence: dict[str, int] = {}  # topic -> offset of the last drain's fence
        self.gaps = OffsetGapGuard()
        self.unreadable: dict[str, Any] = {}  # "topic@offset" -> what a probe read around it
        self._read: set[tuple[str, int, int]] = set()
        self._progress: dict[tuple[str, int], tuple[int, float]] = {}  # next offset, since

    def poll(self) -> list[RawMessage]:
        msgs = [m for m in self.consumer.consume(500, 0.05) if m.error() is None]
        keep, gaps = self.gaps.admit([(m.topic(), m.partition(), m.offset()) for m in msgs])
        for gap in gaps:
            if not gap.accepted:
                self.consumer.seek(TopicPartition(gap.topic, gap.partition, gap.missing_from))
        for m in (msgs[i] for i in keep):
            position = (m.topic(), m.partition(), m.offset())
            if position in self._read:
                continue
            self._read.add(position)
            headers = tuple((str(k), v) for k, v in m.headers() or [])
            token = dict(headers).get(FENCE_HEADER)
            if token is not None:
                self.fences[(m.topic(), token)] = m.offset()
                continue
            self.messages.append(
                RawMessage(m.topic(), m.value(), m.key(), headers, m.partition(), m.offset())
            )
        return self.messages

    def drain(self, timeout: float = 30.0, stall_s: float | None = None) -> list[RawMessage]:
        """A fence goes to each topic now and the tail reads until it saw them all (partitions
        keep order; Tansu's high watermarks are not trusted). The fence is a domain event that
        is not a command, which the ingester skips and the simulator ignores."""
        token = uuid.uuid4().hex
        fence = command(token, "Fence")
        fence["event_type"] = "Genesis.Session.Test.Fence"
        for topic in self.topics:
            self.stack.produce(
                topic, orjson.dumps(fence), b"fence", headers=[(FENCE_HEADER, token.encode())]
            )
        self.stack.flush()
        wanted = {(t, token.encode()) for t in self.topics}

        def fenced() -> bool:
            self.poll()
            done = {t for t, tok in self.fences if tok == token.encode()}
            if stall_s is not None:
                self._read_past_stalls(stall_s, done)
            return wanted <= self.fences.keys()

        wait_for(
            fenced,
            timeout=timeout,
            message=lambda: f"the fences on {self.topics}; read up to {self.gaps.expected()}",
        )
        self.last_fence = {t: self.fences[(t, token.encode())] for t in self.topics}
        return self.messages

    def _read_past_stalls(self, stall_s: float, done: set[str]) -> None:
        now = time.monotonic()
        for (topic, partition), next_offset in self.gaps.expected().items():
            key = (topic, partition)
            if topic in done:
                continue
            if self._progress.get(key, (None, 0.0))[0] != next_offset:
                self._progress[key] = (next_offset, now)
            elif now - self._progress[key][1] > stall_s:
                where = f"{topic}@{next_offset}"
                self.unreadable[where] = probe(self.stack.bootstrap, topic, next_offset)
                self.gaps.expect(topic, partition, next_offset + 1)
                self.consumer.seek(TopicPartition(topic, partition, next_offset + 1))
                self._progress[key] = (next_offset + 1, now)

    def on(self, topic: str) -> list[RawMessage]:
        return [m for m in self.messages if m.topic == topic]

    def close(self) -> None:
        self.consumer.close()


def probe(bootstrap: str, topic: str, offset: int) -> dict[str, Any]:
    """What a fresh consumer reads from a little before, at and after `offset` of partition 0."""
    found: dict[str, Any] = {}
    for start in (max(0, offset - 3), offset, offset + 1):
        consumer = Consumer(
            {"bootstrap.servers": bootstrap, "group.id": f"probe-{uuid.uuid4().hex[:8]}"}
        )
        try:
            consumer.assign([TopicPartition(topic, 0, start)])
            seen: list[int] = []
            end = time.monotonic() + 5
            while len(seen) < 5 and time.monotonic() < end:
                seen += [m.offset() for m in consumer.consume(5, 0.2) if m.error() is None]
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=5)
            found[f"from {start}"] = {"read": seen[:5], "watermarks": [low, high]}
        except Exception as exc:  # a diagnostic: say what failed, never fail the reader
            found[f"from {start}"] = repr(exc)
        finally:
            consumer.close()
    return found


@dataclass
class Stack:
    tmp: Path
    bootstrap: str
    database_url: str
    redis_url: str
    overrides: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        s = uuid.uuid4().hex[:10]
        self.suffix = s
        self.domain_topic = f"genesis.domain.events.{s}"
        self.capability_topic = f"genesis.capability.events.{s}"
        self.dlq_topic = f"genesis.orchestrator.dlq.{s}"
        self.task_prefix = f"t{s}."
        self.engine = create_engine(self.database_url, poolclass=NullPool)
        self._producer: Producer | None = None
        self.supervisor = Supervisor(self.tmp)

    @property
    def procs(self) -> list[Proc]:
        """Every process this stack started, restarted ones included."""
        return self.supervisor.started

    def task_topic(self, base: str) -> str:
        return f"{self.task_prefix}genesis.{base}.tasks"

    def output_topics(self) -> list[str]:
        return [
            self.domain_topic,
            self.capability_topic,
            self.dlq_topic,
            *(self.task_topic(b) for b in TASK_BASES),
        ]

    def env(self, **extra: str) -> dict[str, str]:
        base = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("ORCHESTRATOR_", "KAFKA_", "CELERY_"))
            and k not in {"DATABASE_URL", "REDIS_URL"}
        }
        base.update(
            {
                "DATABASE_URL": self.database_url,
                "REDIS_URL": self.redis_url,
                "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
                "KAFKA_SESSION_TIMEOUT_MS": "3000",
                "KAFKA_HEARTBEAT_INTERVAL_MS": "500",
                "ORCHESTRATOR_DOMAIN_TOPIC": self.domain_topic,
                "ORCHESTRATOR_CAPABILITY_TOPIC": self.capability_topic,
                "ORCHESTRATOR_DLQ_TOPIC": self.dlq_topic,
                "ORCHESTRATOR_TASK_TOPIC_PREFIX": self.task_prefix,
                "ORCHESTRATOR_CONSUMER_GROUP": f"orch-{self.suffix}",
                "ORCHESTRATOR_REDIS_PREFIX": f"orch-{self.suffix}",
                "ORCHESTRATOR_LOG_LEVEL": "INFO",
                "ORCHESTRATOR_RELAY_INTERVAL_S": "0.5",
                "ORCHESTRATOR_REDRIVE_INTERVAL_S": "1",
                "ORCHESTRATOR_REDRIVE_AFTER_S": "3",
                "ORCHESTRATOR_TIMEOUT_SWEEP_INTERVAL_S": "1",
                "ORCHESTRATOR_CELERY_VISIBILITY_TIMEOUT_S": "60",
                "PYTHONUNBUFFERED": "1",
            }
        )
        base.update(self.overrides)
        base.update(extra)
        return base

    # -- processes -----------------------------------------------------------------------------

    def spawn(self, name: str, argv: Sequence[str], **env: str) -> Proc:
        """Start a process in `tmp`, its output appended to `tmp/<name>.log`."""
        return self.supervisor.spawn(name, argv, env=self.env(**env))

    def cli(
        self, *args: str, timeout: float = 60.0, **env: str
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "orchestrator"), *args],
            cwd=self.tmp,
            env=self.env(**env),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def setup(self) -> None:
        """Migrations and topics, through the CLI as an operator would run them."""
        for args in (("db", "upgrade"), ("topics", "create")):
            done = self.cli(*args)
            assert done.returncode == 0, f"orchestrator {' '.join(args)}: {done.stderr}"

    def start_ingester(self, name: str = "ingester", **env: str) -> Proc:
        return self.spawn(name, [str(BIN / "orchestrator"), "ingest"], **env)

    def start_worker(
        self, name: str = "worker", queues: str = ALL_QUEUES, concurrency: int = 2, **env: str
    ) -> Proc:
        return self.spawn(
            name,
            [
                str(BIN / "celery"),
                "-A",
                "tasks",
                "worker",
                "-Q",
                queues,
                "-c",
                str(concurrency),
                "-n",
                f"{name}-{self.suffix}@%h",
                "--without-gossip",
                "--without-mingle",
                "--loglevel",
                "INFO",
            ],
            **env,
        )

    def start_beat(self, name: str = "beat", **env: str) -> Proc:
        return self.spawn(
            name,
            [
                str(BIN / "celery"),
                "-A",
                "tasks",
                "beat",
                "-s",
                str(self.tmp / f"{name}-schedule"),
                "--loglevel",
                "INFO",
            ],
            **env,
        )

    def start_simulator(self, *args: str, name: str = "simulator", **env: str) -> Proc:
        return self.spawn(
            name,
            [str(BIN / "orchestrator"), "simulate", "--group", f"sim-{self.suffix}-{name}", *args],
            **env,
        )

    def start_all(self, *sim_args: str) -> None:
        self.start_worker()
        self.start_beat()
        self.start_simulator(*sim_args)
        self.start_ingester()

    def stop_all(self, timeout: float = 20.0) -> None:
        self.supervisor.stop_all(timeout)

    def logs(self) -> str:
        return self.supervisor.logs()

    # -- input ---------------------------------------------------------------------------------

    @property
    def producer(self) -> Producer:
        if self._producer is None:
            self._producer = Producer(
                {
                    "bootstrap.servers": self.bootstrap,
                    "linger.ms": 1,
                    "allow.auto.create.topics": False,
                }
            )
        return self._producer

    def produce(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> None:
        self.producer.produce(topic, value=value, key=key, headers=headers or [])

    def flush(self) -> None:
        assert self.producer.flush(10) == 0, "producer could not deliver the test input"

    def send_command(
        self,
        session_id: str,
        command_type: str,
        payload: dict[str, Any] | None = None,
        correlation_id: str | None = None,
        event_id: str | None = None,
    ) -> str:
        event_id = event_id or str(uuid.uuid4())
        self.produce(
            self.domain_topic,
            orjson.dumps(command(session_id, command_type, payload, correlation_id, event_id)),
            session_id.encode(),
        )
        return event_id

    def send_result(
        self,
        session_id: str,
        result_type: str,
        correlation_id: str,
        msg_id: str | None = None,
        **data: Any,
    ) -> str:
        msg_id = msg_id or str(uuid.uuid4())
        body = {
            "id": msg_id,
            "ts": "2026-11-29T12:00:01Z",
            "type": result_type,
            "data": {"session_id": session_id, "correlation_id": correlation_id, **data},
        }
        self.produce(self.capability_topic, orjson.dumps(body), session_id.encode())
        return msg_id

    def reader(self) -> TopicReader:
        return TopicReader(self.bootstrap, self.output_topics())

    def read_all(self, topics: list[str] | None = None) -> list[Record]:
        """Every record on `topics` (default: the output topics but the capability topic, which
        gets no fence), for sure (`RawTail.drain`), headers decoded."""
        if topics is None:
            topics = [t for t in self.output_topics() if t != self.capability_topic]
        tail = RawTail(self, topics)
        try:
            messages = tail.drain()
        finally:
            tail.close()
        return [
            Record(
                m.topic,
                m.key,
                m.value,
                {k: (v or b"").decode(errors="replace") for k, v in m.headers},
            )
            for m in messages
        ]

    # -- database ------------------------------------------------------------------------------

    def rows(self, sql: str, **params: Any) -> list[Any]:
        with self.engine.connect() as conn:
            return list(conn.execute(text(sql), params))

    def scalar(self, sql: str, **params: Any) -> Any:
        with self.engine.connect() as conn:
            return conn.execute(text(sql), params).scalar()

    def facts(self, session_id: str) -> list[str]:
        return [
            r[0].removeprefix("Genesis.Session.")
            for r in self.rows(
                "SELECT event_type FROM domain_events WHERE session_id = :s ORDER BY created_at,"
                " event_id",
                s=session_id,
            )
        ]

    def wait_idle(self, timeout: float = 60.0) -> None:
        """Every inbox row processed and every outbox row settled."""
        wait_for(
            lambda: (
                self.scalar(
                    "SELECT (SELECT count(*) FROM inbox WHERE processed_at IS NULL)"
                    " + (SELECT count(*) FROM event_outbox WHERE status = 'PENDING')"
                )
                == 0
            ),
            timeout=timeout,
            message="the pipeline to drain",
        )

    def close(self) -> None:
        self.stop_all()
        if self._producer is not None:
            self._producer.flush(5)
            self._producer = None  # dropped now: it would go on reconnecting to stopped servers
        self.engine.dispose()


def command(
    session_id: str,
    command_type: str,
    payload: dict[str, Any] | None = None,
    correlation_id: str | None = None,
    event_id: str | None = None,
) -> dict[str, Any]:
    return {
        "event_id": event_id or str(uuid.uuid4()),
        "event_type": "Genesis.Session.Command.Received",
        "aggregate_type": "GenesisSession",
        "aggregate_id": session_id,
        "payload": {
            "command_type": command_type,
            "user_id": "user-1",
            "payload": payload or {"name": "Ada"},
        },
        "metadata": {"correlation_id": correlation_id or str(uuid.uuid4()), "causation_id": None},
        "created_at": "2026-11-29T12:00:00Z",
    }


def settle(deadline_s: float, check: Callable[[], bool]) -> bool:
    """Poll `check` until true or the deadline; for conditions that must STAY false."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if check():
            return True
        time.sleep(0.05)
    return check()


def pool_children(proc: Proc) -> set[int]:
    """PIDs of a Celery worker's pool processes (its children)."""
    try:
        return {c.pid for c in psutil.Process(proc.pid).children()}
    except psutil.NoSuchProcess:
        return set()


def gone(pid: int) -> bool:
    """The process has exited (a zombie not yet reaped counts)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True
