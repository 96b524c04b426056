"""The outbox relay against a real PostgreSQL and the session's Kafka broker (Tansu): rows are
published once, in per-key order, marked SENT; permanent errors fail a row and its key moves
on; transient errors back off without letting later rows of the key overtake."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from sqlalchemy import Engine

from orchestrator.adapters.kafka.clients import producer_config
from orchestrator.adapters.kafka.publisher import KafkaPublisher
from orchestrator.adapters.kafka.topics import create_topics
from orchestrator.adapters.postgres.engine import make_engine
from orchestrator.adapters.postgres.outbox import PgOutbox
from orchestrator.adapters.postgres.store import SqlStore
from orchestrator.core.records import OutboxMessage
from orchestrator.devtools.embedded import free_port
from orchestrator.service.relay import OutboxRelay, RelayResult
from orchestrator.settings import Settings, load_settings
from tests.support.db import Db
from tests.support.helpers import unique_suffix

Topics = Callable[..., dict[str, str]]


def settings_for(bootstrap: str, timeout_ms: int = 5000) -> Settings:
    return load_settings(kafka_bootstrap_servers=bootstrap, relay_message_timeout_ms=timeout_ms)


def make_producer(bootstrap: str, timeout_ms: int = 5000, **extra: Any) -> Producer:
    return Producer(producer_config(settings_for(bootstrap, timeout_ms), log_level=2, **extra))


def make_relay(engine: Engine, producer: Producer, **overrides: Any) -> OutboxRelay:
    options: dict[str, Any] = {
        "batch_size": 1000,
        "lease_s": 10.0,
        "backoff_base_s": 20.0,
        "backoff_max_s": 60.0,
    }
    options.update(overrides)
    return OutboxRelay(PgOutbox(engine), KafkaPublisher(producer), **options)


def outbox_row(
    row_id: str,
    topic: str,
    key: str | None,
    *,
    kind: str = "fact",
    payload: bytes | None = None,
) -> OutboxMessage:
    return OutboxMessage(
        id=row_id,
        kind=kind,
        message_type=f"Test.{kind}",
        topic=topic,
        key=key.encode() if key is not None else None,
        headers=(("message_id", row_id.encode()), ("type", f"Test.{kind}".encode())),
        payload=payload if payload is not None else f'{{"id": "{row_id}"}}'.encode(),
        session_id=key,
        correlation_id=None,
    )


def insert(store: SqlStore, rows: Iterable[OutboxMessage]) -> None:
    with store.transaction() as tx:
        for row in rows:
            assert tx.insert_outbox(row)


def read_topic(
    bootstrap: str, topic: str, expected: int, *, settle_s: float = 0.25, timeout_s: float = 20.0
) -> list[tuple[bytes | None, bytes, dict[str, bytes]]]:
    """Every message on partition 0 of `topic` (assign, no group join): waits for `expected`
    messages, then keeps reading `settle_s` longer so that duplicates would show."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"relay-reader-{unique_suffix()}",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 10,
            "log_level": 2,
        }
    )
    got: list[Any] = []
    try:
        consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        deadline = time.monotonic() + timeout_s
        quiet_until: float | None = None
        while time.monotonic() < deadline:
            for msg in consumer.consume(1000, 0.05):
                assert msg.error() is None, msg.error()
                got.append((msg.key(), msg.value(), dict(msg.headers() or [])))
            if len(got) >= expected:
                quiet_until = quiet_until or time.monotonic() + settle_s
                if time.monotonic() >= quiet_until:
                    break
    finally:
        consumer.close()
    return got


def ids_on(messages: list[tuple[bytes | None, bytes, dict[str, bytes]]]) -> list[str]:
    return [headers["message_id"].decode() for _key, _value, headers in messages]


def by_key(messages: list[tuple[bytes | None, bytes, dict[str, bytes]]]) -> dict[Any, list[str]]:
    """Message ids per Kafka key, in the order they sit in the partition."""
    seen: dict[Any, list[str]] = defaultdict(list)
    for key, _value, headers in messages:
        seen[key].append(headers["message_id"].decode())
    return dict(seen)


