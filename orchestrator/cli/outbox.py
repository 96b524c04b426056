"""`orchestrator outbox` (+ `retry`, `republish`): what waits, what failed, what was sent."""

from __future__ import annotations

import typer
from rich.table import Table

from orchestrator.cli.app import outbox_app
from orchestrator.cli.errors import cli_errors, usage_error
from orchestrator.cli.options import JsonOption, LimitOption, check_limit, choice
from orchestrator.cli.output import add_row, console, dash, dur, emit_json, ts
from orchestrator.cli.wiring import command_settings, container, operations, request_relay
from orchestrator.core.records import OUTBOX_STATES
from orchestrator.settings import Settings


@outbox_app.callback(invoke_without_command=True)
def outbox(
    ctx: typer.Context,
    status: str | None = typer.Option(None, "--status", help="pending, failed or sent."),
    limit: int = LimitOption,
    as_json: bool = JsonOption,
) -> None:
    """Outbox rows (newest first) and their delivery; `outbox retry` re-drives FAILED rows.

    Each row with its lag (created -> sent, or -> now while unsent), and a summary: pending
    count, oldest pending age, failed and sent counts. --json: {summary: {...}, rows: [...]}.
    """
    if ctx.invoked_subcommand is not None:
        return
    canonical = choice("--status", status, OUTBOX_STATES)
    check_limit(limit)
    settings = command_settings(quiet=True)
    with cli_errors("outbox"), operations(settings) as ops:
        listing = ops.outbox(status=canonical, limit=limit)
    if as_json:
        emit_json(listing.as_dict())
        return
    table = Table(title=f"{len(listing.rows)} outbox row(s)")
    for col in ("seq", "created (UTC)", "kind", "type", "topic", "status", "lag", "tries", "id"):
        table.add_column(col, overflow="fold")
    table.add_column("error", overflow="fold")
    for r in listing.rows:
        add_row(
            table,
            str(r.seq),
            ts(r.created_at),
            r.kind,
            r.message_type,
            r.topic,
            r.status,
            dur(r.lag_ms),
            str(r.attempts),
            r.id,
            dash(r.last_error),
        )
    out = console()
    out.print(table)
    s = listing.summary
    oldest = dur(s.oldest_pending_age_ms) if s.oldest_pending_age_ms is not None else "-"
    out.print(f"pending {s.pending} (oldest {oldest}), failed {s.failed}, sent {s.sent}")


@outbox_app.command("retry")
def outbox_retry(
    outbox_id: str | None = typer.Argument(None, help="The FAILED outbox row to publish again."),
    all_failed: bool = typer.Option(False, "--all-failed", help="Every FAILED row."),
    as_json: bool = JsonOption,
) -> None:
    """Hand FAILED outbox rows back to the relay (PENDING, due now).

    Exit 1 when the ID is unknown or not FAILED. A retried row is published after the rows of
    its key that were sent meanwhile.
    """
    if (outbox_id is None) == (not all_failed):
        usage_error("outbox retry: give one outbox ID or --all-failed")
    settings = command_settings(quiet=True)
    with cli_errors("outbox retry"), operations(settings) as ops:
        if outbox_id is None:
            ids = ops.retry_failed_outbox()
        else:
            ops.retry_outbox(outbox_id)
            ids = [outbox_id]
    _requeued(settings, ids, as_json, "outbox retry")


@outbox_app.command("republish")
def outbox_republish(
    last: float = typer.Option(..., "--last", help="Rows SENT in the last SECONDS."),
    as_json: bool = JsonOption,
) -> None:
    """Publish again the rows sent recently, after a broker lost messages it had acknowledged.

    The rows keep their message ids (consumers deduplicate) and their per-key order.
    """
    settings = command_settings(quiet=True)
    with cli_errors("outbox republish"), operations(settings) as ops:
        ids = ops.republish_sent(last)
    _requeued(settings, ids, as_json, "outbox republish")


def _requeued(settings: Settings, ids: list[str], as_json: bool, what: str) -> None:
    """Rows handed back to the relay: ask for a relay run and say how many."""
    if ids:
        c = container(settings)
        try:
            request_relay(c, what)
        finally:
            c.close()
    if as_json:
        emit_json({"requeued": len(ids), "ids": ids})
    else:
        typer.echo(f"requeued {len(ids)} outbox row(s)")
