"""Relay faults through the real processes: Kafka unreachable for a while (every client goes
through a TCP proxy the test cuts off), a relay killed after publishing but before marking its
rows SENT, and the per-key order of one relay batch."""

from __future__ import annotations

import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import orchestrator.core.queues as queue_names
from orchestrator.devtools.embedded import LOOPBACK, EmbeddedKafka
from tests.support.harness import Proc, Record, Stack, gone, pool_children
from tests.support.helpers import wait_for
from tests.support.tcp_proxy import TcpProxy

WORK_QUEUES = queue_names.queue_list(queue_names.WORK_QUEUES)
RELAY_QUEUE = queue_names.RELAY_QUEUE
COMMANDS = (
    ("Character.Request", {"name": "Ada"}),
    ("Stage.Validate", {"stage": "characters"}),
    ("Character.Request", {"name": "Bob"}),
)


def output_topics(stack: Stack) -> list[str]:
    return [stack.domain_topic, stack.task_topic("character"), stack.task_topic("review")]


# -- helpers ---------------------------------------------------------------------------------


class ProxiedKafka(EmbeddedKafka):
    """A dedicated Tansu whose advertised listener is the proxy: after the bootstrap, every
    client connection goes through `proxy`."""

    def __init__(self, proxy: TcpProxy) -> None:
        super().__init__()
        self.proxy = proxy

    def _command(self, port: int, workdir: Path) -> list[str]:
        self.proxy.upstream_port = port
        command = super()._command(port, workdir)
        command[command.index("--advertised-listener-url") + 1] = (
            f"tcp://{LOOPBACK}:{self.proxy.port}"
        )
        return command

    def _on_ready(self, port: int) -> str:
        return self.proxy.address


def wait_ready(*procs: Proc, timeout: float = 30.0) -> None:
    for proc in procs:
        wait_for(
            lambda p=proc: " ready." in p.text(),
            timeout=timeout,
            message=lambda p=proc: f"{p.name} to be ready; log:\n{p.tail()}",
        )


def send_commands(stack: Stack, sessions: list[str]) -> None:
    """Three commands per session, so each session's key has a run of facts and tasks."""
    for s in sessions:
        for command_type, payload in COMMANDS:
            stack.send_command(s, command_type, payload)
    stack.flush()


def outbox(stack: Stack) -> list[tuple[str, str, bytes, int, str, int]]:
    return [
        (r[0], r[1], bytes(r[2]), r[3], r[4], r[5])
        for r in stack.rows(
            "SELECT id, topic, key, seq, status, attempts FROM event_outbox ORDER BY seq"
        )
    ]


def produced(stack: Stack, records: list[Record]) -> list[Record]:
    """What the orchestrator published: facts, capability tasks and dead letters."""
    return [
        r
        for r in records
        if r.topic != stack.capability_topic and r.type != "Genesis.Session.Command.Received"
    ]


def order_violations(
    rows: list[tuple[str, str, bytes, int, str, int]], records: list[Record]
) -> list[tuple[str, bytes]]:
    """The (topic, key)s whose messages reached Kafka in another order than the outbox's seq
    (`rows` ordered by seq; `records` as read, the orchestrator's own only)."""
    expected: dict[tuple[str, bytes], list[str]] = defaultdict(list)
    for message_id, topic, key, _seq, _status, _attempts in rows:
        expected[(topic, key)].append(message_id)
    seen: dict[tuple[str, bytes], list[str]] = defaultdict(list)
    for r in records:
        mid = r.headers["message_id"]
        if mid not in seen[(r.topic, r.key or b"")]:
            seen[(r.topic, r.key or b"")].append(mid)
    return [k for k, ids in expected.items() if seen.get(k) != ids]


def wait_all_sent(stack: Stack, rows: int, timeout: float) -> None:
    wait_for(
        lambda: stack.scalar("SELECT count(*) FROM event_outbox WHERE status = 'SENT'") == rows,
        timeout=timeout,
        message=lambda: f"every outbox row SENT; now {Counter(r[4] for r in outbox(stack))}",
    )


@dataclass
class Outage:
    """What one run of the outage scenario left behind (its processes are all stopped)."""

    sessions: list[str]
    expected_rows: int
    outbox: list[tuple[str, str, bytes, int, str, int]]
    produced: list[Record]
    violations: list[tuple[str, bytes]]
    unprocessed_inbox: int
    task_statuses: Counter[str]
    max_attempts: int
    errors: list[str]
    blocked_s: float
    delivered_s: float


