"""`orchestrator db upgrade`: the database schema."""

from __future__ import annotations

import typer

from orchestrator.cli.app import db_app
from orchestrator.cli.errors import cli_errors
from orchestrator.cli.wiring import command_settings


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply the database migrations (idempotent)."""
    settings = command_settings()
    from orchestrator.adapters.postgres.engine import upgrade

    with cli_errors("db upgrade"):
        upgrade(settings.database_url)
    typer.echo("database schema is up to date")
