"""`orchestrator tasks`: AsyncTasks, newest first, with their state, duration and age."""

from __future__ import annotations

import typer
from rich.table import Table

from orchestrator.cli.app import app
from orchestrator.cli.errors import cli_errors
from orchestrator.cli.options import JsonOption, LimitOption, check_limit, choice, positive
from orchestrator.cli.output import add_row, console, dash, dur, emit_json, ts
from orchestrator.cli.wiring import command_settings, operations
from orchestrator.core.records import TASK_STATES


@app.command()
def tasks(
    session: str | None = typer.Option(None, "--session", help="Only this session."),
    type_prefix: str | None = typer.Option(
        None, "--type", help="Only task types starting with this (e.g. Character.)."
    ),
    state: str | None = typer.Option(
        None, "--state", help="pending, running, completed or failed."
    ),
    older_than: float | None = typer.Option(
        None, "--older-than", help="Only tasks created more than this many seconds ago."
    ),
    limit: int = LimitOption,
    as_json: bool = JsonOption,
) -> None:
    """AsyncTasks, newest first.

    With their state, duration (created -> completed or failed) and age. --json: a list.
    """
    canonical = choice("--state", state, TASK_STATES)
    if older_than is not None:
        positive("--older-than", older_than, allow_zero=True)
    check_limit(limit)
    settings = command_settings(quiet=True)
    with cli_errors("tasks"), operations(settings) as ops:
        rows = ops.tasks(
            session_id=session,
            type_prefix=type_prefix,
            state=canonical,
            older_than_s=older_than,
            limit=limit,
        )
    if as_json:
        emit_json([r.as_dict() for r in rows])
        return
    table = Table(title=f"{len(rows)} AsyncTask(s)")
    for col in ("created (UTC)", "type", "status", "duration", "age", "session", "id", "error"):
        table.add_column(col, overflow="fold")
    for r in rows:
        add_row(
            table,
            ts(r.created_at),
            r.task_type,
            r.status,
            dur(r.duration_ms),
            dur(r.age_ms),
            r.session_id,
            r.id,
            dash(r.error),
        )
    console().print(table)