def run_outage(stack: Stack, proxy: TcpProxy) -> Outage:
    stack.overrides.update(
        ORCHESTRATOR_RELAY_MESSAGE_TIMEOUT_MS="2000",
        ORCHESTRATOR_RELAY_LEASE_S="5",
        ORCHESTRATOR_RELAY_BACKOFF_MAX_S="2",
    )
    sessions = [str(uuid.uuid4()) for _ in range(8)]
    expected_rows = 2 * len(COMMANDS) * len(sessions)  # a fact and a task per command
    stack.start_ingester()
    send_commands(stack, sessions)
    wait_for(
        lambda: stack.scalar("SELECT count(*) FROM inbox") == len(COMMANDS) * len(sessions),
        timeout=30,
        message="every command in the inbox",
    )

    # Kafka goes away before the worker writes anything to the outbox.
    proxy.block()
    blocked_at = time.monotonic()
    stack.start_worker()
    stack.start_beat()
    wait_for(
        lambda: (
            stack.scalar("SELECT count(*) FROM event_outbox WHERE status = 'PENDING'")
            == expected_rows
            and stack.scalar(
                "SELECT count(*) FROM event_outbox WHERE attempts >= 1 AND last_error IS NOT NULL"
            )
            >= len(sessions)
            and stack.scalar("SELECT max(attempts) FROM event_outbox") >= 2
        ),
        timeout=40,
        message=lambda: f"the relay to back off repeatedly; outbox {outbox(stack)}",
    )
    errors = [
        r[0] for r in stack.rows("SELECT DISTINCT last_error FROM event_outbox WHERE attempts > 0")
    ]
    max_attempts = max(r[5] for r in outbox(stack))
    proxy.unblock()
    unblocked_at = time.monotonic()
    wait_all_sent(stack, expected_rows, timeout=60)
    delivered_s = time.monotonic() - unblocked_at

    records = stack.read_all(output_topics(stack))
    rows = outbox(stack)
    return Outage(
        sessions=sessions,
        expected_rows=expected_rows,
        outbox=rows,
        produced=produced(stack, records),
        violations=order_violations(rows, produced(stack, records)),
        unprocessed_inbox=stack.scalar("SELECT count(*) FROM inbox WHERE processed_at IS NULL"),
        task_statuses=Counter(r[0] for r in stack.rows("SELECT status FROM async_tasks")),
        max_attempts=max_attempts,
        errors=errors,
        blocked_s=unblocked_at - blocked_at,
        delivered_s=delivered_s,
    )


@pytest.fixture
def outage(tmp_path: Path, database_url: str, redis_url: str) -> Iterator[Outage]:
    """The scenario on a dedicated Tansu reached only through a proxy; every process (the
    broker too) is stopped before the test looks at the outcome."""
    proxy = TcpProxy()
    kafka = ProxiedKafka(proxy)
    try:
        stack = Stack(tmp_path, kafka.start(), database_url, redis_url)
        try:
            stack.setup()
            result = run_outage(stack, proxy)
        except BaseException:
            proxy.unblock()
            stack.close()
            print(stack.logs())
            raise
        proxy.unblock()
        stack.close()
    finally:
        kafka.stop()  # by the PID it started
        proxy.close()
    print(
        f"\nKafka unreachable {result.blocked_s:.1f}s: {result.expected_rows} rows backed off"
        f" (up to {result.max_attempts} attempts, errors {result.errors}); all delivered"
        f" {result.delivered_s:.1f}s after reconnecting"
    )
    yield result


# -- 3. Kafka unreachable for a while ----------------------------------------------------------


def test_relay_backs_off_while_kafka_is_unreachable_then_delivers_everything_once_in_order(
    outage: Outage,
) -> None:
    assert outage.unprocessed_inbox == 0
    assert len(outage.outbox) == outage.expected_rows
    assert {r[4] for r in outage.outbox} == {"SENT"}
    # The relay tried again and again while Kafka was away, and never gave up on a row.
    assert outage.max_attempts >= 2
    assert outage.errors, "no failed attempt was recorded"
    copies = Counter(r.headers["message_id"] for r in outage.produced)
    assert set(copies) == {r[0] for r in outage.outbox}
    assert all(n == 1 for n in copies.values()), {k: n for k, n in copies.items() if n > 1}
    # Each (topic, key)'s messages in the order they were committed, despite the backoffs.
    assert outage.violations == []
    # Tasks start once their message is delivered.
    assert outage.task_statuses == Counter({"RUNNING": len(COMMANDS) * len(outage.sessions)})


