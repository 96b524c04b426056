"""Size limits through the real processes, on the session's Tansu broker.

Tansu has no broker-side message limit of its own, so the limit in force is the relay
producer's `message.max.bytes` (`KAFKA_MESSAGE_MAX_BYTES`, 1,000,000 here as librdkafka's
default and about Apache Kafka's): exactly what refused the rows before. Inputs are produced
with a client allowing 3 MB, as a foreign producer could.

* a 2 MB command and the ~1,010,000-byte command of issue 14 (over the 960 KiB default cap)
  are dead letters whose DLQ records arrive, truncated, with `x-dlq-*` headers and the input's
  trace context; `dead-letters show` still prints the whole value;
* a valid command just under the cap has its fact and capability message delivered;
* a valid command under the cap whose fact would not fit (a long correlation id repeated in
  the envelope and the headers) is a dead letter, not outbox rows that can never be sent;
* a tombstone's DLQ record has a NULL value;
* no outbox row is FAILED.
"""

from __future__ import annotations

import hashlib
import uuid

import orjson
from confluent_kafka import Producer

from orchestrator.core.dlq import wire_size
from orchestrator.core.inbound import RawMessage
from orchestrator.core.outbound import inbox_dead_letter_id, raw_dead_letter_id
from tests.support.harness import RawTail, Stack, command
from tests.support.helpers import wait_for

LIMIT = 1_000_000
TRACEPARENT = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def big_command(session: str, corr: str, total: int) -> bytes:
    """A valid Character.Request whose value is `total` bytes."""
    body = command(session, "Character.Request", {"name": ""}, corr)
    pad = total - len(orjson.dumps(body))
    assert pad > 0
    body["payload"]["payload"]["name"] = "n" * pad
    value = orjson.dumps(body)
    assert len(value) == total
    return value


