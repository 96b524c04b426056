"""One run of one fault scenario on a fresh, isolated stack of real processes.

A run starts its own Kafka (Tansu), PostgreSQL and Redis (`tests.faults.servers`: real servers
from the embedded wheels, on ports fixed at their first start so they can be restarted at the
same address), migrates the database and creates the topics through the CLI, then starts the
orchestrator's processes through their real command lines (`orchestrator ingest`, `celery -A
tasks worker`, `celery -A tasks beat`, `orchestrator simulate`) under a supervisor that starts a
process again when it exits (as `restart: unless-stopped` does in docker-compose.yml).

A steady stream of commands across many sessions goes in while the simulator answers; the
scenario injects its fault at a random moment (seeded); then the run waits until the pipeline has
settled (deadline), checks the invariants (`orchestrator.devtools.verify`) and reads every topic to
the end. It counts: messages, lost commands, duplicated effects, Kafka redeliveries (same id),
dead letters, unexpected process exits and the time to recover.
"""

from __future__ import annotations

import contextlib
import random
import shutil
import statistics
import subprocess
import threading
import time
import traceback
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import psutil
from sqlalchemy import text

import orchestrator.core.queues as queue_names
from orchestrator.adapters.postgres.codec import decode_headers
from orchestrator.devtools.supervisor import stop_together
from orchestrator.devtools.verify import Code, ExpectedInput, verify
from tests.faults.load import Load, Sent, Tap
from tests.faults.servers import RestartableKafka, RestartablePostgres, RestartableRedis
from tests.support.harness import ALL_QUEUES, BIN, Proc, RawTail, Stack, header

if TYPE_CHECKING:
    from tests.faults.scenarios import Scenario

WORK_QUEUES = queue_names.queue_list(queue_names.WORK_QUEUES)
RELAY_QUEUE = queue_names.RELAY_QUEUE
TIMED_OUT = "Genesis.Session.AsyncTask.TimedOut"
TERMINAL_SQL = (
    "SELECT correlation_id, min(created_at) FROM domain_events"
    " WHERE event_type LIKE '%.Confirmed' OR event_type LIKE '%.Failed'"
    f" OR event_type = '{TIMED_OUT}' GROUP BY correlation_id"
)
BACKLOG_SQL = (
    "SELECT (SELECT count(*) FROM inbox WHERE processed_at IS NULL),"
    " (SELECT count(*) FROM event_outbox WHERE status <> 'SENT'),"
    " (SELECT count(*) FROM async_tasks WHERE status IN ('PENDING', 'RUNNING')),"
    " (SELECT count(*) FROM inbox),"
    " (SELECT coalesce(extract(epoch FROM now() - min(created_at)), 0) FROM event_outbox"
    "  WHERE status = 'PENDING'),"
    " (SELECT coalesce(extract(epoch FROM now() - min(received_at)), 0) FROM inbox"
    "  WHERE processed_at IS NULL)"
)
# Settings of every run (the harness adds its own: re-drive after 3 s, sweeps every second).
BASE_OVERRIDES = {
    # A killed pool child leaves its session lock behind until the TTL expires.
    "ORCHESTRATOR_LOCK_TTL_S": "5",
    # A killed relay's claimed rows are claimed again when the lease expires.
    "ORCHESTRATOR_RELAY_LEASE_S": "5",
    "ORCHESTRATOR_RELAY_MESSAGE_TIMEOUT_MS": "3000",
    "ORCHESTRATOR_RELAY_BACKOFF_MAX_S": "2",
    "ORCHESTRATOR_LOG_LEVEL": "INFO",
}


