"""What the commands build: the settings (the CLI's one loader), the container, the operator
queries on PostgreSQL. Imports of the adapters wait until a command needs them."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from orchestrator.cli.errors import one_line
from orchestrator.observability.logs import configure_logging
from orchestrator.settings import Settings
from orchestrator.startup import settings_or_exit

if TYPE_CHECKING:
    from orchestrator.bootstrap import Container
    from orchestrator.service.operator_queries import Operations


def command_settings(*, quiet: bool = False) -> Settings:
    """The settings from the environment (exit 2 on a bad one), logging configured.

    `quiet`: an operator command prints every result itself, so its process logs stay at
    errors unless the log level is DEBUG.
    """
    settings = settings_or_exit()
    level = settings.log_level
    configure_logging(("DEBUG" if level == "DEBUG" else "ERROR") if quiet else level)
    return settings


def container(settings: Settings) -> Container:
    from orchestrator.adapters.celery.app import make_celery
    from orchestrator.bootstrap import Container

    return Container(settings, make_celery(settings))


def operations_on(c: Container) -> Operations:
    """The operator queries on the container's database."""
    from orchestrator.adapters.postgres.operator_store import PgOperatorStore
    from orchestrator.service.operator_queries import Operations

    return Operations(PgOperatorStore(c.engine))


@contextmanager
def operations(settings: Settings) -> Iterator[Operations]:
    """The operator queries on a one-connection engine, disposed of afterwards."""
    from orchestrator.adapters.postgres.engine import make_engine
    from orchestrator.adapters.postgres.operator_store import PgOperatorStore
    from orchestrator.service.operator_queries import Operations

    engine = make_engine(settings.database_url, pool_size=1, max_overflow=1)
    try:
        yield Operations(PgOperatorStore(engine))
    finally:
        engine.dispose()


def request_relay(c: Container, what: str) -> None:
    """Ask for an immediate relay run; beat's relay tick is the safety net if Redis is away."""
    try:
        c.request_relay()
    except Exception as exc:
        print(
            f"orchestrator: {what}: warning: relay not requested ({one_line(exc)});"
            " beat's relay tick publishes the outbox",
            file=sys.stderr,
        )
