"""A broker that does not answer, said once: librdkafka's own lines through the JSON logger,
its connection errors throttled to one line per backoff step, and a bounded wait for the
cluster's first answer that a stop (or Ctrl-C) ends at once.

librdkafka retries a refused connection every ~50 ms and logs each attempt (`%3|...|FAIL|`
on stderr by default); its `error_cb` reports the same failure again. Every client of this
project gets a `ClientWatch` as its `error_cb` and the `orchestrator.kafka.client` stdlib
logger as its `logger` (rendered as JSON by `orchestrator.observability.logs`): connection
failures become one `orchestrator_kafka_unreachable` line, then one per backoff step (1 s,
2 s, 4 s ... 60 s); librdkafka's connection lines (`FAIL`) are left to that line, its other
lines are throttled per message. A one-shot command (`quiet`) logs none of them and prints its
own one line instead (`KafkaUnreachable`).

The retries are a plain loop with a deadline, not tenacity/stamina (neither is installed):
each try is a metadata request of at most `SLICE_S`, so a stop event or a KeyboardInterrupt is
seen between two tries, which a retry library's blocking sleep would not add anything to.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaError, KafkaException

from orchestrator.core.errors import OrchestratorError, TransientError
from orchestrator.observability.logs import get_logger

__all__ = [
    "CLIENT_LOGGER",
    "ClientWatch",
    "KafkaUnreachable",
    "TopicsMissing",
    "client_logger",
    "wait_for_metadata",
    "watch_of",
]

CLIENT_LOGGER = "orchestrator.kafka.client"
# librdkafka's errors meaning "no broker answered": reported by the watch, throttled.
CONNECTION_ERRORS = frozenset(
    {KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN, KafkaError._RESOLVE}
)
# librdkafka's log facilities for a failed connection: the watch's line says it already.
CONNECTION_FACILITIES = frozenset({"FAIL"})
FIRST_STEP_S = 1.0
MAX_STEP_S = 60.0
# No connection error for this long: the outage is over, the next error starts a new one.
OUTAGE_RESET_S = 10.0
# Longest single metadata request while waiting: how soon a stop or Ctrl-C is seen.
SLICE_S = 0.25

log = get_logger("orchestrator.kafka")

_REASON = re.compile(r"failed: (?P<reason>.*?)(?: \(after \d+ms in state \w+\))?(?: \(\d+ .*)?$")


def reason_of(text: str) -> str:
    """The cause in a librdkafka connection error, without the address it repeats
    (`127.0.0.1:9/bootstrap: Connect to ipv4#127.0.0.1:9 failed: Connection refused (after 0ms
    in state CONNECT)` -> `Connection refused`)."""
    found = _REASON.search(text)
    return found["reason"] if found else text


class KafkaUnreachable(TransientError):
    """No broker of the bootstrap list answered within the bound."""

    def __init__(self, bootstrap: str, waited_s: float, reason: str | None) -> None:
        cause = f" ({reason})" if reason else ""
        super().__init__(
            f"kafka unreachable: no broker answered at {bootstrap} within {waited_s:g} s{cause};"
            " is the broker up and KAFKA_BOOTSTRAP_SERVERS right?"
        )
        self.bootstrap = bootstrap


class TopicsMissing(OrchestratorError):
    """The broker answered, but topics the command writes to do not exist."""

    def __init__(self, topics: list[str]) -> None:
        super().__init__(
            f"topic {', '.join(sorted(topics))} does not exist: run `orchestrator topics create`"
        )
        self.topics = sorted(topics)


class _Step:
    """When the next line about one recurring condition may be written (doubling steps)."""

    def __init__(self, first_s: float, max_s: float) -> None:
        self.first_s = first_s
        self.max_s = max_s
        self.interval = first_s
        self.next_at = 0.0
        self.suppressed = 0

    def due(self, now: float) -> bool:
        if now < self.next_at:
            self.suppressed += 1
            return False
        self.next_at = now + self.interval
        self.interval = min(self.interval * 2, self.max_s)
        return True

    def take_suppressed(self) -> int:
        n, self.suppressed = self.suppressed, 0
        return n


class ClientWatch:
    """The `error_cb` of one client (call it with a `KafkaError`): connection errors become
    one line per backoff step, any other error one line per code and step."""

    def __init__(
        self,
        bootstrap: str,
        *,
        quiet: bool = False,
        first_step_s: float = FIRST_STEP_S,
        max_step_s: float = MAX_STEP_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.bootstrap = bootstrap
        self.quiet = quiet
        self.first_step_s = first_step_s
        self.max_step_s = max_step_s
        self.clock = clock
        self.down_since: float | None = None
        self.last_error_at = 0.0
        self.reason: str | None = None
        self.answered = False  # the cluster answered at least once
        self._named = False  # this outage's first line named the brokers
        self._outage = _Step(first_step_s, max_step_s)
        self._others: dict[int, _Step] = {}
        self._lock = threading.Lock()

    def __call__(self, err: KafkaError) -> None:
        if err.code() in CONNECTION_ERRORS:
            self.unreachable(reason_of(err.str()))
        else:
            self._other(err)

    def unreachable(self, reason: str) -> None:
        with self._lock:
            now = self.clock()
            if self.down_since is not None and now - self.last_error_at > OUTAGE_RESET_S:
                self.down_since = None  # it answered meanwhile, unseen: a new outage
            if self.down_since is None:
                self.down_since = now
                self._outage = _Step(self.first_step_s, self.max_step_s)
                self._named = False
            self.last_error_at = now
            if not reason.endswith("brokers are down"):
                self.reason = reason
            if self.quiet or not self._outage.due(now):
                return
            fields: dict[str, Any] = {
                "down_for_s": round(now - self.down_since, 1),
                "next_line_in_s": round(self._outage.next_at - now, 1),
                "reason": self.reason or reason,
                "suppressed": self._outage.take_suppressed(),
            }
            if self.answered and not self._named:
                # The first line of an outage names the brokers. At start-up (the cluster never
                # answered) the process's last line names them when it gives up.
                fields["bootstrap"] = self.bootstrap
                self._named = True
        log.warning("orchestrator_kafka_unreachable", **fields)

    def reachable(self) -> None:
        """The cluster answered (metadata, a message, an assignment)."""
        with self._lock:
            self.answered = True
            if self.down_since is None:
                return
            down_for = round(self.clock() - self.down_since, 1)
            self.down_since = None
        if not self.quiet:
            log.info("orchestrator_kafka_reconnected", down_for_s=down_for)

    def _other(self, err: KafkaError) -> None:
        if self.quiet:
            return
        with self._lock:
            step = self._others.setdefault(err.code(), _Step(self.first_step_s, self.max_step_s))
            if not step.due(self.clock()):
                return
            suppressed = step.take_suppressed()
        log.warning(
            "orchestrator_kafka_client_error",
            code=err.name(),
            error=err.str(),
            fatal=bool(err.fatal()),
            suppressed=suppressed,
        )


class _Throttle(logging.Filter):
    """librdkafka's lines (`logger.log(level, "%s [%s] %s", facility, client, text)`): the
    connection ones dropped (the watch says it), any other one once per step and text."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.clock = clock
        self.steps: dict[str, _Step] = {}
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args if isinstance(record.args, tuple) else ()
        facility = str(args[0]) if args else ""
        if facility in CONNECTION_FACILITIES:
            return False
        text = str(args[2]) if len(args) > 2 else record.getMessage()
        key = f"{facility}:{re.sub(r'[0-9]+', '#', text)}"
        with self._lock:
            if len(self.steps) > 1000:
                self.steps.clear()
            return self.steps.setdefault(key, _Step(FIRST_STEP_S, MAX_STEP_S)).due(self.clock())


