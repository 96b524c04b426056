"""The DLQ record contract (`orchestrator.core.dlq`) and the size limits around it.

An over-size dead letter is truncated on the topic with headers saying so (the whole stays in
the database); every DLQ record fits the limit as librdkafka itself counts it; a tombstone's
record keeps its NULL value; the input's trace context rides along; an input whose effects
would not fit the producer's limit is a dead letter; the input cap is checked against the
producer's limit at start-up.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Iterator

import orjson
import pytest
from confluent_kafka import KafkaError, KafkaException, Producer

from orchestrator.adapters.kafka.clients import producer_config
from orchestrator.core import dlq
from orchestrator.core.errors import ConfigurationError
from orchestrator.core.inbound import Headers, RawMessage
from orchestrator.core.outbound import dead_letter_message, raw_dead_letter_id
from orchestrator.core.records import DeadLetterRecord, OutboxMessage, Status
from orchestrator.service.process_message import MessageProcessor, ProcessorConfig
from orchestrator.settings import load_settings
from tests.support.db import DLQ_TOPIC, FIXED_NOW, Wire
from tests.support.memory_store import MemoryStore

LIMIT = 1_000_000
TRACEPARENT = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def record(raw: RawMessage, category: str = "too_large") -> DeadLetterRecord:
    return DeadLetterRecord(raw_dead_letter_id(raw), category, "reason", raw, "s-1", None)


def headers_of(message: OutboxMessage) -> dict[str, bytes | None]:
    return dict(message.headers)


@pytest.fixture(scope="module")
def local_producer() -> Iterator[Producer]:
    """A real librdkafka producer with `message.max.bytes` = LIMIT. It checks a message's size
    in `produce()` itself, before any broker is involved: nothing here is ever delivered."""
    producer = Producer(
        {"bootstrap.servers": "127.0.0.1:9", "message.max.bytes": LIMIT, "log_level": 0}
    )
    yield producer
    producer.purge()


def accepted(producer: Producer, message: OutboxMessage) -> bool:
    try:
        producer.produce("t", value=message.payload, key=message.key, headers=list(message.headers))
    except KafkaException as exc:
        assert exc.args[0].code() == KafkaError.MSG_SIZE_TOO_LARGE
        return False
    finally:
        producer.purge()
    return True


# -- truncation ------------------------------------------------------------------------------


def test_an_over_size_value_is_cut_with_headers_saying_so() -> None:
    value = b"{" + b"x" * 2_000_000 + b"}"
    raw = RawMessage("genesis.domain.events", value, b"session-1", (("h", b"v"),), 0, 7)
    message = dead_letter_message(record(raw), "dlq", LIMIT)

    assert message.payload is not None
    assert LIMIT - 2_000 < len(message.payload) < LIMIT
    assert message.payload == value[: len(message.payload)]
    assert dlq.wire_size(message.key, message.payload, message.headers) <= LIMIT
    headers = headers_of(message)
    assert headers["x-dlq-truncated"] == b"true"
    assert headers["x-dlq-original-size"] == str(len(value)).encode()
    assert headers["x-dlq-sha256"] == hashlib.sha256(value).hexdigest().encode()
    assert headers["orig.h"] == b"v"
    assert message.key == b"session-1"


def test_a_record_that_fits_is_whole_and_says_nothing_of_truncation() -> None:
    value = b"y" * (LIMIT - 1_000)
    message = dead_letter_message(record(RawMessage("t", value, b"k")), "dlq", LIMIT)
    assert message.payload == value
    assert not any(name.startswith("x-dlq-") for name, _ in message.headers)


def test_the_default_limit_is_the_producers_default() -> None:
    """Today's record of a 2 MB input was the 2 MB: the relay could never send it."""
    message = dead_letter_message(record(RawMessage("t", b"z" * 2_000_000)), "dlq")
    assert dlq.wire_size(message.key, message.payload, message.headers) <= 1_000_000
    assert headers_of(message)["x-dlq-truncated"] == b"true"


BIG_HEADERS: Headers = tuple((f"h{i}", b"v" * 20_000) for i in range(60))  # 1.2 MB


@pytest.mark.parametrize(
    ("name", "raw"),
    [
        ("huge value", RawMessage("t", b"a" * 3_000_000, b"k")),
        ("value just over", RawMessage("t", b"a" * LIMIT, b"k")),
        ("huge headers", RawMessage("t", b"small", b"k", BIG_HEADERS)),
        ("huge headers and value", RawMessage("t", b"a" * LIMIT, b"k", BIG_HEADERS)),
        ("null value, huge headers", RawMessage("t", None, b"k", BIG_HEADERS)),
        ("huge key", RawMessage("t", b"v", b"k" * 1_200_000)),
        ("many small headers", RawMessage("t", b"v" * 900_000, None, (("n", b"1"),) * 20_000)),
    ],
)
def test_every_record_fits_the_producers_limit(
    name: str, raw: RawMessage, local_producer: Producer
) -> None:
    message = dead_letter_message(record(raw), "dlq", LIMIT)
    assert dlq.wire_size(message.key, message.payload, message.headers) <= LIMIT, name
    assert accepted(local_producer, message), f"{name}: librdkafka refuses the DLQ record"
    headers = headers_of(message)
    assert headers["dlq_category"] == b"too_large"
    assert headers["message_id"] == raw_dead_letter_id(raw).encode()