# -- per-key order within one relay batch ------------------------------------------------------


def test_one_relay_batch_keeps_each_keys_order(stack: Stack) -> None:
    sessions = [str(uuid.uuid4()) for _ in range(8)]
    expected_rows = 2 * len(COMMANDS) * len(sessions)
    stack.start_ingester()
    # No relay yet: the outbox fills up, then one relay run publishes all of it.
    stack.start_worker("worker", queues=WORK_QUEUES)
    send_commands(stack, sessions)
    wait_for(
        lambda: (
            stack.scalar("SELECT count(*) FROM event_outbox") == expected_rows
            and stack.scalar("SELECT count(*) FROM inbox WHERE processed_at IS NULL") == 0
        ),
        timeout=30,
        message="the outbox filled",
    )
    stack.start_worker("relay", queues=RELAY_QUEUE)
    stack.start_beat()
    wait_all_sent(stack, expected_rows, timeout=30)
    records = stack.read_all(output_topics(stack))
    assert len(produced(stack, records)) == expected_rows
    assert order_violations(outbox(stack), produced(stack, records)) == []


# -- 6. a relay killed after publishing, before marking SENT -----------------------------------


def test_relay_killed_after_publish_republishes_identical_messages(stack: Stack) -> None:
    stack.overrides.update(
        ORCHESTRATOR_RELAY_LEASE_S="3", ORCHESTRATOR_RELAY_MESSAGE_TIMEOUT_MS="2000"
    )
    sessions = [str(uuid.uuid4()) for _ in range(10)]
    expected_rows = 2 * len(sessions)
    stack.start_ingester()
    stack.start_worker("worker", queues=WORK_QUEUES)
    doomed = stack.start_worker(
        "doomed-relay",
        queues=RELAY_QUEUE,
        concurrency=1,
        ORCHESTRATOR_CRASH_AT="relay.after_publish",
    )
    stack.start_beat()
    wait_ready(doomed)
    children = wait_for(lambda: pool_children(doomed), message="the doomed relay's pool")
    for s in sessions:
        stack.send_command(s, "Character.Request", {"name": "Ada"})
    stack.flush()
    wait_for(
        lambda: (
            any(gone(pid) for pid in children)
            and stack.scalar("SELECT count(*) FROM event_outbox") == expected_rows
        ),
        timeout=30,
        message=lambda: f"the relay to die after publishing; log:\n{doomed.tail()}",
    )
    doomed.kill()
    pending = stack.scalar("SELECT count(*) FROM event_outbox WHERE status = 'PENDING'")
    assert pending > 0  # the killed relay published rows it could not mark SENT

    began = time.monotonic()
    stack.start_worker("relay", queues=RELAY_QUEUE)
    wait_all_sent(stack, expected_rows, timeout=30)
    settled_s = time.monotonic() - began
    records = stack.read_all(output_topics(stack))
    out = produced(stack, records)
    by_id: dict[str, list[Record]] = defaultdict(list)
    for r in out:
        by_id[r.headers["message_id"]].append(r)
    assert set(by_id) == {row[0] for row in outbox(stack)}
    for message_id, copies in by_id.items():
        first = copies[0]
        for c in copies[1:]:
            assert (c.topic, c.key, c.value, c.headers) == (
                first.topic,
                first.key,
                first.value,
                first.headers,
            ), message_id
        if first.topic == stack.domain_topic:
            assert first.json()["event_id"] == message_id
        else:
            assert first.json()["id"] == message_id
    duplicates = sum(len(c) - 1 for c in by_id.values())
    assert duplicates >= 1, "the killed relay's batch was published only once"
    assert stack.scalar("SELECT count(*) FROM async_tasks WHERE status <> 'RUNNING'") == 0
    print(
        f"\nrelay killed after publish ({pending} rows left PENDING):"
        f" all SENT {settled_s:.1f}s after a new relay started; {len(out)} records for"
        f" {expected_rows} rows, {duplicates} duplicates (identical bytes and ids)"
    )
