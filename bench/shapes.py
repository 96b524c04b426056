"""One deployment shape, measured end to end with real processes.

Shapes (`--shapes`):

* `simple`: how most people first run it: `orchestrator ingest`, ONE `celery -A tasks worker`
  taking all three queues with `-c 2`, `celery -A tasks beat`; default settings.
* `1`, `2`, `4` (any number k): k worker instances (`-c 1` each, like `docker compose up
  --scale`) on the domain and capability queues, plus one relay worker (`-Q orchestrator.relay
  -c 1`), one ingester, one beat.
* `cN` (e.g. `c4`): one worker instance on all three queues with `-c N`.

Every shape gets its own database, topics, consumer group, Redis prefix and an emptied Redis
database; nothing else differs from the defaults (the settings that would change the result,
such as log level, prefetch or Kafka fetch wait, are the product's defaults).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

import orchestrator.core.queues as queue_names
from bench.limits import celery_noop_tasks_per_s
from bench.procs import ShapeSampler, cpu_by_role, cpu_snapshot, labelled, system_busy_s
from bench.services import Services
from bench.traffic import (
    TASK_BASES,
    PhaseResult,
    Stalled,
    Tracker,
    command_producer,
    make_commands,
    percentile,
    reread,
    run_closed,
    run_open,
)
from orchestrator.devtools.supervisor import BIN, Supervisor

# The `-Q` arguments of the worker shapes.
ALL_QUEUES = queue_names.queue_list()
WORK_QUEUES = queue_names.queue_list(queue_names.WORK_QUEUES)
RELAY_QUEUE = queue_names.RELAY_QUEUE
DOMAIN_QUEUE = queue_names.DOMAIN_QUEUE
# The light-load phase: a user trying the system, far below any limit.
LIGHT_RATE = 15.0
WARMUP_COMMANDS = 8
READY_TIMEOUT_S = 90.0


@dataclass(frozen=True)
class WorkerSpec:
    queues: str
    concurrency: int


@dataclass(frozen=True)
class Shape:
    name: str
    workers: tuple[WorkerSpec, ...]
    description: str

    @property
    def worker_processes(self) -> int:
        """Pool processes that run tasks (the instances' parents only consume and ack)."""
        return sum(w.concurrency for w in self.workers)

    @classmethod
    def parse(cls, name: str) -> Shape:
        if name == "simple":
            return cls(
                name,
                (WorkerSpec(ALL_QUEUES, 2),),
                "1 ingester, 1 worker on all 3 queues -c 2, 1 beat",
            )
        if name.startswith("c") and name[1:].isdigit() and int(name[1:]) > 0:
            c = int(name[1:])
            return cls(
                name, (WorkerSpec(ALL_QUEUES, c),), f"1 ingester, 1 worker on all 3 queues -c {c}"
            )
        if name.isdigit() and int(name) > 0:
            k = int(name)
            return cls(
                name,
                (*(WorkerSpec(WORK_QUEUES, 1) for _ in range(k)), WorkerSpec(RELAY_QUEUE, 1)),
                f"1 ingester, {k} worker(s) -c 1 on domain+capability, 1 relay worker, 1 beat",
            )
        raise ValueError(f"unknown shape {name!r}: use simple, a number (1, 2, 4...) or cN")


@dataclass
class ShapeOptions:
    commands: int
    sessions: int
    windows: tuple[int, ...]
    noop_tasks: int
    stall_s: float
    profile_dir: Path | None = None


@dataclass
class ShapeResult:
    shape: Shape
    celery_noop_tasks_per_s: float = 0.0
    windows: dict[int, float] = field(default_factory=dict)
    best_window: int = 0
    e2e_commands_per_s: float = 0.0
    burst_latency_ms: dict[str, float] = field(default_factory=dict)
    latency_rate: float = 0.0
    latency_ms: dict[str, float] = field(default_factory=dict)
    # A burst where every command has a session of its own (no two of one session in flight).
    distinct_commands_per_s: float = 0.0
    light_rate: float = LIGHT_RATE
    light_latency_ms: dict[str, float] = field(default_factory=dict)
    send_lateness_ms: float = 0.0
    relay_lag_ms: dict[str, float] = field(default_factory=dict)
    breakdown_ms: dict[str, dict[str, float]] = field(default_factory=dict)
    cpu_ms_per_command: dict[str, float] = field(default_factory=dict)
    noop_cpu_ms_per_task: dict[str, float] = field(default_factory=dict)
    cpu_cores_busy: float = 0.0
    other_cpu_cores: float = 0.0
    max_rss_mb: dict[str, float] = field(default_factory=dict)
    max_queue_length: dict[str, int] = field(default_factory=dict)
    storage: dict[str, float] = field(default_factory=dict)
    anomalies: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.shape.name,
            "description": self.shape.description,
            "worker_processes": self.shape.worker_processes,
            "workers": [
                {"queues": w.queues, "concurrency": w.concurrency} for w in self.shape.workers
            ],
            "celery_noop_tasks_per_s": round(self.celery_noop_tasks_per_s, 1),
            "throughput_by_window": {str(k): round(v, 1) for k, v in self.windows.items()},
            "best_window": self.best_window,
            "e2e_commands_per_s": round(self.e2e_commands_per_s, 1),
            "e2e_to_celery_noop": _ratio(self.e2e_commands_per_s, self.celery_noop_tasks_per_s),
            "burst_latency_ms": self.burst_latency_ms,
            "latency_rate_commands_per_s": round(self.latency_rate, 1),
            "latency_ms": self.latency_ms,
            "distinct_sessions_commands_per_s": round(self.distinct_commands_per_s, 1),
            "distinct_sessions_to_celery_noop": _ratio(
                self.distinct_commands_per_s, self.celery_noop_tasks_per_s
            ),
            "light_load_commands_per_s": self.light_rate,
            "light_load_latency_ms": self.light_latency_ms,
            "send_lateness_ms": round(self.send_lateness_ms, 1),
            "relay_lag_ms": self.relay_lag_ms,
            "breakdown_ms": self.breakdown_ms,
            "cpu_ms_per_command": self.cpu_ms_per_command,
            "noop_cpu_ms_per_task": self.noop_cpu_ms_per_task,
            "cpu_cores_busy": round(self.cpu_cores_busy, 2),
            # What the machine's cores could do at this CPU cost per command if nothing else
            # ran: robust to other load, unlike the measured rate.
            "cpu_bound_commands_per_s": round(
                (psutil.cpu_count() or 1) * 1000 / self.cpu_ms_per_command["total"], 1
            )
            if self.cpu_ms_per_command.get("total")
            else 0.0,
            "other_cpu_cores": round(self.other_cpu_cores, 2),
            "max_rss_mb": self.max_rss_mb,
            "max_worker_rss_mb": max_worker_rss(self.max_rss_mb),
            "max_queue_length": self.max_queue_length,
            "storage": self.storage,
            "anomalies": self.anomalies,
            "seconds": round(self.seconds, 1),
        }


