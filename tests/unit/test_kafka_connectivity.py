"""`ClientWatch` and librdkafka's logger on a fake clock: a refused connection every 50 ms for a
minute gives a handful of lines, the brokers named once per outage, nothing when quiet."""

from __future__ import annotations

import logging

import structlog
from confluent_kafka import KafkaError

from orchestrator.adapters.kafka.connectivity import (
    ClientWatch,
    _Throttle,
    client_logger,
    reason_of,
)

REFUSED = (
    "127.0.0.1:9/bootstrap: Connect to ipv4#127.0.0.1:9 failed: Connection refused"
    " (after 0ms in state CONNECT)"
)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def refused_for(watch: ClientWatch, clock: Clock, seconds: float) -> None:
    for _ in range(int(seconds / 0.05)):
        watch(KafkaError(KafkaError._TRANSPORT, REFUSED))
        clock.now += 0.05


def test_a_minute_of_refused_connections_gives_a_line_per_backoff_step() -> None:
    clock = Clock()
    watch = ClientWatch("127.0.0.1:9", clock=clock)
    with structlog.testing.capture_logs() as logs:
        refused_for(watch, clock, 60)
    lines = [e for e in logs if e["event"] == "orchestrator_kafka_unreachable"]
    assert [round(e["down_for_s"]) for e in lines] == [0, 1, 3, 7, 15, 31]
    assert all(e["reason"] == "Connection refused" for e in lines)
    assert "bootstrap" not in str(lines), "never answered: the exit line names the brokers"
    assert sum(e["suppressed"] for e in lines) + len(lines) < 1200


def test_an_outage_after_an_answer_names_the_brokers_once_then_says_it_is_over() -> None:
    clock = Clock()
    watch = ClientWatch("127.0.0.1:9", clock=clock)
    watch.reachable()
    with structlog.testing.capture_logs() as logs:
        refused_for(watch, clock, 5)
        watch.reachable()
        clock.now += 60
        refused_for(watch, clock, 1)
    named = [e for e in logs if e.get("bootstrap") == "127.0.0.1:9"]
    assert len(named) == 2  # the first line of each outage
    assert [e["event"] for e in logs].count("orchestrator_kafka_reconnected") == 1


def test_a_quiet_watch_logs_nothing_but_keeps_the_reason() -> None:
    clock = Clock()
    watch = ClientWatch("127.0.0.1:9", quiet=True, clock=clock)
    with structlog.testing.capture_logs() as logs:
        refused_for(watch, clock, 5)
        watch(KafkaError(KafkaError._ALL_BROKERS_DOWN, "1/1 brokers are down"))
    assert logs == []
    assert watch.reason == "Connection refused"


def test_librdkafka_connection_lines_are_dropped_and_others_throttled() -> None:
    clock = Clock()
    throttle = _Throttle(clock)

    def record(facility: str, text: str) -> logging.LogRecord:
        return logging.LogRecord(
            "x", logging.ERROR, __file__, 1, "%s [%s] %s", (facility, "rdkafka#1", text), None
        )

    assert not throttle.filter(record("FAIL", REFUSED))
    kept = 0
    for i in range(100):
        kept += throttle.filter(record("REQTMOUT", f"Timed out {i} in-flight requests"))
        clock.now += 0.05
    assert kept == 3  # at 0, 1 and 3 s: the numbers in the text do not make it new
    assert any(isinstance(f, _Throttle) for f in client_logger().filters)


def test_the_reason_drops_the_address() -> None:
    assert reason_of(REFUSED) == "Connection refused"
    assert reason_of("1/1 brokers are down") == "1/1 brokers are down"