def test_size_limits_end_to_end(stack: Stack) -> None:
    stack.overrides["KAFKA_MESSAGE_MAX_BYTES"] = str(LIMIT)
    stack.start_worker()
    stack.start_beat()
    stack.start_ingester()
    producer = Producer(
        {"bootstrap.servers": stack.bootstrap, "message.max.bytes": 3_000_000, "linger.ms": 1}
    )
    topic = stack.domain_topic
    corr = {name: str(uuid.uuid4()) for name in ("huge", "issue", "fits", "amplified")}
    session = {name: str(uuid.uuid4()) for name in corr}

    huge = RawMessage(
        topic,
        big_command(session["huge"], corr["huge"], 2_000_000),
        session["huge"].encode(),
        (("traceparent", TRACEPARENT),),
    )
    issue = RawMessage(
        topic, big_command(session["issue"], corr["issue"], 1_010_000), session["issue"].encode()
    )
    tombstone = RawMessage(topic, None, b"tombstone-key")
    fits_value = big_command(session["fits"], corr["fits"], 970_000)
    # Under the cap, but its correlation id goes into the fact twice (metadata and header).
    long_corr = "c" * 150_000
    amplified_body = orjson.loads(big_command(session["amplified"], long_corr, 900_000))
    amplified_id = amplified_body["event_id"]
    for raw in (huge, issue, tombstone):
        producer.produce(raw.topic, value=raw.value, key=raw.key, headers=list(raw.headers))
    producer.produce(topic, value=fits_value, key=session["fits"].encode())
    producer.produce(topic, value=orjson.dumps(amplified_body), key=session["amplified"].encode())
    assert producer.flush(30) == 0

    expected = {
        "huge": raw_dead_letter_id(huge),
        "issue": raw_dead_letter_id(issue),
        "tombstone": raw_dead_letter_id(tombstone),
        "amplified": inbox_dead_letter_id(topic, amplified_id, "too_large"),
    }

    def dead_letters() -> dict[str, str]:
        return {r.id: r.category for r in stack.rows("SELECT id, category FROM dead_letters")}

    wait_for(
        lambda: set(expected.values()) <= set(dead_letters()),
        timeout=60,
        message=lambda: (
            f"dead letters {expected}; have {dead_letters()}; inbox "
            f"{stack.rows('SELECT message_id, outcome, attempts, last_error FROM inbox')}"
        ),
    )
    wait_for(
        lambda: "Character.Requested" in stack.facts(session["fits"]),
        timeout=30,
        message="the just-under-cap command's fact",
    )
    stack.wait_idle()

    # -- nothing left FAILED: every row of the outbox was delivered ---------------------------
    statuses = {
        r.kind + ":" + r.status: r.n
        for r in stack.rows(
            "SELECT kind, status, count(*) AS n FROM event_outbox GROUP BY kind, status"
        )
    }
    assert statuses == {"dead_letter:SENT": 4, "fact:SENT": 1, "capability:SENT": 1}, statuses
    assert dead_letters()[expected["amplified"]] == "too_large"
    assert stack.facts(session["amplified"]) == []
    reason = stack.scalar("SELECT reason FROM dead_letters WHERE id = :i", i=expected["amplified"])
    assert "KAFKA_MESSAGE_MAX_BYTES" in reason

    tail = RawTail(stack, [stack.dlq_topic, topic, stack.task_topic("character")])
    try:
        messages = tail.drain(timeout=60)
    finally:
        tail.close()
    dlq = {(dict(m.headers)["message_id"] or b"").decode(): m for m in tail.on(stack.dlq_topic)}
    assert set(dlq) == set(expected.values()), sorted(dlq)

    # -- over-size inputs: truncated on the topic, with the headers of the contract -----------
    for name, raw in (("huge", huge), ("issue", issue)):
        m = dlq[expected[name]]
        h = dict(m.headers)
        assert raw.value is not None and m.value is not None
        assert wire_size(m.key, m.value, m.headers) <= LIMIT, name
        assert m.value == raw.value[: len(m.value)] and len(m.value) > LIMIT - 5_000, name
        assert h["x-dlq-truncated"] == b"true", name
        assert h["x-dlq-original-size"] == str(len(raw.value)).encode(), name
        assert h["x-dlq-sha256"] == hashlib.sha256(raw.value).hexdigest().encode(), name
        assert h["dlq_category"] == b"too_large", name
        assert h["correlation_id"] == corr[name].encode(), name
        assert m.key == raw.key, name
    assert dict(dlq[expected["huge"]].headers)["traceparent"] == TRACEPARENT

    # ... and whole in the database, as `dead-letters show` prints it.
    shown = stack.cli("dead-letters", "show", expected["huge"], "--json")
    assert shown.returncode == 0, shown.stderr
    detail = orjson.loads(shown.stdout)
    assert detail["value_size"] == 2_000_000
    assert detail["value"].encode() == huge.value

    # -- the tombstone: NULL on the topic ------------------------------------------------------
    dead_tombstone = dlq[expected["tombstone"]]
    assert dead_tombstone.value is None
    assert dead_tombstone.key == b"tombstone-key"
    assert dict(dead_tombstone.headers)["dlq_category"] == b"not_json"

    # -- the amplified command: its dead letter arrived, whole (it is under the cap) ----------
    amplified = dlq[expected["amplified"]]
    assert amplified.value == orjson.dumps(amplified_body)
    assert "x-dlq-truncated" not in dict(amplified.headers)

    # -- the just-under-cap command: its effects were delivered --------------------------------
    fits_facts = [
        m
        for m in messages
        if m.topic == topic and dict(m.headers).get("correlation_id") == corr["fits"].encode()
    ]
    assert [dict(m.headers)["type"] for m in fits_facts] == [b"Genesis.Session.Character.Requested"]
    assert fits_facts[0].value is not None and len(fits_facts[0].value) > 900_000
    tasks = [m for m in tail.on(stack.task_topic("character")) if m.key == session["fits"].encode()]
    assert len(tasks) == 1
    for proc in stack.procs:
        assert proc.alive(), f"{proc.name} died:\n{proc.tail()}"
