"""Waiting until a started consumer has its partitions, from its JSON log.

A consumer's first assignment waits for the broker to form its group (Tansu: half the session
timeout, at least 1 s; Apache Kafka: `group.initial.rebalance.delay.ms`, 3 s by default).
Input sent meanwhile is read only afterwards, so the first step of a run would seem slow. The
ingester logs `orchestrator_ingester_ready` (`orchestrator.adapters.kafka.ingest_source`) and
the simulator `orchestrator_simulator_ready` once assigned; a caller that started them (the
demo) waits for those lines before sending anything:

    wait_until_ready(child.log, INGESTER_READY, timeout_s=30, alive=child.alive)

Neither a Redis key nor the broker's group description is used: the log needs no extra
service, and Tansu's DescribeGroups reports no members.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import orjson

INGESTER_READY = "orchestrator_ingester_ready"
SIMULATOR_READY = "orchestrator_simulator_ready"
POLL_S = 0.02


class NotReady(Exception):
    """The process exited, or the deadline passed, before it logged its ready line."""


def ready_line(text: str, event: str) -> dict[str, object] | None:
    """The first JSON line of `text` whose `event` is `event`, decoded."""
    needle = f'"{event}"'
    for line in text.splitlines():
        if needle not in line:
            continue
        try:
            doc = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if isinstance(doc, dict) and doc.get("event") == event:
            return doc
    return None


def wait_until_ready(
    log: Path,
    event: str = INGESTER_READY,
    *,
    timeout_s: float = 30.0,
    alive: Callable[[], bool] = lambda: True,
) -> float:
    """Seconds waited until `log` holds the `event` line; `NotReady` when the process is gone
    (`alive()` false) or `timeout_s` passed first."""
    began = time.monotonic()
    deadline = began + timeout_s
    offset = 0
    pending = ""
    while True:
        try:
            with log.open("rb") as handle:
                handle.seek(offset)
                chunk = handle.read()
        except FileNotFoundError:
            chunk = b""
        offset += len(chunk)
        text = pending + chunk.decode(errors="replace")
        complete, _, pending = text.rpartition("\n")
        if ready_line(complete, event) is not None:
            return time.monotonic() - began
        if not alive():
            raise NotReady(f"{log.name}: the process exited before logging {event}")
        if time.monotonic() >= deadline:
            raise NotReady(f"{log.name}: no {event} within {timeout_s:g} s")
        time.sleep(POLL_S)