def max_worker_rss(by_role: dict[str, float]) -> float:
    return max((v for k, v in by_role.items() if k.startswith("worker")), default=0.0)


def _ratio(a: float, b: float) -> float:
    return round(a / b, 3) if b else 0.0


def _per(spent: dict[str, float], n: int) -> dict[str, float]:
    """CPU milliseconds per unit of work, by role, and their total."""
    out = {k: round(v * 1000 / n, 3) for k, v in sorted(spent.items())}
    out["total"] = round(sum(spent.values()) * 1000 / n, 3)
    return out


def _summary(values: list[float], points: tuple[int, ...] = (50, 95, 99)) -> dict[str, float]:
    out = {f"p{p}": round(percentile(values, p), 1) for p in points}
    out["max"] = round(max(values, default=0.0), 1)
    return out


class ShapeRun:
    """Starts a shape's processes, drives the load, measures, and stops everything."""

    def __init__(
        self,
        services: Services,
        shape: Shape,
        opts: ShapeOptions,
        workroot: Path,
        log: Callable[[str], None],
    ) -> None:
        self.services = services
        self.shape = shape
        self.opts = opts
        self.log = log
        self.suffix = uuid.uuid4().hex[:8]
        self.workdir = workroot / f"shape-{shape.name}"
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.sup = Supervisor(self.workdir, leaders_only=True)
        self.domain_topic = f"genesis.domain.events.b{self.suffix}"
        self.task_prefix = f"b{self.suffix}."
        self.task_topics = [f"{self.task_prefix}genesis.{b}.tasks" for b in TASK_BASES]
        self.database_url = ""

    # -- environment -----------------------------------------------------------------------------

    def env(self) -> dict[str, str]:
        env = {"PATH": os.environ.get("PATH", os.defpath), "HOME": os.environ.get("HOME", "/")}
        if os.environ.get("TMPDIR"):
            env["TMPDIR"] = os.environ["TMPDIR"]
        env.update(self.services.passthrough_env)
        env.update(
            {
                "PYTHONUNBUFFERED": "1",
                "DATABASE_URL": self.database_url,
                "REDIS_URL": self.services.redis_url,
                "KAFKA_BOOTSTRAP_SERVERS": self.services.kafka_bootstrap,
                "ORCHESTRATOR_DOMAIN_TOPIC": self.domain_topic,
                "ORCHESTRATOR_CAPABILITY_TOPIC": f"genesis.capability.events.b{self.suffix}",
                "ORCHESTRATOR_DLQ_TOPIC": f"genesis.orchestrator.dlq.b{self.suffix}",
                "ORCHESTRATOR_TASK_TOPIC_PREFIX": self.task_prefix,
                "ORCHESTRATOR_CONSUMER_GROUP": f"bench-{self.suffix}",
                "ORCHESTRATOR_REDIS_PREFIX": f"bench-{self.suffix}",
            }
        )
        if self.opts.profile_dir is not None:
            env["BENCH_PROFILE_DIR"] = str(self.opts.profile_dir)
        return env

    def settings(self) -> Any:
        return settings_for(self.env())

    # -- processes -------------------------------------------------------------------------------

    def start(self) -> None:
        env = self.env()
        done = subprocess.run(
            [str(BIN / "orchestrator"), "topics", "create"],
            cwd=self.workdir,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"orchestrator topics create failed: {done.stderr.strip()}")
        app = "bench.profiled_worker" if self.opts.profile_dir is not None else "tasks"
        for i, w in enumerate(self.shape.workers):
            name = f"worker{i + 1}"
            self.sup.spawn(
                name,
                [
                    str(BIN / "celery"),
                    "-A",
                    app,
                    "worker",
                    "-Q",
                    w.queues,
                    "-c",
                    str(w.concurrency),
                    "-n",
                    f"{name}-{self.suffix}@%h",
                ],
                env=env,
                role="worker",
            )
        self.sup.spawn(
            "beat",
            [str(BIN / "celery"), "-A", "tasks", "beat", "-s", str(self.workdir / "schedule")],
            env=env,
            role="beat",
        )
        if self.opts.profile_dir is not None:
            ingest = [sys.executable, "-m", "bench.profiled_ingester"]
        else:
            ingest = [str(BIN / "orchestrator"), "ingest"]
        self.sup.spawn("ingester", ingest, env=env, role="ingester")

    def wait_workers_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        workers = [p for p in self.sup.running if p.role == "worker"]
        while time.monotonic() < deadline:
            self.sup.check_alive()
            if all(" ready." in p.tail(200) for p in workers):
                return
            time.sleep(0.1)
        raise RuntimeError("workers not ready in time:\n" + self.sup.logs())

    def queue_lengths(self) -> dict[str, int]:
        client = self.redis
        pipe = client.pipeline(transaction=False)
        for q in queue_names.ALL_QUEUES:
            pipe.llen(q)
        d, c, r = pipe.execute()
        return {"domain": int(d), "capability": int(c), "relay": int(r)}

    # -- the measurement -------------------------------------------------------------------------

    def run(self) -> ShapeResult:
        began = time.monotonic()
        result = ShapeResult(self.shape)
        self.services.flush_redis()
        self.database_url = self.services.fresh_database(self.shape.name)
        self.redis = self.services.redis_client()
        settings = self.settings()
        kafka_conf = settings.kafka_common()
        tracker: Tracker | None = None
        sampler = ShapeSampler(lambda: list(self.sup.running), self.queue_lengths)
        try:
            self.start()
            sampler.start()
            tracker = Tracker(kafka_conf, self.domain_topic, self.task_topics)
            producer = command_producer(kafka_conf)
            check = self.sup.check_alive
            tr = tracker

            def recover(ids: list[str]) -> None:
                self.recover(tr, ids)

            self.log(f"[{self.shape.name}] warming up (consumer group join, worker start)")
            warm = make_commands(WARMUP_COMMANDS, WARMUP_COMMANDS, "warm")
            run_closed(tracker, producer, warm, WARMUP_COMMANDS, READY_TIMEOUT_S, check, recover)
            self.wait_workers_ready()

            from orchestrator.adapters.celery.app import make_celery

            app = make_celery(settings)
            servers = self.services.server_pids()
            roles = {**labelled(self.sup.running, servers), os.getpid(): "bench"}
            before = cpu_snapshot(roles)
            result.celery_noop_tasks_per_s = celery_noop_tasks_per_s(
                app, self.redis, DOMAIN_QUEUE, self.opts.noop_tasks
            )
            spent = cpu_by_role(roles, before, cpu_snapshot(roles))
            result.noop_cpu_ms_per_task = _per(spent, self.opts.noop_tasks)
            self.log(
                f"[{self.shape.name}] celery noop: {result.celery_noop_tasks_per_s:.0f} tasks/s"
            )
            best: PhaseResult | None = None
            for window in self.opts.windows:
                cmds = make_commands(self.opts.commands, self.opts.sessions, f"w{window}")
                roles = {**labelled(self.sup.running, servers), os.getpid(): "bench"}
                before, busy0 = cpu_snapshot(roles), system_busy_s()
                res = run_closed(tracker, producer, cmds, window, self.opts.stall_s, check, recover)
                after, busy1 = cpu_snapshot(roles), system_busy_s()
                result.windows[window] = res.rate
                self.log(
                    f"[{self.shape.name}] window {window}: {res.rate:.0f} commands/s,"
                    f" p99 {percentile(res.latencies_ms, 99):.0f} ms"
                )
                if best is None or res.rate > best.rate:
                    best, result.best_window = res, window
                    spent = cpu_by_role(roles, before, after)
                    result.cpu_ms_per_command = _per(spent, res.commands)
                    result.cpu_cores_busy = sum(spent.values()) / res.elapsed_s
                    # Everything else running on the machine meanwhile (a noise indicator).
                    result.other_cpu_cores = max(
                        0.0, (busy1 - busy0 - sum(spent.values())) / res.elapsed_s
                    )
            assert best is not None
            result.e2e_commands_per_s = best.rate
            result.burst_latency_ms = _summary(best.latencies_ms)

            rate = best.rate / 2
            cmds = make_commands(self.opts.commands, self.opts.sessions, "lat")
            self.log(f"[{self.shape.name}] open loop at {rate:.0f} commands/s")
            lat = run_open(tracker, producer, cmds, rate, self.opts.stall_s, check, recover)
            result.latency_rate = rate
            result.latency_ms = _summary(lat.latencies_ms)
            result.send_lateness_ms = lat.send_lateness_ms
            result.relay_lag_ms, result.breakdown_ms = self.db_timings(tracker, cmds)
            self.log(
                f"[{self.shape.name}] latency p50/p95/p99 {result.latency_ms['p50']:.0f}/"
                f"{result.latency_ms['p95']:.0f}/{result.latency_ms['p99']:.0f} ms,"
                f" relay lag p99 {result.relay_lag_ms['p99']:.0f} ms"
            )
            self.distinct_and_light(result, tracker, producer, check, recover)
            sampler.sample()
            commands = WARMUP_COMMANDS + self.opts.commands * (len(self.opts.windows) + 2)
            commands += self.light_commands()
            result.storage = self.storage(commands)
            if self.opts.profile_dir is not None:
                self.collect_profiles(app)
            why = list(tracker.anomalies.values())
            result.anomalies = {
                "missed_by_reader": why.count("missed_by_reader"),
                "lost_by_broker": why.count("lost_by_broker"),
                "reader_offset_gaps": len(tracker.gaps),
            }
        except Stalled as exc:
            state = self.stall_report(tracker) if tracker is not None else ""
            raise RuntimeError(f"[{self.shape.name}] {exc}\n{state}\n{self.sup.logs()}") from exc
        finally:
            sampler.stop()
            if tracker is not None:
                tracker.close()
            self.sup.stop_all()
            self.redis.close()
            self.services.drop_database(self.database_url)
        result.max_rss_mb = sampler.max_mb_by_role()
        result.max_queue_length = dict(sampler.max_queue)
        result.seconds = time.monotonic() - began
        return result

    def light_commands(self) -> int:
        return max(30, min(self.opts.commands // 4, int(LIGHT_RATE * 20)))

    def distinct_and_light(
        self, result: ShapeResult, tracker: Tracker, producer: Any, check: Any, recover: Any
    ) -> None:
        """The goal table's other phases: a burst of commands of as many sessions, then a light
        open loop (a user's view of an idle system)."""
        n = self.opts.commands
        cmds = make_commands(n, n, "distinct")
        res = run_closed(tracker, producer, cmds, n, self.opts.stall_s, check, recover)
        result.distinct_commands_per_s = res.rate
        self.log(f"[{self.shape.name}] one session per command: {res.rate:.0f} commands/s")
        light = make_commands(self.light_commands(), self.light_commands() // 4 or 1, "light")
        lat = run_open(tracker, producer, light, LIGHT_RATE, self.opts.stall_s, check, recover)
        result.light_latency_ms = _summary(lat.latencies_ms)
        self.log(
            f"[{self.shape.name}] light load {LIGHT_RATE:.0f}/s: p50/p99"
            f" {result.light_latency_ms['p50']:.0f}/{result.light_latency_ms['p99']:.0f} ms"
        )

    def collect_profiles(self, app: Any) -> None:
        """Ask every pool process to write its profile (bench.profiled_worker) and wait."""
        from bench.profiling import DUMP_FLAG
        from orchestrator.adapters.celery.app import NOOP_TASK

        assert self.opts.profile_dir is not None
        flag = self.opts.profile_dir / DUMP_FLAG
        flag.parent.mkdir(parents=True, exist_ok=True)
        before = set(self.opts.profile_dir.glob("worker-*.html"))
        flag.touch()
        try:
            queues = {q for w in self.shape.workers for q in w.queues.split(",")}
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                for q in queues:
                    for _ in range(4):
                        app.send_task(NOOP_TASK, queue=q)
                written = set(self.opts.profile_dir.glob("worker-*.html")) - before
                if len(written) >= self.shape.worker_processes:
                    break
                time.sleep(0.5)
            else:
                self.log(f"[{self.shape.name}] not every pool process wrote its profile")
        finally:
            flag.unlink(missing_ok=True)

    def storage(self, commands: int) -> dict[str, float]:
        """What the run left behind per command: PostgreSQL bytes (tables and indexes of the
        inbox, facts, tasks and outbox; nothing pruned yet) and Redis keys (done markers...)."""
        engine = create_engine(self.database_url, poolclass=NullPool)
        try:
            with engine.connect() as conn:
                size = conn.execute(
                    text(
                        "SELECT sum(pg_total_relation_size(t::regclass)) FROM unnest("
                        "ARRAY['inbox', 'domain_events', 'async_tasks', 'event_outbox']) AS t"
                    )
                ).scalar_one()
        finally:
            engine.dispose()
        info = self.redis.info("memory")
        return {
            "commands": commands,
            "pg_bytes_per_command": round(float(size) / commands),
            "redis_keys_per_command": round(int(self.redis.dbsize()) / commands, 2),
            "redis_used_memory_mb": round(int(info["used_memory"]) / 2**20, 1),
        }

    def recover(self, tracker: Tracker, ids: list[str]) -> None:
        """Commands pending while nothing moves: if the database says both their messages were
        delivered, look for them on the topics again. Found -> the reader missed them; absent
        -> the broker lost an acknowledged message. Either way the command is settled (and
        counted, not timed); anything else stays pending and the phase fails as stalled."""
        if not ids:
            return
        engine = create_engine(self.database_url, poolclass=NullPool)
        try:
            with engine.connect() as conn:
                rows = conn.execute(
                    text(
                        "SELECT i.message_id, count(*) FILTER (WHERE o.status = 'SENT') AS sent"
                        " FROM inbox i JOIN event_outbox o ON o.correlation_id = i.correlation_id"
                        " WHERE i.message_id = ANY(:ids) GROUP BY i.message_id"
                    ),
                    {"ids": ids},
                )
                delivered = {r.message_id for r in rows if r.sent >= 2}
        finally:
            engine.dispose()
        if not delivered:
            return
        topics = [self.domain_topic, *self.task_topics]
        found = reread(self.settings().kafka_common(), topics, delivered)
        kinds: dict[str, set[str]] = {}
        for cause, topic, _offset in found:
            kinds.setdefault(cause, set()).add("fact" if topic == self.domain_topic else "task")
        for cause in sorted(delivered):
            why = "missed_by_reader" if kinds.get(cause) == {"fact", "task"} else "lost_by_broker"
            self.log(f"[{self.shape.name}] command {cause}: {why} (both outbox rows SENT)")
            tracker.resolve(cause, why)

    def stall_report(self, tracker: Tracker, limit: int = 5) -> str:
        """Where the first commands that never completed are stuck (inbox, outbox, queues)."""
        ids = tracker.pending_ids()[:limit]
        lines = [f"pending commands: {tracker.pending()}; queues: {self.queue_lengths()}"]
        engine = create_engine(self.database_url, poolclass=NullPool)
        try:
            with engine.connect() as conn:
                for event_id in ids:
                    inbox = conn.execute(
                        text(
                            "SELECT id, session_id, correlation_id, received_at, triggered_at,"
                            " processed_at, attempts, outcome FROM inbox WHERE message_id = :m"
                        ),
                        {"m": event_id},
                    ).first()
                    lines.append(f"  {event_id}: inbox {inbox}")
                    if inbox is not None:
                        for row in conn.execute(
                            text(
                                "SELECT kind, status, attempts, created_at, sent_at, last_error"
                                " FROM event_outbox WHERE correlation_id = :c"
                            ),
                            {"c": inbox.correlation_id},
                        ):
                            lines.append(f"    outbox {tuple(row)}")
                        seen = (
                            event_id in tracker.fact_at,
                            event_id in tracker.cap_at,
                        )
                        lines.append(f"    consumed back (fact, capability): {seen}")
        except Exception as exc:
            lines.append(f"  (database not readable: {exc})")
        finally:
            engine.dispose()
        found = reread(
            self.settings().kafka_common(), [self.domain_topic, *self.task_topics], set(ids)
        )
        lines.append(f"  on a second read of the topics: {found or 'none of their messages'}")
        lines.append(f"  settled without both messages seen: {tracker.anomalies}")
        lines.append(f"  offset gaps seen by the reader: {tracker.gaps[:10]}")
        return "\n".join(lines)

    def db_timings(
        self, tracker: Tracker, cmds: list[Any]
    ) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
        """Relay lag (outbox created_at -> sent_at) of the phase's rows, and where each
        command's time went: produce -> inbox (ingest), inbox -> processing transaction
        (trigger + queue), outbox row -> sent (relay), sent -> consumed here (Kafka hop).
        Database times are `now()` of the writing transaction (its start)."""
        engine = create_engine(self.database_url, poolclass=NullPool)
        sessions = sorted({c.session_id for c in cmds})
        try:
            with engine.connect() as conn:
                outbox = list(
                    conn.execute(
                        text(
                            "SELECT correlation_id, extract(epoch FROM created_at) AS created,"
                            " extract(epoch FROM sent_at) AS sent FROM event_outbox"
                            " WHERE session_id = ANY(:s) AND status = 'SENT'"
                        ),
                        {"s": sessions},
                    )
                )
                inbox = list(
                    conn.execute(
                        text(
                            "SELECT message_id, extract(epoch FROM received_at) AS received,"
                            " extract(epoch FROM processed_at) AS processed FROM inbox"
                            " WHERE session_id = ANY(:s)"
                        ),
                        {"s": sessions},
                    )
                )
        finally:
            engine.dispose()
        lag = [(float(r.sent) - float(r.created)) * 1000 for r in outbox]
        sent_by_corr: dict[str, float] = {}
        for r in outbox:
            sent_by_corr[r.correlation_id] = max(sent_by_corr.get(r.correlation_id, 0.0), r.sent)
        by_id = {r.message_id: r for r in inbox}
        ingest, queue, relay, hop = [], [], [], []
        for c in cmds:
            row, sent = by_id.get(c.event_id), sent_by_corr.get(c.correlation_id)
            if row is None or sent is None or row.processed is None:
                continue
            if c.event_id in tracker.anomalies:
                continue
            wall_sent = tracker.sent_wall[c.event_id]
            wall_done = wall_sent + (tracker.done_at[c.event_id] - tracker.sent[c.event_id])
            ingest.append((float(row.received) - wall_sent) * 1000)
            queue.append((float(row.processed) - float(row.received)) * 1000)
            relay.append((float(sent) - float(row.processed)) * 1000)
            hop.append((wall_done - float(sent)) * 1000)
        points = (50, 99)
        breakdown = {
            "kafka_to_inbox": _summary(ingest, points),
            "inbox_to_processing": _summary(queue, points),
            "processing_to_sent": _summary(relay, points),
            "sent_to_consumed": _summary(hop, points),
        }
        return _summary(lag, points), breakdown


def settings_for(env: dict[str, str]) -> Any:
    """The orchestrator's settings as a process started with exactly `env` would read them
    (called before any thread of ours starts: the environment is swapped for the call)."""
    from orchestrator.settings import load_settings

    saved = dict(os.environ)
    try:
        os.environ.clear()
        os.environ.update(env)
        return load_settings()
    finally:
        os.environ.clear()
        os.environ.update(saved)


def machine() -> dict[str, Any]:
    import platform

    freq = psutil.cpu_freq()
    return {
        "cpus": psutil.cpu_count(logical=True),
        "cpu_model": _cpu_model(),
        "cpu_mhz": round(freq.current) if freq else None,
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "unknown"
