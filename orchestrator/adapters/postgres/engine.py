"""Engine factory and migrations: the only place that knows how we connect to PostgreSQL."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine, create_engine

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"


def make_engine(url: str, *, pool_size: int = 5, max_overflow: int = 5) -> Engine:
    """A pooled engine. `pool_pre_ping` makes a restarted PostgreSQL cost one retry, not a crash."""
    return create_engine(
        url,
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_pre_ping=True,
        pool_recycle=1800,
        connect_args={"connect_timeout": 5, "application_name": "genesis-orchestrator"},
    )


def alembic_config(url: str) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    """Bring the schema at `url` to `revision` (idempotent)."""
    # Alembic logs its plugin set-up at INFO when `alembic.command` is first imported.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    from alembic import command

    command.upgrade(alembic_config(url), revision)


def create_schema(url: str) -> None:
    """The schema for a fresh database, through the same migrations production runs."""
    upgrade(url)