def statuses(db: Db) -> dict[str, tuple[str, int]]:
    return {r["id"]: (r["status"], r["attempts"]) for r in db.outbox()}


def test_publishes_pending_rows_marks_sent_and_starts_tasks(
    kafka_bootstrap: str, kafka_topics: Topics, store: SqlStore, db: Db, engine: Engine
) -> None:
    t = kafka_topics("genesis.domain.events", "genesis.character.tasks")
    domain, tasks = t["genesis.domain.events"], t["genesis.character.tasks"]
    insert(
        store,
        [
            outbox_row("f-1", domain, "s-1"),
            outbox_row("cap-pending", tasks, "s-1", kind="capability"),
            outbox_row("cap-done", tasks, "s-2", kind="capability"),
            outbox_row("f-2", domain, "s-1"),
            outbox_row("old-sent", domain, "s-1"),
            outbox_row("old-failed", domain, "s-3"),
        ],
    )
    db.exec(
        "UPDATE event_outbox SET status = 'SENT', sent_at = now() - interval '1 hour',"
        " attempts = 1 WHERE id = 'old-sent'"
    )
    db.exec("UPDATE event_outbox SET status = 'FAILED', attempts = 1 WHERE id = 'old-failed'")
    db.exec(
        "INSERT INTO async_tasks (id, task_type, correlation_id, session_id, causation_id, status,"
        " version) VALUES ('cap-pending', 'Test.capability', 'c-1', 's-1', 'e-1', 'PENDING', 1),"
        " ('cap-done', 'Test.capability', 'c-2', 's-2', 'e-2', 'COMPLETED', 2),"
        " ('unrelated', 'Test.capability', 'c-3', 's-3', 'e-3', 'PENDING', 1)"
    )
    before = db.scalar("SELECT now()")

    relay = make_relay(engine, make_producer(kafka_bootstrap))
    result = relay.run_once()
    after = db.scalar("SELECT now()")

    assert (result.claimed, result.sent, result.retried, result.failed) == (4, 4, 0, 0)
    assert result.sent_by_kind == {"fact": 2, "capability": 2}
    rows = {r["id"]: r for r in db.outbox()}
    for row_id in ("f-1", "cap-pending", "cap-done", "f-2"):
        r = rows[row_id]
        assert (r["status"], r["attempts"], r["claimed_until"], r["last_error"]) == (
            "SENT",
            1,
            None,
            None,
        )
        assert before <= r["sent_at"] <= after
    assert (rows["old-sent"]["status"], rows["old-sent"]["attempts"]) == ("SENT", 1)
    assert rows["old-sent"]["sent_at"] < before
    assert (rows["old-failed"]["status"], rows["old-failed"]["attempts"]) == ("FAILED", 1)

    task_rows = {
        r["id"]: r
        for r in db.all("SELECT id, status, version, started_at FROM async_tasks ORDER BY id")
    }
    assert (task_rows["cap-pending"]["status"], task_rows["cap-pending"]["version"]) == (
        "RUNNING",
        2,
    )
    assert before <= task_rows["cap-pending"]["started_at"] <= after
    assert (task_rows["cap-done"]["status"], task_rows["cap-done"]["version"]) == (
        "COMPLETED",
        2,
    )
    assert task_rows["cap-done"]["started_at"] is None
    assert (task_rows["unrelated"]["status"], task_rows["unrelated"]["version"]) == ("PENDING", 1)

    on_domain = read_topic(kafka_bootstrap, domain, 2)
    assert on_domain == [
        (b"s-1", b'{"id": "f-1"}', {"message_id": b"f-1", "type": b"Test.fact"}),
        (b"s-1", b'{"id": "f-2"}', {"message_id": b"f-2", "type": b"Test.fact"}),
    ]
    assert by_key(read_topic(kafka_bootstrap, tasks, 2)) == {
        b"s-1": ["cap-pending"],
        b"s-2": ["cap-done"],
    }

    assert relay.run_once() == RelayResult()
    assert len(read_topic(kafka_bootstrap, domain, 2)) == 2