@dataclass
class Options:
    commands: int = 300
    rate: float = 20.0
    sessions: int | None = None  # default: a quarter of the commands, at least 10
    settle_timeout_s: float = 120.0
    scores: str = "6,8"  # every generation is regenerated once, then confirmed
    worker_concurrency: int = 2
    keep_logs: bool = False
    out_dir: Path = field(default_factory=lambda: Path("/tmp/orchestrator-faults"))

    def session_count(self) -> int:
        return self.sessions or max(10, self.commands // 4)


@dataclass
class RunResult:
    scenario: str
    seed: int
    mode: str
    commands: int
    messages: int  # inputs recorded in the inbox (commands and capability results)
    delivered: int  # input copies produced to Kafka (duplicates and re-sends included)
    lost: int
    duplicated_effects: int
    redelivered: int  # copies of a message id on Kafka beyond the first (at-least-once)
    dead_lettered: int
    unexpected_exits: int
    timed_out: int
    recover_s: float | None
    settle_s: float | None
    settled: bool
    verify_ok: bool
    problems: list[str]
    notes: dict[str, Any]
    fault_log: list[str]
    duration_s: float
    logs: str | None

    @property
    def passed(self) -> bool:
        return (
            self.settled
            and self.verify_ok
            and self.lost == 0
            and self.duplicated_effects == 0
            and not self.problems
        )

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["passed"] = self.passed
        return d

    def line(self) -> str:
        verdict = "PASS" if self.passed else "FAIL"
        rec = f"{self.recover_s:.1f}s" if self.recover_s is not None else "-"
        return (
            f"{verdict} {self.scenario} seed={self.seed} mode={self.mode}:"
            f" {self.commands} commands,"
            f" {self.messages} messages, lost {self.lost}, duplicated effects"
            f" {self.duplicated_effects}, redelivered {self.redelivered}, dead-lettered"
            f" {self.dead_lettered}, timed out {self.timed_out}, unexpected exits"
            f" {self.unexpected_exits}, recovered in {rec} ({self.duration_s:.0f}s)"
            + (
                f", skipped fetches read again {gaps}"
                if (gaps := self.notes.get("consumer_gaps"))
                else ""
            )
        )


# -- processes under a supervisor ---------------------------------------------------------------


@dataclass
class Role:
    name: str
    start: Callable[[dict[str, str]], Proc]
    env: dict[str, str] = field(default_factory=dict)  # only for the first start (crash points)
    proc: Proc | None = None
    held: bool = False  # not restarted while held
    starts: int = 0
    exits: list[tuple[float, int | None]] = field(default_factory=list)
    expected_exits: int = 0


class Supervisor:
    """Starts each role's process again after it exited (restart delay `delay_s`)."""

    def __init__(self, delay_s: float = 0.5) -> None:
        self.delay_s = delay_s
        self.roles: dict[str, Role] = {}
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="supervisor", daemon=True)
        self.errors: list[str] = []

    def add(self, role: Role) -> Role:
        with self._lock:
            self.roles[role.name] = role
            self._start(role, role.env)
        return role

    def _start(self, role: Role, env: dict[str, str]) -> None:
        role.proc = role.start(env)
        role.starts += 1

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def proc(self, name: str) -> Proc:
        role = self.roles[name]
        assert role.proc is not None
        return role.proc

    @contextlib.contextmanager
    def holding(self, name: str) -> Iterator[Role]:
        """The role is not restarted inside the block (the scenario manages it)."""
        role = self.roles[name]
        with self._lock:
            role.held = True
        try:
            yield role
        finally:
            with self._lock:
                role.held = False

    def kill(self, name: str, expected: bool = True) -> None:
        """SIGKILL the role's whole process group (a worker with its pool)."""
        with self._lock:
            role = self.roles[name]
            if expected:
                role.expected_exits += 1
            if role.proc is not None:
                role.proc.kill()

    def restart_now(self, name: str) -> None:
        with self._lock:
            role = self.roles[name]
            if role.proc is not None and role.proc.alive():
                raise RuntimeError(f"{name} is still running")
            self._start(role, {})

    def unexpected_exits(self) -> int:
        return sum(max(0, len(r.exits) - r.expected_exits) for r in self.roles.values())

    def _loop(self) -> None:
        while not self._stop.wait(0.1):
            with self._lock:
                for role in self.roles.values():
                    proc = role.proc
                    if proc is None or proc.alive() or role.held:
                        continue
                    exited = time.monotonic()
                    if not role.exits or role.exits[-1][0] < exited - 0.05:
                        role.exits.append((exited, proc.popen.returncode))
                    role.proc = None
                    threading.Timer(self.delay_s, self._restart, args=(role.name,)).start()

    def _restart(self, name: str) -> None:
        with self._lock:
            role = self.roles[name]
            if self._stop.is_set() or role.held or role.proc is not None:
                return
            try:
                self._start(role, {})
            except Exception as exc:  # seen by the loop as an exit, tried again
                role.exits.append((time.monotonic(), None))
                self.errors.append(f"{name}: {exc}")


