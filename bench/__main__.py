"""`python -m bench`: measure the orchestrator end to end and against its limits.

    python -m bench                          # embedded servers, shapes simple,1,2,4
    python -m bench --smoke                  # tiny run, one shape (CI)
    python -m bench --use-env                # DATABASE_URL, REDIS_URL, KAFKA_BOOTSTRAP_SERVERS
    python -m bench --commands 5000 --shapes simple,2 --out /tmp/bench.json
    python -m bench --profile                # pyinstrument profiles of the first shape

Prints tables and writes one JSON document (`--out`, default bench/results/latest.json). Method
and figures: docs/performance.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

import orjson
from rich.console import Console

from bench import compare, goals, report
from bench.limits import kafka_roundtrip_msgs_per_s, outbox_samples, pg_txn_per_s
from bench.services import ServiceError, Services
from bench.shapes import Shape, ShapeOptions, ShapeResult, ShapeRun, machine, settings_for
from bench.traffic import make_commands

DEFAULT_OUT = Path("bench/results/latest.json")
SMOKE_OUT = Path("bench/results/smoke.json")
# A phase fails when no command completes for this long: longer than beat's re-drive of a lost
# trigger (60 s + its 15 s period by default), so such a command shows up as a latency outlier
# instead of failing the run.
STALL_S = 120.0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description="End-to-end throughput and latency of the orchestrator, with its limits.",
    )
    p.add_argument("--commands", type=int, default=None, help="commands per phase (2000)")
    p.add_argument("--sessions", type=int, default=None, help="sessions per phase (commands/4)")
    p.add_argument(
        "--shapes", default=None, help="comma-separated: simple, 1, 2, 4 ..., cN (simple,1,2,4)"
    )
    p.add_argument(
        "--windows",
        default=None,
        help="in-flight limits tried for throughput; 0 = all at once (0,200)",
    )
    p.add_argument("--noop-tasks", type=int, default=None, help="Celery noop tasks (3000)")
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help=f"JSON output ({DEFAULT_OUT}; with --smoke: {SMOKE_OUT})",
    )
    p.add_argument("--smoke", action="store_true", help="tiny run, one shape (CI)")
    p.add_argument("--use-env", action="store_true", help="use the configured services")
    p.add_argument(
        "--profile",
        action="store_true",
        help="profile the first shape's workers and ingester with pyinstrument"
        " (next to --out; figures of a profiled run are not representative)",
    )
    p.add_argument("--keep-logs", action="store_true", help="keep the processes' logs")
    p.add_argument(
        "--compare",
        metavar="REV",
        default=None,
        help="then measure git revision REV the same way (a scratch worktree) and print both",
    )
    args = p.parse_args(argv)
    smoke = args.smoke
    args.out = args.out or (SMOKE_OUT if smoke else DEFAULT_OUT)
    args.commands = args.commands or (40 if smoke else 2000)
    args.sessions = args.sessions or max(1, args.commands // 4)
    args.shapes = args.shapes or ("simple" if smoke else "simple,1,2,4")
    args.windows = args.windows or ("0" if smoke else "0,200")
    args.noop_tasks = args.noop_tasks or (200 if smoke else 3000)
    try:
        args.shape_list = [Shape.parse(s.strip()) for s in args.shapes.split(",") if s.strip()]
        args.window_list = tuple(int(w) or args.commands for w in args.windows.split(","))
    except ValueError as exc:
        p.error(str(exc))
    if not args.shape_list:
        p.error("--shapes names no shape")
    if args.commands < 1 or args.noop_tasks < 1:
        p.error("--commands and --noop-tasks must be >= 1")
    return args


def _terminate(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    out = Console(width=200 if not sys.stdout.isatty() else None, highlight=False)
    err = Console(stderr=True, highlight=False)

    def log(msg: str) -> None:
        err.print(f"{time.strftime('%H:%M:%S')} {msg}", markup=False)

    began = time.monotonic()
    load_at_start = [round(x, 2) for x in os.getloadavg()]
    revision_at_start = revision()
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    workroot = Path(tempfile.mkdtemp(prefix="orchestrator-bench-"))
    profile_dir = args.out.parent / "profile" if args.profile else None
    failed = True
    try:
        log("starting services" + (" (environment)" if args.use_env else " (embedded)"))
        with Services.start(args.use_env) as services:
            limits = measure_limits(services, args, log)
            results: list[ShapeResult] = []
            for i, shape in enumerate(args.shape_list):
                opts = ShapeOptions(
                    commands=args.commands,
                    sessions=args.sessions,
                    windows=args.window_list,
                    noop_tasks=args.noop_tasks,
                    stall_s=STALL_S,
                    profile_dir=profile_dir if i == 0 else None,
                )
                log(f"[{shape.name}] {shape.description}")
                results.append(ShapeRun(services, shape, opts, workroot, log).run())
            meta = {
                "machine": machine(),
                "services": services.describe(),
                "options": {
                    "commands": args.commands,
                    "sessions": args.sessions,
                    "shapes": [s.name for s in args.shape_list],
                    "windows": list(args.window_list),
                    "noop_tasks": args.noop_tasks,
                    "smoke": args.smoke,
                    "profiled": bool(args.profile),
                },
                "started_at": started_at,
                "revision": revision_at_start,
                "revision_changed_during_run": revision() != revision_at_start,
                "load_average_at_start": load_at_start,
                "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
            }
        doc = report.build(results, limits, meta)
        doc["duration_s"] = round(time.monotonic() - began, 1)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2) + b"\n")
        report.render(doc, out)
        goals.render_goals(doc, out)
        if args.compare:
            before = compare.run_revision(args.compare, list(argv or sys.argv[1:]), log)
            doc["before"] = {"revision": before.get("revision"), "shapes": before.get("shapes")}
            args.out.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2) + b"\n")
            goals.render_comparison(doc, before, out)
        out.print(f"JSON: {args.out}   ({doc['duration_s']:.0f} s)")
        if profile_dir is not None:
            out.print(f"profiles: {profile_dir}")
        failed = False
        return 0
    except ServiceError as exc:
        err.print(f"bench: {exc}")
        return 1
    finally:
        if failed or args.keep_logs:
            err.print(f"process logs: {workroot}")
        else:
            shutil.rmtree(workroot, ignore_errors=True)


def revision() -> dict[str, Any]:
    """The product revision measured: commit, and the product files changed since (read-only
    git commands; empty when not a git checkout)."""
    import subprocess

    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        try:
            done = subprocess.run(
                ["git", "-C", str(root), *args],
                capture_output=True,
                text=True,
                timeout=10,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired):
            return ""
        return done.stdout.strip() if done.returncode == 0 else ""

    changed = git("diff", "--name-only", "HEAD", "--", "orchestrator", "tasks", "beat")
    return {"commit": git("rev-parse", "--short", "HEAD"), "changed": changed.split()}


def measure_limits(services: Services, args: argparse.Namespace, log: Any) -> dict[str, Any]:
    from orchestrator.adapters.kafka.clients import producer_config
    from orchestrator.adapters.kafka.topics import create_topics

    smoke = args.smoke
    url = services.fresh_database("limits")
    try:
        n = 100 if smoke else 2000
        log(f"limit: PostgreSQL transactions ({n} commands through SqlStore, 1/2/4 processes)")
        pg = pg_txn_per_s(url, n, (1, 2) if smoke else (1, 2, 4))
        samples = outbox_samples(url)
    finally:
        services.drop_database(url)
    env = {
        **services.passthrough_env,
        "DATABASE_URL": services.database_url,
        "REDIS_URL": services.redis_url,
        "KAFKA_BOOTSTRAP_SERVERS": services.kafka_bootstrap,
    }
    settings = settings_for(env)
    topic = f"bench.kafka-limit.{uuid.uuid4().hex[:8]}"
    create_topics(settings, [topic])
    command = make_commands(1, 1, "kafka")[0]
    samples.insert(0, (command.value, []))
    n = 600 if smoke else 30_000
    log(f"limit: Kafka round trip ({n} messages)")
    kafka = kafka_roundtrip_msgs_per_s(
        producer_config(settings),
        {
            **settings.kafka_common(),
            "enable.auto.commit": False,
            "fetch.wait.max.ms": settings.kafka_fetch_wait_max_ms,
        },
        topic,
        samples,
        n,
    )
    log(f"limits: PostgreSQL {pg.best:,.0f} txn/s, Kafka {kafka:,.0f} msg/s")
    return {
        "pg_txn_per_s": round(pg.best, 1),
        "pg_txn_per_s_by_processes": {str(k): round(v, 1) for k, v in pg.by_processes.items()},
        "kafka_roundtrip_msgs_per_s": round(kafka, 1),
        "kafka_message_bytes": [len(v) for v, _ in samples],
    }


if __name__ == "__main__":
    sys.exit(main())