def test_permanent_error_fails_the_row_and_its_key_moves_on(
    kafka_bootstrap: str, kafka_topics: Topics, store: SqlStore, db: Db, engine: Engine
) -> None:
    """`message too large` is the permanent error used here: the producer's `message.max.bytes`
    is set below the row's size."""
    topic = kafka_topics("genesis.domain.events")["genesis.domain.events"]
    insert(
        store,
        [
            outbox_row("a-1", topic, "k-a"),
            outbox_row("a-2", topic, "k-a", payload=b"x" * 5000),
            outbox_row("a-3", topic, "k-a"),
            outbox_row("b-1", topic, "k-b"),
        ],
    )
    producer = make_producer(kafka_bootstrap, **{"message.max.bytes": 2000})
    relay = make_relay(engine, producer)
    result = relay.run_once()
    assert (result.claimed, result.sent, result.retried, result.failed) == (4, 3, 0, 1)
    assert statuses(db) == {
        "a-1": ("SENT", 1),
        "a-2": ("FAILED", 1),
        "a-3": ("SENT", 1),
        "b-1": ("SENT", 1),
    }
    failed = db.one("SELECT last_error, sent_at FROM event_outbox WHERE id = 'a-2'")
    assert "MSG_SIZE_TOO_LARGE" in failed["last_error"]
    assert failed["sent_at"] is None
    assert by_key(read_topic(kafka_bootstrap, topic, 3)) == {
        b"k-a": ["a-1", "a-3"],
        b"k-b": ["b-1"],
    }

    # A FAILED row is never picked up again, and does not block its key.
    insert(store, [outbox_row("a-4", topic, "k-a")])
    assert relay.run_once().sent == 1
    assert statuses(db)["a-2"] == ("FAILED", 1)
    assert by_key(read_topic(kafka_bootstrap, topic, 4)) == {
        b"k-a": ["a-1", "a-3", "a-4"],
        b"k-b": ["b-1"],
    }


def test_missing_topic_is_never_created_by_the_relay_and_its_rows_wait_for_it(
    kafka_bootstrap: str, store: SqlStore, db: Db, engine: Engine
) -> None:
    """A broker that lost its topics (or before `orchestrator topics create`): the relay does not
    let it create them with its own partition count (Tansu makes four), which would scatter a
    key over partitions; the rows wait, unfailed, and go out in order once the topic exists."""
    topic = f"genesis.domain.events.{unique_suffix()}"
    insert(store, [outbox_row("m-1", topic, "k-1"), outbox_row("m-2", topic, "k-1")])
    relay = make_relay(engine, make_producer(kafka_bootstrap, timeout_ms=1500), lease_s=5.0)
    result = relay.run_once()
    assert (result.sent, result.failed) == (0, 0)
    assert result.missing_topics == [topic]  # logged as orchestrator_outbox_topic_missing
    assert {r["status"] for r in db.outbox()} == {"PENDING"}
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap, "log_level": 2})
    assert topic not in admin.list_topics(timeout=10).topics

    create_topics(kafka_bootstrap, [topic], partitions=1)
    db.exec("UPDATE event_outbox SET next_attempt_at = now()")
    result = relay.run_once()
    assert (result.sent, result.failed, result.missing_topics) == (2, 0, [])
    assert by_key(read_topic(kafka_bootstrap, topic, 2)) == {b"k-1": ["m-1", "m-2"]}
    assert len(admin.list_topics(timeout=10).topics[topic].partitions) == 1