def pool_children(proc: Proc) -> list[int]:
    try:
        return [c.pid for c in psutil.Process(proc.pid).children()]
    except psutil.NoSuchProcess:
        return []


def log_text(proc: Proc) -> str:
    try:
        return proc.log.read_text(errors="replace")
    except OSError:
        return ""


# -- reading the topics -------------------------------------------------------------------------


@dataclass(frozen=True)
class Out:
    topic: str
    message_id: str
    value: bytes


STALL_S = 10.0


def read_produced(
    stack: Stack, topics: list[str], timeout: float = 90.0
) -> tuple[list[Out], dict[str, Any]]:
    """Every message the orchestrator produced on `topics` (those with a `message_id` header),
    read to the end (`RawTail.drain`), and the offsets the broker stopped serving (read on after
    `STALL_S`; a message of ours there counts as missing)."""
    tail = RawTail(stack, topics)
    try:
        messages = tail.drain(timeout, stall_s=STALL_S)
    finally:
        tail.close()
    out = [
        Out(m.topic, mid.decode(), m.value or b"")
        for m in messages
        if (mid := header(m, "message_id")) is not None
    ]
    return out, tail.unreadable


# -- one run --------------------------------------------------------------------------------------


class Run:
    """The servers, processes, input and measurements of one scenario run."""

    def __init__(self, scenario: Scenario, seed: int, opts: Options) -> None:
        self.scenario = scenario
        self.seed = seed
        self.opts = opts
        self.rng = random.Random(seed)
        self.mode = "-"
        self.dir = opts.out_dir / "runs" / f"{scenario.name}-{seed}"
        self.kafka = RestartableKafka()
        self.postgres = RestartablePostgres()
        self.redis = RestartableRedis()
        self.supervisor = Supervisor()
        self.stack: Stack | None = None
        self.load: Load | None = None
        self.tap: Tap | None = None
        self.fault_at: float | None = None
        self.fault_log: list[str] = []
        self.notes: dict[str, Any] = {}
        self.terminal_at: dict[str, float] = {}
        self.samples: list[tuple[float, int, int, int, int, float, float]] = []
        self.t0 = time.monotonic()
        self._monitor_stop = threading.Event()
        self._monitor = threading.Thread(target=self._watch, name="monitor", daemon=True)
        self.extra_inputs = 0
        self.monitor_interval_s = 0.25

    # -- set-up --------------------------------------------------------------------------------

    def log(self, what: str) -> None:
        line = f"{time.monotonic() - self.t0:7.2f}s {what}"
        self.fault_log.append(line)

    def start_servers(self) -> Stack:
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True)
        stack = Stack(self.dir, self.kafka.start(), self.postgres.start(), self.redis.start())
        stack.overrides.update(BASE_OVERRIDES)
        stack.overrides.update(self.scenario.overrides(self))
        self.stack = stack
        # Migrations and topics through the CLI, as an operator runs them (both at once).
        steps = [
            subprocess.Popen(
                [str(BIN / "orchestrator"), *args],
                cwd=stack.tmp,
                env=stack.env(),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
            for args in (("db", "upgrade"), ("topics", "create"))
        ]
        for step in steps:
            output, _ = step.communicate(timeout=120)
            if step.returncode != 0:
                raise AssertionError(f"{step.args!r}: {output.decode(errors='replace')}")
        return stack

    @property
    def s(self) -> Stack:
        assert self.stack is not None
        return self.stack

    def worker_role(
        self, name: str, queues: str = ALL_QUEUES, concurrency: int | None = None, **env: str
    ) -> Role:
        c = concurrency or self.opts.worker_concurrency
        return self.supervisor.add(
            Role(name, lambda e: self.s.start_worker(name, queues=queues, concurrency=c, **e), env)
        )

    def start_processes(self) -> None:
        stack = self.s
        sc = self.scenario
        sim_args = ["--scores", sc.scores or self.opts.scores, *sc.simulator_args]
        self.supervisor.add(Role("simulator", lambda e: stack.start_simulator(*sim_args, **e)))
        sc.start_workers(self)
        self.supervisor.add(
            Role("beat", lambda e: stack.start_beat("beat", **e), sc.env_for(self, "beat"))
        )
        self.supervisor.add(
            Role(
                "ingester",
                lambda e: stack.start_ingester("ingester", **e),
                sc.env_for(self, "ingester"),
            )
        )
        self.supervisor.start()
        workers = [
            r for r in self.supervisor.roles.values() if r.name.startswith(("worker", "relay"))
        ]
        deadline = time.monotonic() + 60
        for role in workers:
            while " ready." not in log_text(self.supervisor.proc(role.name)):
                if time.monotonic() > deadline:
                    raise AssertionError(
                        f"{role.name} not ready:\n{self.supervisor.proc(role.name).tail()}"
                    )
                time.sleep(0.05)

    # -- measurements --------------------------------------------------------------------------

    def _watch(self) -> None:
        while not self._monitor_stop.wait(self.monitor_interval_s):
            try:
                self.poll_db()
            except Exception:  # the database may be down (that can be the fault)
                continue

    def poll_db(self) -> tuple[int, int, int, int, float, float]:
        now = time.monotonic()
        with self.s.engine.connect() as conn:
            for corr, _ in conn.execute(text(TERMINAL_SQL)):
                if corr is not None and corr not in self.terminal_at:
                    self.terminal_at[corr] = now
            row = conn.execute(text(BACKLOG_SQL)).one()
        unprocessed, unsent, active, inbox, lag, backlog_age = (
            int(row[0]),
            int(row[1]),
            int(row[2]),
            int(row[3]),
            float(row[4]),
            float(row[5]),
        )
        self.samples.append((now, unprocessed, unsent, active, inbox, lag, backlog_age))
        return unprocessed, unsent, active, inbox, lag, backlog_age

    def all_terminal(self, sent: list[Sent]) -> bool:
        return all(s.correlation_id in self.terminal_at for s in sent)

    def settle(self, timeout: float) -> float | None:
        """Wait until every input is processed, every outbox row SENT, no AsyncTask active, every
        command's flow at an outcome, and the inbox unchanged for a second; the time it took."""
        assert self.load is not None
        began = time.monotonic()
        deadline = began + timeout
        quiet_since: float | None = None
        last_inbox = -1
        while time.monotonic() < deadline:
            time.sleep(0.25)
            if not self.load.settled():
                quiet_since = None
                continue
            if self.tap is not None and self.tap.pending():
                continue
            try:
                unprocessed, unsent, active, inbox, _, _ = self.poll_db()
            except Exception:
                quiet_since = None
                continue
            busy = unprocessed or unsent or active or not self.all_terminal(self.load.sent)
            if busy or inbox != last_inbox:
                quiet_since = None
                last_inbox = inbox
                continue
            if quiet_since is None:
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since >= 1.0:
                return quiet_since - began
        return None

    def recover_time(self, settled_at: float | None) -> float | None:
        """Discrete faults: from the fault until every command sent before it reached its
        outcome. Continuous faults: from the last faulty input until the pipeline settled."""
        assert self.load is not None
        if self.scenario.continuous:
            end = self.load.finished_at
            if settled_at is None or end is None:
                return None
            return max(0.0, settled_at - end)
        if self.fault_at is None:
            return None
        before = [s for s in self.load.sent if s.at <= self.fault_at]
        times = [self.terminal_at.get(s.correlation_id) for s in before]
        if any(t is None for t in times):
            return None
        done = max([t for t in times if t is not None], default=self.fault_at)
        return max(0.0, done - self.fault_at)

    # -- the run -------------------------------------------------------------------------------

    def execute(self) -> RunResult:
        began = time.monotonic()
        error: str | None = None
        settle_s: float | None = None
        settled_at: float | None = None
        try:
            self.start_servers()
            self.start_processes()
            sc = self.scenario
            self.load = Load(
                self.s.bootstrap,
                self.s.domain_topic,
                self.rng,
                commands=self.opts.commands,
                rate=self.opts.rate,
                sessions=self.opts.session_count(),
                duplicates=sc.duplicate_commands,
                on_sent=lambda sent: sc.on_command(self, sent),
            )
            if sc.tap_results:
                self.tap = Tap(
                    self.s.bootstrap,
                    self.s.capability_topic,
                    self.rng,
                    duplicates=sc.duplicate_results,
                )
                self.tap.start()
            self._monitor.start()
            self.t0 = time.monotonic()
            self.load.start()
            self.log(f"load: {self.opts.commands} commands at {self.opts.rate}/s")
            # On this (long-lived) thread: a server started again here gets the parent-death
            # signal when the thread that started it ends.
            self._fault()
            while not self.load.done():
                if self.load.error is not None:
                    raise self.load.error
                time.sleep(0.1)
            self.log("load: all sent")
            settle_start = time.monotonic()
            settle_s = self.settle(self.opts.settle_timeout_s + sc.extra_settle_s)
            if settle_s is not None:
                settled_at = settle_start + settle_s
                settle_s = settled_at - (self.load.finished_at or settle_start)
                self.log("settled")
            else:
                self.log("NOT settled before the deadline")
        except Exception:
            error = traceback.format_exc()
            self.log(f"run error: {error.splitlines()[-1]}")
        except BaseException:  # interrupted (Ctrl-C, SIGTERM): stop everything, judge nothing
            self.abort()
            raise
        return self.finish(began, settle_s, settled_at, error)

    def abort(self) -> None:
        """Stop the supervisor, the load, the tap, every process and every server."""
        self._monitor_stop.set()
        self.supervisor.stop()
        if self.load is not None:
            self.load.close()
        if self.tap is not None:
            self.tap.stop()
        self.teardown()

    def _fault(self) -> None:
        assert self.load is not None
        try:
            lo, hi = self.scenario.window
            at = self.load.started_at or time.monotonic()
            delay = self.rng.uniform(lo, hi) * self.load.duration_s
            time.sleep(max(0.0, at + delay - time.monotonic()))
            self.scenario.inject(self)
        except Exception:
            self.log(f"fault injection failed: {traceback.format_exc()}")
            self.notes["fault_error"] = traceback.format_exc().splitlines()[-1]

    def mark_fault(self, what: str) -> None:
        if self.fault_at is None:
            self.fault_at = time.monotonic()
        self.log(f"fault: {what}")

    # -- checking ------------------------------------------------------------------------------

    def finish(
        self, began: float, settle_s: float | None, settled_at: float | None, error: str | None
    ) -> RunResult:
        self._monitor_stop.set()
        problems: list[str] = []
        if error is not None:
            problems.append(f"run error: {error.strip().splitlines()[-1]}")
            self.notes["traceback"] = error
        self.supervisor.stop()
        if self.load is not None:
            self.load.close()
        if self.tap is not None:
            self.tap.stop()
        for what, err in (
            ("load", self.load.error if self.load else None),
            ("tap", self.tap.error if self.tap else None),
        ):
            if err is not None:
                problems.append(f"the {what} thread failed: {err!r}")
        if self.supervisor.errors:
            self.notes["restart_errors"] = self.supervisor.errors[:5]
        counts = self.check(problems) if self.stack is not None and self.load is not None else {}
        unexpected = self.supervisor.unexpected_exits()
        self.notes["exits"] = {
            r.name: [rc for _, rc in r.exits] for r in self.supervisor.roles.values() if r.exits
        }
        if self.samples:
            self.notes["max_outbox_lag_s"] = round(max(s[5] for s in self.samples), 2)
            self.notes["max_inbox_backlog"] = max(s[1] for s in self.samples)
        gaps = self.consumer_gaps()
        if gaps:
            self.notes["consumer_gaps"] = gaps
        latencies = self.latencies()
        if latencies:
            self.notes["latency_p50_s"] = round(statistics.median(latencies), 3)
            self.notes["latency_max_s"] = round(max(latencies), 3)
        self.teardown()
        result = RunResult(
            scenario=self.scenario.name,
            seed=self.seed,
            mode=self.mode,
            commands=len(self.load.sent) if self.load else 0,
            messages=counts.get("messages", 0),
            delivered=counts.get("delivered", 0),
            lost=counts.get("lost", 0),
            duplicated_effects=counts.get("duplicated_effects", 0),
            redelivered=counts.get("redelivered", 0),
            dead_lettered=counts.get("dead_lettered", 0),
            unexpected_exits=unexpected,
            timed_out=counts.get("timed_out", 0),
            recover_s=self.recover_time(settled_at) if self.load else None,
            settle_s=settle_s,
            settled=settle_s is not None,
            verify_ok=counts.get("verify_ok", False),
            problems=problems,
            notes=self.notes,
            fault_log=self.fault_log,
            duration_s=time.monotonic() - began,
            logs=None,
        )
        if not result.passed or self.opts.keep_logs:
            result.logs = str(self.dir)
            self.write_evidence(result)
        else:
            shutil.rmtree(self.dir, ignore_errors=True)
        return result

    def consumer_gaps(self) -> dict[str, int]:
        """Per log file, the fetches that skipped offsets and were read again (or accepted)."""
        found: dict[str, int] = {}
        for log_file in sorted(self.dir.glob("*.log")):
            text = log_file.read_text(errors="replace")
            n = text.count('"orchestrator_consumer_gap"') + text.count("orchestrator_simulator_gap")
            if n:
                found[log_file.stem] = n
        return found

    def latencies(self) -> list[float]:
        if self.load is None:
            return []
        return [
            self.terminal_at[s.correlation_id] - s.at
            for s in self.load.sent
            if s.correlation_id in self.terminal_at
        ]

    def check(self, problems: list[str]) -> dict[str, Any]:
        assert self.load is not None
        stack = self.s
        counts: dict[str, Any] = {}
        sent = self.load.sent
        commands = {s.event_id: s for s in sent}
        try:
            full = verify(stack.engine)
            by_command = verify(
                stack.engine, [ExpectedInput.command(mid) for mid in commands], sessions=False
            )
        except Exception as exc:
            problems.append(f"verify could not run: {exc}")
            return counts
        allowed = self.scenario.allowed_problem
        unexpected = [p for p in full.problems if not allowed(self, p)]
        unexpected_cmd = [p for p in by_command.problems if not allowed(self, p)]
        counts["verify_ok"] = not unexpected and not unexpected_cmd
        self.notes["verify"] = full.summary()
        accepted = len(full.problems) - len(unexpected)
        if accepted:
            self.notes["verify_accepted"] = dict(
                Counter(p.code.value for p in full.problems if allowed(self, p))
            )
        for p in unexpected[:20]:
            problems.append(f"verify: {p}")
        for p in unexpected_cmd[:20]:
            problems.append(f"verify (commands): {p}")

        lost_ids: set[str] = set()
        losing = {
            Code.MESSAGE_MISSING,
            Code.INBOX_UNPROCESSED,
            Code.MISSING_FACT,
            Code.NOT_SETTLED,
            Code.REPLAN_FAILED,
            Code.MISSING_CAPABILITY_MESSAGE,
        }
        for p in unexpected_cmd:
            if p.code in losing and p.message_id in commands:
                lost_ids.add(p.message_id)
        with contextlib.suppress(Exception):
            self.poll_db()  # one last look
        unfinished = [s for s in sent if s.correlation_id not in self.terminal_at]
        for s in unfinished:
            lost_ids.add(s.event_id)
        # A fact or request still in the outbox has not reached anyone downstream.
        stuck = {
            r[0]
            for r in stack.rows(
                "SELECT DISTINCT correlation_id FROM event_outbox WHERE status <> 'SENT'"
            )
        }
        for s in sent:
            if s.correlation_id in stuck:
                lost_ids.add(s.event_id)
        if unfinished:
            problems.append(
                f"{len(unfinished)} command(s) without an outcome, e.g."
                f" {unfinished[0].command_type} {unfinished[0].event_id} in session"
                f" {unfinished[0].session_id}"
            )

        db = self.db_counts()
        counts["messages"] = db["inbox"]
        counts["dead_lettered"] = db["dead_letters"]
        counts["timed_out"] = db["timed_out"]
        dup_effects = (
            db["duplicate_tasks"] + db["duplicate_capability_rows"] + db["duplicate_facts"]
        )
        dup_effects += sum(
            1 for p in unexpected if p.code in {Code.DUPLICATE_FACT, Code.UNEXPECTED_FACT}
        )
        counts["delivered"] = (
            self.load.copies
            + (self.tap.copies if self.tap else 0)
            + len(self.tap.results if self.tap else [])
            + self.extra_inputs
        )
        if self.tap is None:
            counts["delivered"] += db["capability_inbox"]

        try:
            kafka = self.kafka_counts(db["outbox"])
        except Exception as exc:
            problems.append(f"reading the topics failed: {exc}")
            kafka = {"redelivered": 0, "unknown": 0, "missing": 0, "missing_old_broker": 0}
        counts["redelivered"] = kafka["redelivered"]
        dup_effects += kafka["unknown"]
        if kafka["unknown"]:
            problems.append(f"{kafka['unknown']} message id(s) on Kafka that no outbox row has")
        if kafka["missing"]:
            problems.append(f"{kafka['missing']} SENT outbox row(s) not on their topic")
        if kafka["missing_old_broker"]:
            self.notes["sent_to_the_lost_broker"] = kafka["missing_old_broker"]
        counts["lost"] = len(lost_ids) + kafka["missing"]
        counts["duplicated_effects"] = dup_effects
        if dup_effects:
            problems.append(f"{dup_effects} duplicated effect(s): {db['duplicate_detail']}")
        self.scenario.check(self, problems, db)
        return counts

    def db_counts(self) -> dict[str, Any]:
        stack = self.s
        tasks = stack.rows("SELECT causation_id, task_type FROM async_tasks")
        outbox = stack.rows(
            "SELECT id, kind, message_type, topic, status, sent_at, headers FROM event_outbox"
        )
        facts = stack.rows("SELECT causation_id, event_type FROM domain_events")
        dup_tasks = sum(n - 1 for n in Counter((r[0], r[1]) for r in tasks).values() if n > 1)
        caps: Counter[tuple[str | None, str]] = Counter()
        for r in outbox:
            if r[1] == "capability":
                cause = next(
                    (v.decode() for k, v in decode_headers(r[6]) if k == "causation_id" and v),
                    None,
                )
                caps[(cause, r[2])] += 1
        dup_caps = sum(n - 1 for n in caps.values() if n > 1)
        dup_facts = sum(n - 1 for n in Counter((r[0], r[1]) for r in facts).values() if n > 1)
        detail = {
            "tasks": [k for k, n in Counter((r[0], r[1]) for r in tasks).items() if n > 1][:5],
            "capability": [k for k, n in caps.items() if n > 1][:5],
        }
        return {
            "inbox": stack.scalar("SELECT count(*) FROM inbox"),
            "capability_inbox": stack.scalar(
                "SELECT count(*) FROM inbox WHERE kind = 'capability'"
            ),
            "dead_letters": stack.scalar("SELECT count(*) FROM dead_letters"),
            "timed_out": sum(1 for r in facts if r[1] == TIMED_OUT),
            "timed_out_by_type": Counter(
                r[0]
                for r in stack.rows("SELECT task_type FROM async_tasks WHERE error LIKE 'timeout%'")
            ),
            "duplicate_tasks": dup_tasks,
            "duplicate_capability_rows": dup_caps,
            "duplicate_facts": dup_facts,
            "duplicate_detail": detail,
            "outbox": outbox,
            "facts": facts,
        }

    def kafka_counts(self, outbox: list[Any]) -> dict[str, int]:
        stack = self.s
        topics = [stack.domain_topic, stack.dlq_topic, *(stack.task_topic(b) for b in TASK_BASES)]
        produced, unreadable = read_produced(stack, topics)
        if unreadable:
            self.notes["unreadable_offsets"] = unreadable
        copies = Counter((o.topic, o.message_id) for o in produced)
        rows = {(r[3], r[0]): r for r in outbox}
        unknown = sum(1 for k in copies if k not in rows)
        missing = 0
        old_broker = 0
        cutoff = self.notes.get("broker_restarted_db_time")
        examples: list[str] = []
        for key, r in rows.items():
            if r[4] != "SENT" or key in copies:
                continue
            if cutoff is not None and r[5] is not None and r[5].timestamp() <= cutoff:
                old_broker += 1
            else:
                missing += 1
                if len(examples) < 10:
                    examples.append(f"{r[3]} {r[0]} {r[2]} sent_at {r[5]}")
        if examples:
            self.notes["sent_but_not_on_kafka"] = examples
        return {
            "redelivered": sum(n - 1 for n in copies.values()),
            "unknown": unknown,
            "missing": missing,
            "missing_old_broker": old_broker,
        }

    # -- tear-down -----------------------------------------------------------------------------

    def teardown(self) -> None:
        if self.stack is not None:
            # Everything is measured: a short grace, then whatever is left is killed.
            stop_together(self.stack.procs, timeout=1.5)
            with contextlib.suppress(Exception):
                self.stack.close()
        # Nothing of theirs is needed any more: stop them at once (PostgreSQL in immediate
        # mode, which leaves no shared memory behind), then remove their directories.
        with contextlib.suppress(Exception):
            self.postgres.stop_immediate()
        for killed in (self.kafka, self.redis):
            with contextlib.suppress(Exception):
                killed.kill()
        for server in (self.kafka, self.postgres, self.redis):
            with contextlib.suppress(Exception):
                server.stop()

    def write_evidence(self, result: RunResult) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "result.json").write_bytes(
            orjson.dumps(result.as_dict(), option=orjson.OPT_INDENT_2, default=str)
        )
        if self.load is not None:
            inputs = [
                {
                    "event_id": s.event_id,
                    "session_id": s.session_id,
                    "correlation_id": s.correlation_id,
                    "command_type": s.command_type,
                    "sent_at_s": round(s.at - self.t0, 3),
                    "outcome_at_s": round(self.terminal_at[s.correlation_id] - self.t0, 3)
                    if s.correlation_id in self.terminal_at
                    else None,
                }
                for s in self.load.sent
            ]
            (self.dir / "inputs.json").write_bytes(orjson.dumps(inputs, option=orjson.OPT_INDENT_2))


