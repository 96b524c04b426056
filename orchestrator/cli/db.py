"""`orchestrator db upgrade`: the database (created when missing) and its schema.

It says what it did: the database it created, the migrations it applied (revision and title),
or that the schema was already at the latest revision.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

import typer

from orchestrator.cli.app import db_app
from orchestrator.cli.errors import cli_errors
from orchestrator.cli.wiring import command_settings
from orchestrator.core.errors import OrchestratorError

_NO_DATABASE = re.compile(r'database "[^"]+" does not exist')
MAINTENANCE_DATABASE = "postgres"
# SQLSTATE duplicate_database: another `db upgrade` created it in the meantime.
DUPLICATE_DATABASE = "42P04"


@dataclass(frozen=True)
class Revision:
    revision: str
    title: str

    def __str__(self) -> str:
        return f"{self.revision} ({self.title})" if self.title else self.revision


def ensure_database(url: str) -> str | None:
    """Create the database `url` names when it does not exist, from the `postgres` maintenance
    database of the same server; its name when created, None when it was there."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import DBAPIError, OperationalError
    from sqlalchemy.pool import NullPool

    from orchestrator.adapters.postgres.sql import quote_identifier

    args = {"connect_timeout": 5}
    probe = create_engine(url, poolclass=NullPool, connect_args=args)
    try:
        with probe.connect():
            return None
    except OperationalError as exc:
        if not _NO_DATABASE.search(str(exc.orig or exc)):
            raise
    finally:
        probe.dispose()
    target = make_url(url)
    name = target.database or ""
    admin = create_engine(
        target.set(database=MAINTENANCE_DATABASE),
        poolclass=NullPool,
        isolation_level="AUTOCOMMIT",
        connect_args=args,
    )
    try:
        with admin.connect() as conn:
            conn.execute(text(f"CREATE DATABASE {quote_identifier(name)}"))
    except DBAPIError as exc:
        if getattr(exc.orig, "pgcode", None) == DUPLICATE_DATABASE:
            return None
        reason = " ".join(str(exc.orig or exc).split())
        raise OrchestratorError(
            f"database {name} does not exist and could not be created ({reason}): create it"
            f" (e.g. `createdb {name}`) or give the user the CREATEDB right, then run this again"
        ) from exc
    finally:
        admin.dispose()
    return name


def current_heads(url: str) -> set[str]:
    """The revisions the database's schema is at (empty before the first migration)."""
    _quiet_alembic()
    from alembic.runtime.migration import MigrationContext
    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool

    engine = create_engine(url, poolclass=NullPool, connect_args={"connect_timeout": 5})
    try:
        with engine.connect() as conn:
            return set(MigrationContext.configure(conn).get_current_heads())
    finally:
        engine.dispose()


def pending(url: str, heads: set[str]) -> list[Revision]:
    """The migrations between `heads` and the latest revision, oldest first."""
    from alembic.script import ScriptDirectory

    from orchestrator.adapters.postgres.engine import alembic_config

    script = ScriptDirectory.from_config(alembic_config(url))
    lower = sorted(heads)[0] if len(heads) == 1 else None
    found = [
        Revision(r.revision, (r.doc or "").strip().splitlines()[0] if r.doc else "")
        for r in script.iterate_revisions("heads", lower)
    ]
    return list(reversed(found))


def _quiet_alembic() -> None:
    # Alembic logs its plugin set-up at INFO when it is first imported.
    logging.getLogger("alembic").setLevel(logging.WARNING)


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Create the database if it does not exist, then apply the migrations it lacks.

    Idempotent: says which database it created and which migrations it applied, or that the
    schema was already at the latest revision.
    """
    settings = command_settings()
    from orchestrator.adapters.postgres.engine import upgrade

    url = settings.database_url
    with cli_errors("db upgrade"):
        created = ensure_database(url)
        if created is not None:
            typer.echo(f"created database {created}")
        todo = pending(url, current_heads(url))
        upgrade(url)
        at = ", ".join(sorted(current_heads(url))) or "-"
    if todo:
        names = ", ".join(str(r) for r in todo)
        typer.echo(f"applied {len(todo)} migration(s): {names}; the schema is at revision {at}")
    else:
        typer.echo(f"the schema was already at the latest revision ({at}): nothing to apply")