def test_transient_error_backs_off_and_holds_the_key(
    kafka_bootstrap: str, kafka_topics: Topics, store: SqlStore, db: Db, engine: Engine
) -> None:
    topic = kafka_topics("genesis.domain.events")["genesis.domain.events"]
    insert(
        store,
        [
            outbox_row("r-1", topic, "k-1"),
            outbox_row("r-2", topic, "k-1"),
            outbox_row("r-3", topic, "k-2"),
        ],
    )
    # Nothing listens on this port: every delivery times out (a transient error).
    dead = make_producer(f"127.0.0.1:{free_port()}", timeout_ms=1500)
    down = make_relay(engine, dead, lease_s=15.0)
    started = time.monotonic()
    result = down.run_once()
    # Bounded by the message timeout, not hung on the dead broker: it ends within its lease.
    assert time.monotonic() - started < 10.0
    assert (result.claimed, result.sent, result.retried, result.failed) == (3, 0, 3, 0)
    rows = db.all(
        "SELECT id, status, attempts, claimed_until, last_error, sent_at,"
        " extract(epoch FROM next_attempt_at - now()) AS wait_s FROM event_outbox ORDER BY seq"
    )
    for r in rows:
        assert (r["status"], r["attempts"], r["claimed_until"], r["sent_at"]) == (
            "PENDING",
            1,
            None,
            None,
        ), r
        assert "_MSG_TIMED_OUT" in r["last_error"]
        assert 5.0 < r["wait_s"] <= 20.0  # backoff_base_s 20: uniform(10, 20) minus elapsed

    # A later row of a backing-off key is not claimed past it; a fresh key flows.
    insert(store, [outbox_row("r-4", topic, "k-1"), outbox_row("r-5", topic, "k-3")])
    up = make_relay(engine, make_producer(kafka_bootstrap))
    assert [r.id for r in up.claim()] == ["r-5"]
    db.exec("UPDATE event_outbox SET claimed_until = NULL WHERE id = 'r-5'")
    result = up.run_once()
    assert (result.claimed, result.sent) == (1, 1)
    assert statuses(db) == {
        "r-1": ("PENDING", 1),
        "r-2": ("PENDING", 1),
        "r-3": ("PENDING", 1),
        "r-4": ("PENDING", 0),
        "r-5": ("SENT", 1),
    }

    # While only the key's later row is due, it still waits behind the earlier one.
    db.exec("UPDATE event_outbox SET next_attempt_at = now() WHERE id = 'r-2'")
    assert up.run_once().claimed == 0

    # Once the backoff has passed, the key resumes in order.
    db.exec("UPDATE event_outbox SET next_attempt_at = now() WHERE status = 'PENDING'")
    result = up.run_once()
    assert (result.claimed, result.sent, result.retried) == (4, 4, 0)
    assert statuses(db) == {
        "r-1": ("SENT", 2),
        "r-2": ("SENT", 2),
        "r-3": ("SENT", 2),
        "r-4": ("SENT", 1),
        "r-5": ("SENT", 1),
    }
    # Each row reached the topic once (per-key order: test_key_resumes_in_seq_order_after_backoff).
    assert sorted(ids_on(read_topic(kafka_bootstrap, topic, 5))) == [
        "r-1",
        "r-2",
        "r-3",
        "r-4",
        "r-5",
    ]


def run_two_relays(
    kafka_bootstrap: str, topic: str, store: SqlStore, db: Db, database_url: str
) -> tuple[list[OutboxMessage], dict[Any, list[str]], list[list[RelayResult]]]:
    """500 rows over 20 keys (one of them the null key), drained by two concurrent relays,
    each with its own engine and idempotent producer. Returns the rows, the ids each key
    should carry in order, and each relay's results."""
    keys: list[str | None] = [f"key-{n:02d}" for n in range(19)] + [None]
    rng = random.Random(7)
    per_key: dict[Any, list[str]] = defaultdict(list)
    rows = []
    for n in range(500):
        key = keys[n % 20] if n < 20 else rng.choice(keys)
        row_id = f"row-{n:03d}"
        per_key[key.encode() if key is not None else None].append(row_id)
        rows.append(outbox_row(row_id, topic, key))
    insert(store, rows)

    barrier = threading.Barrier(2)
    results: list[list[RelayResult]] = [[], []]
    errors: list[BaseException] = []

    def run(slot: int) -> None:
        eng = make_engine(database_url)
        try:
            relay = make_relay(eng, make_producer(kafka_bootstrap), batch_size=25)
            barrier.wait(timeout=30)
            deadline = time.monotonic() + 40
            while time.monotonic() < deadline:
                result = relay.run_once()
                results[slot].append(result)
                if result.claimed == 0:
                    if db.scalar("SELECT count(*) FROM event_outbox WHERE status <> 'SENT'") == 0:
                        return
                    time.sleep(0.005)
            raise AssertionError("relays did not drain the outbox in time")
        except BaseException as exc:
            errors.append(exc)
        finally:
            eng.dispose()

    threads = [threading.Thread(target=run, args=(slot,)) for slot in (0, 1)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=60)
    assert not errors, errors
    return rows, dict(per_key), results


