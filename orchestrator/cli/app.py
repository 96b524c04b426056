"""The `orchestrator` typer app and its command groups, and nothing else.

Every command module registers on these; `orchestrator.cli.main` imports the modules, so no
command module ever imports the entry point.
"""

from __future__ import annotations

import typer

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
