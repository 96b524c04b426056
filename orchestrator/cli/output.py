"""How the operator commands print: tables (rich) for people, one JSON document for scripts."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table
from rich.text import Text


def emit_json(doc: Any) -> None:
    sys.stdout.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode() + "\n")
    sys.stdout.flush()


def console() -> Console:
    return Console(width=None if sys.stdout.isatty() else 200, highlight=False)


def add_row(table: Table, *values: str) -> None:
    """Cells as plain text: data such as "[Errno 111]" must never be read as rich markup."""
    table.add_row(*(Text(v) for v in values))


def ts(value: datetime | None) -> str:
    if value is None:
        return "-"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def dur(ms: float | None) -> str:
    if ms is None:
        return "-"
    return f"{ms:.0f} ms" if ms < 10_000 else f"{ms / 1000:.1f} s"


def dash(value: object) -> str:
    return "-" if value is None or value == "" else str(value)
