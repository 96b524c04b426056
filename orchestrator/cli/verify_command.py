"""`orchestrator verify`: the database's invariants, and what is wrong, message by message.

The checks live in `orchestrator.devtools.verify`. Exit 0 when every invariant holds, 1
otherwise (or when the database is unreachable), 2 on a bad setting.
"""

from __future__ import annotations

import sys

import orjson
import typer

from orchestrator.cli.app import app
from orchestrator.cli.errors import cli_errors
from orchestrator.cli.wiring import command_settings


@app.command("verify")
def verify_command(
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document."),
    session: str | None = typer.Option(None, "--session", help="Check one session only."),
    no_sessions: bool = typer.Option(
        False,
        "--no-session-invariants",
        help="Skip the Genesis session invariants (every outcome has its request).",
    ),
) -> None:
    """Check that every input produced exactly its facts, messages, tasks or dead letter."""
    settings = command_settings()
    from orchestrator.adapters.postgres.engine import make_engine
    from orchestrator.devtools.verify import verify

    engine = make_engine(settings.database_url, pool_size=1, max_overflow=0)
    try:
        with cli_errors("verify"):
            report = verify(
                engine, session=session, sessions=not no_sessions, mapping=settings.command_mapping
            )
    finally:
        engine.dispose()
    if as_json:
        sys.stdout.write(orjson.dumps(report.as_dict(), option=orjson.OPT_INDENT_2).decode())
        sys.stdout.write("\n")
    else:
        typer.echo(report.text())
    raise typer.Exit(0 if report.ok else 1)
