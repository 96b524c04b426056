"""`orchestrator`: run the processes (ingest, relay, simulate, demo) and operate the system.

Every command reads its configuration from the environment only, works from any directory, and
turns an unreachable service or a bad argument into one clear line and a non-zero exit code
(`orchestrator.cli.errors`). This module gathers the command modules onto the app of
`orchestrator.cli.app` and is the console script's entry point.
"""

from __future__ import annotations

from orchestrator.cli.app import app

# Importing a command module registers its commands; the help lists them in this order.
# isort: off
from orchestrator.cli import run  # noqa: F401  ingest, relay, simulate
from orchestrator.cli import trace  # noqa: F401
from orchestrator.cli import tasks  # noqa: F401
from orchestrator.cli import stats  # noqa: F401
from orchestrator.cli import send  # noqa: F401
from orchestrator.cli import demo_command  # noqa: F401
from orchestrator.cli import verify_command  # noqa: F401
from orchestrator.cli import config  # noqa: F401
from orchestrator.cli import db, topics, outbox, dead_letters  # noqa: F401  (groups)
# isort: on

__all__ = ["app", "main"]


def main() -> None:
    app()
