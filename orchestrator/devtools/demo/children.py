"""The processes a demo run starts: their command lines, as an operator would type them, and
the environment they get, built from scratch."""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from orchestrator.core.queues import queue_list
from orchestrator.devtools.demo.options import format_score
from orchestrator.devtools.demo.services import Services
from orchestrator.devtools.demo.topics import DemoTopics

ALL_QUEUES = queue_list()
# Periodic jobs the demo's beat must not run on shared services (see the package docstring).
NEVER_S = str(365 * 24 * 3600)
SETUP = ("db-upgrade", "topics-create")
# The worker first (its start-up is the slowest), the ingester last (it hands out the work).
LONG_RUNNING = ("worker", "beat", "simulator", "ingester")


def executable(name: str) -> list[str]:
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


@dataclass(frozen=True)
class RunNames:
    """The names one run gives its consumer groups and Redis keys: its own on shared services
    (so it neither disturbs nor is disturbed by a deployment), the usual ones otherwise."""

    run_id: str
    private: bool

    def _group(self, base: str) -> str:
        return f"{base}-demo-{self.run_id}" if self.private else base

    @property
    def ingester_group(self) -> str:
        return self._group("genesis-orchestrator")

    @property
    def simulator_group(self) -> str:
        return self._group("genesis-capability-simulator")


def child_env(
    services: Services, topics: DemoTopics, names: RunNames, workdir: Path
) -> dict[str, str]:
    """PATH, HOME, TMPDIR (when set), the service URLs and the orchestrator settings only."""
    env = {
        "PATH": os.environ.get("PATH", os.defpath),
        "HOME": os.environ.get("HOME") or str(workdir),
        "PYTHONUNBUFFERED": "1",
        "ORCHESTRATOR_LOG_LEVEL": "INFO",
    }
    if os.environ.get("TMPDIR"):
        env["TMPDIR"] = os.environ["TMPDIR"]
    env.update(services.env)
    if names.private:
        env.update(
            {
                "ORCHESTRATOR_DOMAIN_TOPIC": topics.domain,
                "ORCHESTRATOR_CAPABILITY_TOPIC": topics.capability,
                "ORCHESTRATOR_DLQ_TOPIC": topics.dlq,
                "ORCHESTRATOR_TASK_TOPIC_PREFIX": topics.task_prefix,
                "ORCHESTRATOR_CONSUMER_GROUP": names.ingester_group,
                "ORCHESTRATOR_REDIS_PREFIX": f"orch-demo-{names.run_id}",
                "ORCHESTRATOR_REDRIVE_INTERVAL_S": NEVER_S,
                "ORCHESTRATOR_TIMEOUT_SWEEP_INTERVAL_S": NEVER_S,
                "ORCHESTRATOR_RETENTION_INTERVAL_S": NEVER_S,
            }
        )
    return env


def commands(names: RunNames, scores: tuple[float, ...], workdir: Path) -> dict[str, list[str]]:
    """The command line of every process the demo runs, by name."""
    orchestrator = executable("orchestrator")
    celery = executable("celery")
    worker = [*celery, "-A", "tasks", "worker", "-Q", ALL_QUEUES, "-c", "2"]
    worker += ["-n", f"demo-{names.run_id}@%h", "--without-gossip", "--without-mingle"]
    beat = [*celery, "-A", "tasks", "beat", "-s", str(workdir / "beat-schedule")]
    return {
        "db-upgrade": [*orchestrator, "db", "upgrade"],
        "topics-create": [*orchestrator, "topics", "create"],
        "worker": [*worker, "--loglevel", "INFO"],
        "beat": [*beat, "--loglevel", "INFO"],
        "simulator": [
            *orchestrator,
            "simulate",
            "--scores",
            ",".join(format_score(s) for s in scores),
            "--group",
            names.simulator_group,
        ],
        "ingester": [*orchestrator, "ingest"],
    }