def test_headers_go_before_a_small_value_and_are_counted() -> None:
    raw = RawMessage("t", b"small", b"k", BIG_HEADERS)
    message = dead_letter_message(record(raw), "dlq", LIMIT)
    headers = headers_of(message)
    assert message.payload == b"small"  # whole: only headers had to go
    assert "x-dlq-truncated" not in headers
    kept = [n for n, _ in message.headers if n.startswith("orig.")]
    assert kept == [f"orig.h{i}" for i in range(len(kept))]  # a prefix, in order
    assert headers["x-dlq-headers-dropped"] == str(len(BIG_HEADERS) - len(kept)).encode()


def test_the_estimate_is_never_below_librdkafkas(local_producer: Producer) -> None:
    """A record of exactly the limit by our count is accepted by the producer itself."""
    headers: Headers = (("a", b"1"), ("bb", b"22"))
    room = LIMIT - dlq.wire_size(b"key", b"", headers)
    exact = OutboxMessage("i", "fact", "T", "t", b"key", headers, b"v" * room, None, None)
    assert dlq.wire_size(exact.key, exact.payload, exact.headers) == LIMIT
    assert accepted(local_producer, exact)


def test_a_long_reason_is_bounded() -> None:
    raw = RawMessage("t", b"v")
    rec = DeadLetterRecord("dl", "capability_dispatch_failed", "é" * 5_000, raw, None, None)
    reason = headers_of(dead_letter_message(rec, "dlq", LIMIT))["dlq_reason"]
    assert reason is not None and len(reason) <= dlq.MAX_REASON_BYTES
    assert reason.decode() == "é" * (len(reason) // 2)


# -- tombstones ------------------------------------------------------------------------------


def test_a_tombstone_stays_null() -> None:
    raw = RawMessage("genesis.domain.events", None, b"session-1", (), 0, 3)
    message = dead_letter_message(record(raw, "not_json"), "dlq", LIMIT)
    assert message.payload is None
    assert message.key == b"session-1"


def test_an_empty_value_stays_empty() -> None:
    message = dead_letter_message(record(RawMessage("t", b"", b"k"), "not_json"), "dlq", LIMIT)
    assert message.payload == b""


def test_a_tombstone_through_the_processor_is_a_null_dlq_record() -> None:
    store = MemoryStore()
    out = MessageProcessor(store).process_message(RawMessage("genesis.domain.events", None, b"k"))
    assert out.status is Status.DEAD_LETTERED
    [message] = [m for m in store.outbox() if m.kind == "dead_letter"]
    assert message.payload is None
    [dead] = store.dead_letters()
    assert dead.raw.value is None


# -- the input's trace context ---------------------------------------------------------------


def test_context_from_the_input_headers() -> None:
    raw = RawMessage(
        "t",
        b"not json",
        b"k",
        (("correlation-id", b"corr-1"), ("causation_id", b"cause-1"), ("traceparent", TRACEPARENT)),
    )
    headers = headers_of(dead_letter_message(record(raw, "not_json"), "dlq", LIMIT))
    assert headers["correlation_id"] == b"corr-1"
    assert headers["causation_id"] == b"cause-1"
    assert headers["traceparent"] == TRACEPARENT


def test_context_from_the_envelope() -> None:
    body = {
        "event_id": "e-1",
        "event_type": "Genesis.Session.Command.Received",
        "aggregate_id": "s-1",
        "payload": {"command_type": "Nope.Unknown"},
        "metadata": {"correlation_id": "corr-2", "causation_id": "cause-2"},
    }
    raw = RawMessage("t", orjson.dumps(body), b"s-1")
    headers = headers_of(dead_letter_message(record(raw, "unknown_command"), "dlq", LIMIT))
    assert headers["correlation_id"] == b"corr-2"
    assert headers["causation_id"] == b"cause-2"
    assert "traceparent" not in headers

    result = {"id": "r-1", "type": "X.Done", "data": {"session_id": "s", "correlation_id": "c3"}}
    raw = RawMessage("t", orjson.dumps(result), None, (("traceparent", TRACEPARENT),))
    headers = headers_of(dead_letter_message(record(raw, "missing_field"), "dlq", LIMIT))
    assert (headers["correlation_id"], headers["traceparent"]) == (b"c3", TRACEPARENT)
    assert "causation_id" not in headers


def test_no_context_is_invented() -> None:
    raw = RawMessage("t", b"\xff\xfe", None, (("correlation_id", b"\xff"), ("causation_id", b"")))
    headers = headers_of(dead_letter_message(record(raw, "not_utf8"), "dlq", LIMIT))
    assert not {"correlation_id", "causation_id", "traceparent"} & set(headers)


# -- effects that would not fit --------------------------------------------------------------


def test_a_valid_command_whose_effects_would_not_fit_is_a_dead_letter() -> None:
    """~1,010,000 bytes, under the default cap of ProcessorConfig: its fact could never be
    sent (the producer's default limit is 1,000,000), so nothing of it goes to the outbox
    but its dead letter."""
    store = MemoryStore()
    s, c = "session-" + Wire.new_id(), Wire.new_id()
    cmd = Wire.command("Character.Request", s, c, {"name": "n" * 1_010_000})
    out = MessageProcessor(store, clock=lambda: FIXED_NOW).process_message(cmd)

    assert (out.status, out.category) == (Status.DEAD_LETTERED, "too_large"), out.reason
    assert "KAFKA_MESSAGE_MAX_BYTES" in (out.reason or "")
    assert store.facts() == []
    [message] = store.outbox()
    assert (message.kind, message.topic) == ("dead_letter", DLQ_TOPIC)
    assert dlq.wire_size(message.key, message.payload, message.headers) <= 1_000_000
    assert headers_of(message)["correlation_id"] == c.encode()


def test_a_raised_producer_limit_lets_the_same_command_through() -> None:
    store = MemoryStore()
    cmd = Wire.command("Character.Request", "s-2", Wire.new_id(), {"name": "n" * 1_010_000})
    config = ProcessorConfig(max_message_bytes=2_000_000, max_publish_bytes=2_000_000)
    out = MessageProcessor(store, config, clock=lambda: FIXED_NOW).process_message(cmd)
    assert out.status is Status.PROCESSED
    assert {m.kind for m in store.outbox()} == {"fact", "capability"}


# -- settings: the cap against the producer's limit ------------------------------------------


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in list(os.environ):
        if name.startswith(("ORCHESTRATOR_", "KAFKA_")):
            monkeypatch.delenv(name)
    return monkeypatch


def test_defaults_leave_room_and_set_the_producers_limit(clean_env: pytest.MonkeyPatch) -> None:
    settings = load_settings()
    assert settings.kafka_message_max_bytes == 1_000_000
    assert settings.max_message_bytes + dlq.PUBLISH_HEADROOM_BYTES <= 1_000_000
    assert settings.dlq_limit() == 1_000_000
    assert producer_config(settings)["message.max.bytes"] == 1_000_000
    clean_env.setenv("KAFKA_MESSAGE_MAX_BYTES", "2000000")
    clean_env.setenv("ORCHESTRATOR_DLQ_MAX_BYTES", "500000")
    raised = load_settings()
    assert producer_config(raised)["message.max.bytes"] == 2_000_000
    assert raised.dlq_limit() == 500_000


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"ORCHESTRATOR_MAX_MESSAGE_BYTES": "1048576"}, "ORCHESTRATOR_MAX_MESSAGE_BYTES"),
        (
            {"KAFKA_MESSAGE_MAX_BYTES": "500000", "ORCHESTRATOR_MAX_MESSAGE_BYTES": "490000"},
            "KAFKA_MESSAGE_MAX_BYTES=500000",
        ),
        ({"ORCHESTRATOR_DLQ_MAX_BYTES": "1000001"}, "ORCHESTRATOR_DLQ_MAX_BYTES"),
        ({"KAFKA_EXTRA_PROPERTIES": '{"message.max.bytes": "2000000"}'}, "KAFKA_MESSAGE_MAX"),
    ],
)
def test_limits_that_cannot_hold_are_refused(
    clean_env: pytest.MonkeyPatch, env: dict[str, str], named: str
) -> None:
    for name, value in env.items():
        clean_env.setenv(name, value)
    with pytest.raises(ConfigurationError) as info:
        load_settings()
    assert named in str(info.value)


def test_start_up_stops_with_one_line() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ORCHESTRATOR_", "KAFKA_"))}
    env["ORCHESTRATOR_MAX_MESSAGE_BYTES"] = "1048576"
    done = subprocess.run(
        [sys.executable, "-c", "from orchestrator.startup import settings_or_exit as s; s()"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert "ORCHESTRATOR_MAX_MESSAGE_BYTES=1048576" in lines[0]
    assert "KAFKA_MESSAGE_MAX_BYTES=1000000" in lines[0]
