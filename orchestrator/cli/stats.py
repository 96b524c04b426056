"""`orchestrator stats`: the pipeline's figures over a time window."""

from __future__ import annotations

import typer
from rich.table import Table

from orchestrator.cli.app import app
from orchestrator.cli.errors import cli_errors
from orchestrator.cli.options import JsonOption, positive
from orchestrator.cli.output import add_row, console, dur, emit_json, ts
from orchestrator.cli.wiring import command_settings, operations
from orchestrator.service.operator_stats import Percentiles, Stats


def _pct(p: Percentiles) -> str:
    return f"n={p.count} p50={dur(p.p50_ms)} p95={dur(p.p95_ms)} p99={dur(p.p99_ms)}"


def _figures(s: Stats) -> list[tuple[str, str]]:
    rate = s.task_creation_success_rate
    return [
        ("commands / s", f"{s.commands_per_s:.3f} ({s.commands_processed} processed)"),
        ("messages / s", f"{s.messages_per_s:.3f} ({s.messages_processed} processed)"),
        ("facts / s", f"{s.facts_per_s:.3f} ({s.facts_emitted} emitted)"),
        (
            "task creation success",
            f"{'-' if rate is None else f'{rate:.1%}'} ({s.tasks_created} created,"
            f" {s.task_dispatch_failures} dispatch failures)",
        ),
        ("end-to-end latency", _pct(s.end_to_end_latency)),
        ("task latency", _pct(s.task_latency)),
        (
            "dead letters",
            ", ".join(f"{k} {v}" for k, v in s.errors.dead_letters.items()) or "0",
        ),
        ("outbox failed (window)", str(s.errors.outbox_failed)),
        (
            "tasks failed",
            ", ".join(f"{k or '-'} {v}" for k, v in s.errors.tasks_failed.items()) or "0",
        ),
        (
            "outbox now",
            f"pending {s.outbox.pending} (oldest {dur(s.outbox.oldest_pending_age_ms)}),"
            f" failed {s.outbox.failed}",
        ),
        (
            "inbox backlog",
            f"{s.inbox.unprocessed} unprocessed (oldest {dur(s.inbox.oldest_age_ms)})",
        ),
    ]


@app.command()
def stats(
    window: float = typer.Option(300.0, "--window", help="The time window, in seconds."),
    as_json: bool = JsonOption,
) -> None:
    """The pipeline's figures over a time window.

    Commands (all messages, facts) per second; AsyncTask creation success rate (created /
    (created + capability_dispatch_failed dead letters); null, '-' in the table, when nothing
    was attempted); end-to-end latency of commands (inbox receipt -> AsyncTask completed) and
    latency of every AsyncTask (created -> completed), p50/p95/p99 in ms; errors (dead letters
    by category, FAILED outbox rows, failed AsyncTasks by error); outbox lag and inbox backlog.
    """
    positive("--window", window)
    settings = command_settings(quiet=True)
    with cli_errors("stats"), operations(settings) as ops:
        s = ops.stats(window)
    if as_json:
        emit_json(s.as_dict())
        return
    table = Table(title=f"last {s.window_s:g} s, up to {ts(s.at)} UTC", show_header=False)
    table.add_column("figure", style="bold")
    table.add_column("value", overflow="fold")
    for name, value in _figures(s):
        add_row(table, name, value)
    console().print(table)
