"""`orchestrator trace SESSION`: the whole story of one session, in time order."""

from __future__ import annotations

import typer
from rich.markup import escape
from rich.table import Table

from orchestrator.cli.app import app
from orchestrator.cli.errors import cli_errors
from orchestrator.cli.options import JsonOption
from orchestrator.cli.output import add_row, console, dash, dur, emit_json, ts
from orchestrator.cli.wiring import command_settings, operations
from orchestrator.service.operator_views import TimelineEntry
from orchestrator.startup import fail


def _summary(e: TimelineEntry) -> str:
    d = e.details
    if e.kind == "inbox":
        return (
            f"{d['message_kind']} #{d['inbox_id']} outcome={dash(d['outcome'])}"
            f" attempts={d['attempts']} processing={dur(d['processing_ms'])}"
            + (f" error={d['last_error']}" if d["last_error"] else "")
        )
    if e.kind == "fact":
        return f"cause={d['causation_id']}"
    if e.kind == "task":
        return f"{d['status']} duration={dur(d['duration_ms'])}" + (
            f" error={d['error']}" if d["error"] else ""
        )
    if e.kind == "outbox":
        return (
            f"{d['status']} {d['message_kind']} -> {d['topic']} lag={dur(d['lag_ms'])}"
            f" attempts={d['attempts']}" + (f" error={d['last_error']}" if d["last_error"] else "")
        )
    return f"{d['status']} {d['reason']}" + (f" ({d['resolution']})" if d["resolution"] else "")


@app.command()
def trace(
    session_id: str = typer.Argument(..., help="The session (aggregate) id."),
    as_json: bool = JsonOption,
) -> None:
    """The whole story of one session, in time order.

    Inbox messages (received/processed, outcome, attempts), facts, AsyncTasks (state,
    duration), outbox rows (delivery status, sent_at, lag) and dead letters (those of raw input
    are found by their Kafka key). --json: a list of {at, kind, type, id, details}; exit 1 when
    nothing is recorded for the session.
    """
    settings = command_settings(quiet=True)
    with cli_errors("trace"), operations(settings) as ops:
        entries = ops.trace(session_id)
    if not entries:
        fail(f"trace: nothing recorded for session {session_id}", 1)
    if as_json:
        emit_json([e.as_dict() for e in entries])
        return
    start = entries[0].at
    table = Table(title=escape(f"session {session_id}: {len(entries)} entries"))
    for col in ("at (UTC)", "+ms", "kind", "type", "id", "details"):
        table.add_column(col, overflow="fold")
    for e in entries:
        offset = (e.at - start).total_seconds() * 1000
        add_row(table, ts(e.at), f"{offset:.0f}", e.kind, e.type, e.id, _summary(e))
    console().print(table)
