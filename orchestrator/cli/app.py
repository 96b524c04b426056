"""The `orchestrator` typer app and its command groups, and nothing else.

Every command module registers on these; `orchestrator.cli.main` imports the modules, so no
command module ever imports the entry point.
"""

from __future__ import annotations

from typing import Any

import typer
import typer.core


def _flags_without_a_type() -> None:
    """Typer 0.29's rich help prints a flag's type (`--json <bool>`, even `--help <bool>`),
    which reads as if the flag took a value: flags show no type column."""
    option = getattr(typer.core, "TyperOption", None)
    original = getattr(option, "display_type_rich", None)
    if option is None or original is None or getattr(original, "_flag_aware", False):
        return

    def display_type_rich(self: Any, ctx: Any) -> str | None:
        if getattr(self, "is_flag", False) and not getattr(self, "count", False):
            return None
        result: str | None = original(self, ctx)
        return result

    display_type_rich._flag_aware = True  # type: ignore[attr-defined]
    option.display_type_rich = display_type_rich


_flags_without_a_type()

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help="Genesis event orchestrator: ingest, relay, operate.",
)
db_app = typer.Typer(no_args_is_help=True, help="Database schema.")
topics_app = typer.Typer(no_args_is_help=True, help="Kafka topics.")
outbox_app = typer.Typer(
    help="The outbox: what waits, what failed, what was sent; re-drive FAILED rows."
)
dead_letters_app = typer.Typer(
    no_args_is_help=True,
    help="Inputs that could not be processed: list, show, replay, discard.",
)
app.add_typer(db_app, name="db")
app.add_typer(topics_app, name="topics")
app.add_typer(outbox_app, name="outbox")
app.add_typer(dead_letters_app, name="dead-letters")