def test_two_relays_publish_each_row_exactly_once(
    kafka_bootstrap: str, kafka_topics: Topics, store: SqlStore, db: Db, database_url: str
) -> None:
    topic = kafka_topics("genesis.domain.events")["genesis.domain.events"]
    rows, per_key, results = run_two_relays(kafka_bootstrap, topic, store, db, database_url)
    sent = [sum(r.sent for r in results[slot]) for slot in (0, 1)]
    assert sum(sent) == 500  # no row was claimed and marked by both
    assert min(sent) > 0, sent  # both relays took part
    assert sum(r.retried + r.failed for rs in results for r in rs) == 0
    assert Counter(statuses(db).values()) == Counter({("SENT", 1): 500})

    # The idempotent producers leave no Kafka-level duplicates either.
    on_topic = read_topic(kafka_bootstrap, topic, 500, settle_s=1.0, timeout_s=30)
    counts = Counter(ids_on(on_topic))
    assert len(on_topic) == 500
    assert set(counts) == {r.id for r in rows}
    assert set(counts.values()) == {1}
    assert {key: sorted(ids) for key, ids in by_key(on_topic).items()} == per_key


def test_claim_returns_each_keys_rows_in_seq_order(
    store: SqlStore, engine: Engine, kafka_bootstrap: str
) -> None:
    insert(store, [outbox_row(f"r-{n}", "t", f"k-{n % 2}") for n in range(6)])
    relay = make_relay(engine, make_producer(kafka_bootstrap))
    claimed = relay.claim()
    assert len(claimed) == 6
    assert [r.seq for r in claimed] == sorted(r.seq for r in claimed)


def test_two_relays_keep_per_key_order(
    kafka_bootstrap: str, kafka_topics: Topics, store: SqlStore, db: Db, database_url: str
) -> None:
    topic = kafka_topics("genesis.domain.events")["genesis.domain.events"]
    _rows, per_key, _results = run_two_relays(kafka_bootstrap, topic, store, db, database_url)
    on_topic = read_topic(kafka_bootstrap, topic, 500, settle_s=0.2, timeout_s=30)
    assert by_key(on_topic) == per_key


def test_key_resumes_in_seq_order_after_backoff(
    kafka_bootstrap: str, kafka_topics: Topics, store: SqlStore, db: Db, engine: Engine
) -> None:
    topic = kafka_topics("genesis.domain.events")["genesis.domain.events"]
    insert(store, [outbox_row(f"r-{n}", topic, "k-1") for n in range(1, 5)])
    db.exec(
        "UPDATE event_outbox SET attempts = 1, last_error = 'timed out',"
        " next_attempt_at = now() + interval '1 hour' WHERE id IN ('r-1', 'r-2')"
    )
    relay = make_relay(engine, make_producer(kafka_bootstrap))
    assert relay.run_once().claimed == 0
    db.exec("UPDATE event_outbox SET next_attempt_at = now()")
    assert relay.run_once().sent == 4
    assert ids_on(read_topic(kafka_bootstrap, topic, 4)) == ["r-1", "r-2", "r-3", "r-4"]
