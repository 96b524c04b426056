"""Options the operator commands share, and the checks of their values (exit 2 when bad)."""

from __future__ import annotations

from collections.abc import Sequence

import typer

from orchestrator.cli.errors import usage_error

JSON_HELP = "Print one JSON document instead of a table."
JsonOption = typer.Option(False, "--json", help=JSON_HELP)
LimitOption = typer.Option(50, "--limit", help="At most this many rows.")


def choice(option: str, value: str | None, choices: Sequence[str]) -> str | None:
    """A case-insensitive choice, returned in its canonical spelling; else exit 2."""
    if value is None:
        return None
    for c in choices:
        if c.lower() == value.strip().lower():
            return c
    allowed = ", ".join(c.lower() for c in choices)
    usage_error(f"{option} must be one of {allowed}; got {value!r}")


def positive(option: str, value: float, *, allow_zero: bool = False) -> None:
    if value < 0 or (value == 0 and not allow_zero):
        usage_error(f"{option} must be {'>= 0' if allow_zero else '> 0'}; got {value:g}")


def check_limit(limit: int) -> None:
    if limit < 1:
        usage_error(f"--limit must be >= 1; got {limit}")