def client_logger() -> logging.Logger:
    """The stdlib logger every client's librdkafka lines go to (the root's JSON handler)."""
    logger = logging.getLogger(CLIENT_LOGGER)
    if not any(isinstance(f, _Throttle) for f in logger.filters):
        logger.addFilter(_Throttle())
    return logger


def watched(bootstrap: str, *, quiet: bool = False) -> dict[str, Any]:
    """The `error_cb` and `logger` properties for one client."""
    return {"error_cb": ClientWatch(bootstrap, quiet=quiet), "logger": client_logger()}


def watch_of(conf: dict[str, Any]) -> ClientWatch | None:
    watch = conf.get("error_cb")
    return watch if isinstance(watch, ClientWatch) else None


def wait_for_metadata(
    client: Any,
    watch: ClientWatch | None,
    bootstrap: str,
    timeout_s: float,
    stop: threading.Event | None = None,
) -> Any:
    """The cluster's metadata (`client.list_topics()`), asked again until it answers or
    `timeout_s` passed (then `KafkaUnreachable`); None once `stop` is set. Each try lasts at
    most `SLICE_S`, so a stop or a KeyboardInterrupt is seen at once. Between tries it serves
    the client's callbacks (`poll(0)`): call it on a consumer before it subscribes."""
    deadline = time.monotonic() + timeout_s
    reason: str | None = None
    while stop is None or not stop.is_set():
        remaining = deadline - time.monotonic()
        try:
            metadata = client.list_topics(timeout=max(0.05, min(SLICE_S, remaining)))
        except KafkaException as exc:
            err = exc.args[0] if exc.args else None
            reason = reason_of(err.str()) if isinstance(err, KafkaError) else str(exc)
        else:
            if watch is not None:
                watch.reachable()
            return metadata
        client.poll(0)  # serves the error and log callbacks: the throttled lines
        if time.monotonic() >= deadline and (stop is None or not stop.is_set()):
            known = watch.reason if watch is not None else None
            raise KafkaUnreachable(bootstrap, timeout_s, known or reason)
    return None


def missing_topics(metadata: Any, topics: list[str]) -> list[str]:
    """The topics among `topics` the metadata does not hold (or holds with an error)."""
    return [t for t in topics if t not in metadata.topics or metadata.topics[t].error is not None]