TASK_BASES = ("character", "outline", "world", "plot", "writer", "review")


def run_scenario(scenario: Scenario, seed: int, opts: Options) -> RunResult:
    return Run(scenario, seed, opts).execute()


def summarize(results: list[RunResult]) -> dict[str, dict[str, Any]]:
    """Per scenario: runs, passes and the figures of the reliability report."""
    by: dict[str, list[RunResult]] = defaultdict(list)
    for r in results:
        by[r.scenario].append(r)
    table: dict[str, dict[str, Any]] = {}
    for name, runs in by.items():
        recs = [r.recover_s for r in runs if r.recover_s is not None]
        table[name] = {
            "runs": len(runs),
            "passed": sum(r.passed for r in runs),
            "commands": sum(r.commands for r in runs),
            "messages": sum(r.messages for r in runs),
            "delivered": sum(r.delivered for r in runs),
            "lost": sum(r.lost for r in runs),
            "duplicated_effects": sum(r.duplicated_effects for r in runs),
            "redelivered": sum(r.redelivered for r in runs),
            "dead_lettered": sum(r.dead_lettered for r in runs),
            "timed_out": sum(r.timed_out for r in runs),
            "unexpected_exits": sum(r.unexpected_exits for r in runs),
            "recover_min_s": min(recs) if recs else None,
            "recover_median_s": statistics.median(recs) if recs else None,
            "recover_max_s": max(recs) if recs else None,
            "seeds": [r.seed for r in runs],
            "failed_seeds": [r.seed for r in runs if not r.passed],
            "modes": dict(Counter(r.mode for r in runs)),
        }
    return table
