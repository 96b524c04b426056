"""`orchestrator config`: every setting, its value (secrets masked) and where it came from."""

from __future__ import annotations

import os

import typer
from rich.table import Table

from orchestrator.cli.app import app
from orchestrator.cli.options import JsonOption
from orchestrator.cli.output import add_row, console, emit_json
from orchestrator.cli.settings_table import markdown_table, rows
from orchestrator.cli.wiring import command_settings


@app.command("config")
def config(
    as_json: bool = JsonOption,
    markdown: bool = typer.Option(
        False, "--markdown", help="Print the README's table of every setting and its default."
    ),
) -> None:
    """Every setting: its variable, value (passwords and other secrets masked) and source.

    The source is `env` (the variable is set), `file` (ORCHESTRATOR_CONFIG_FILE) or `default`.
    A bad value stops this command like every other one (one line naming the variable, exit 2).
    --json: a list of {variable, value, source, default, meaning}.
    """
    if markdown:
        typer.echo(markdown_table())
        return
    settings = command_settings(quiet=True)
    found = rows(settings, os.environ)
    if as_json:
        emit_json([r.as_dict() for r in found])
        return
    table = Table(title=f"{len(found)} settings")
    for col in ("variable", "value", "source", "meaning"):
        table.add_column(col, overflow="fold")
    for r in found:
        add_row(table, r.variable, r.value, r.source, r.meaning)
    console().print(table)
