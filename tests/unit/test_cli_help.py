"""`--help` of every command: flags are shown as flags, never as options taking a `<bool>`."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from orchestrator.cli.main import app


def _commands(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    yield path
    if callable(getattr(command, "list_commands", None)):
        ctx = command.context_class(command, info_name="orchestrator")
        for name in command.list_commands(ctx):
            yield from _commands(command.get_command(ctx, name), (*path, name))


COMMANDS = list(_commands(typer.main.get_command(app)))


def test_every_command_is_listed() -> None:
    assert {("demo",), ("down",), ("config",), ("db", "upgrade"), ("outbox", "retry")} <= set(
        COMMANDS
    )


@pytest.mark.parametrize("path", COMMANDS, ids=lambda p: " ".join(p) or "orchestrator")
def test_help_shows_flags_without_a_value(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "120"})
    assert result.exit_code == 0, result.output
    assert "<bool>" not in result.output, result.output
    assert "--help" in result.output


def test_options_that_take_a_value_still_say_which() -> None:
    result = CliRunner().invoke(app, ["demo", "--help"], env={"COLUMNS": "120"})
    assert "--keep" in result.output and "<float range>" in result.output, result.output
