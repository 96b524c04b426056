"""The ingester against a real broker: a fetch that resumed past offsets it should have
delivered is read again from the first missing one, so every record reaches the inbox."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable

from confluent_kafka import Consumer, Producer, TopicPartition

from orchestrator.adapters.kafka.clients import make_consumer
from orchestrator.adapters.kafka.ingest_source import KafkaSource
from orchestrator.adapters.postgres.store import SqlStore
from orchestrator.core.queues import DOMAIN_QUEUE
from orchestrator.service.ingest import Ingester
from orchestrator.service.process_message import MessageProcessor
from orchestrator.settings import load_settings
from tests.support.db import Db, Wire
from tests.support.helpers import wait_for

COMMANDS = 10
SKIPPED = 5


def test_offsets_a_fetch_skipped_are_read_again(
    store: SqlStore,
    db: Db,
    wire: type[Wire],
    kafka_bootstrap: str,
    kafka_topics: Callable[..., dict[str, str]],
    kafka_group_id: str,
) -> None:
    topic = kafka_topics("genesis.domain.events")["genesis.domain.events"]
    session = str(uuid.uuid4())
    sent = [
        wire.command("Character.Request", session, str(uuid.uuid4()), {"n": i})
        for i in range(COMMANDS)
    ]
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "linger.ms": 1})
    for raw in sent:
        producer.produce(topic, raw.value, raw.key)
    assert producer.flush(10) == 0
    # The group resumes at offset 5: its first fetch starts past offsets 0-4, exactly what a
    # fetch that skipped them delivers, while the ingester expects offset 0 next.
    committer = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": kafka_group_id})
    try:
        committer.commit(offsets=[TopicPartition(topic, 0, SKIPPED)], asynchronous=False)
    finally:
        committer.close()

    triggers: list[str] = []  # the queues drains were asked for
    ingester = Ingester(
        MessageProcessor(store),
        store,
        None,
        triggers.append,
        lambda: None,
        topic,
        gap_rechecks=3,
    )
    ingester.gaps.expect(topic, 0, 0)
    consumer = KafkaSource(
        make_consumer(load_settings(kafka_bootstrap_servers=kafka_bootstrap), kafka_group_id)
    )
    stop = threading.Event()
    runner = threading.Thread(
        target=ingester.run, args=(consumer, [topic], stop), kwargs={"batch_size": 100}
    )
    runner.start()
    try:
        wait_for(
            lambda: db.scalar("SELECT count(*) FROM inbox") == COMMANDS,
            timeout=30,
            message=lambda: (
                f"{COMMANDS} inbox rows, have {db.scalar('SELECT count(*) FROM inbox')}"
            ),
        )
    finally:
        stop.set()
        runner.join(20)
    assert not runner.is_alive()
    recorded = {r["message_id"] for r in db.all("SELECT message_id FROM inbox")}
    assert recorded == {wire.message_id(raw) for raw in sent}
    assert triggers and set(triggers) == {DOMAIN_QUEUE}
