"""`orchestrator demo`: the whole pipeline with a few sessions, their story shown live.

The logic lives in `orchestrator.devtools.demo`; this is the command line around it.
"""

from __future__ import annotations

from pathlib import Path

import typer

from orchestrator.cli.app import app
from orchestrator.startup import settings_or_exit


@app.command()
def demo(
    embedded: bool = typer.Option(
        False,
        "--embedded",
        help="Start embedded servers even when the configured services answer.",
    ),
    sessions: int = typer.Option(
        2, "--sessions", min=1, max=500, help="How many Genesis sessions to run."
    ),
    scores: str = typer.Option(
        "6,8",
        "--scores",
        help="Review scores the simulated reviewer gives in turn (6,8: one regeneration).",
    ),
    timeout: float = typer.Option(
        60.0, "--timeout", min=1.0, help="Seconds the sessions may take once submitted."
    ),
    workdir: Path | None = typer.Option(
        None,
        "--workdir",
        file_okay=False,
        help="Directory for the processes' logs (default: a new temporary directory).",
    ),
    keep: bool = typer.Option(
        False,
        "--keep",
        help="After the story, leave everything running and print the `export` lines for "
        "trying trace, tasks, send, dead-letters; Ctrl-C or `orchestrator down` stops it.",
    ),
) -> None:
    """Run the whole pipeline with a few sessions and show their story live.

    Uses the configured PostgreSQL, Redis and Kafka when all three answer, otherwise starts
    embedded ones from pip wheels. Stops everything it started, also on Ctrl-C; with --keep,
    only on Ctrl-C or `orchestrator down`. A bad setting stops it at once (exit 2).
    """
    settings_or_exit()
    from orchestrator.devtools.demo import DemoOptions, parse_scores, run_demo

    try:
        score_list = parse_scores(scores)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--scores") from exc
    code = run_demo(
        DemoOptions(
            embedded=embedded,
            sessions=sessions,
            scores=score_list,
            timeout_s=timeout,
            workdir=workdir,
            keep=keep,
        )
    )
    raise typer.Exit(code)


@app.command()
def down() -> None:
    """Stop a demo started with `orchestrator demo --keep`, and everything it started.

    Finds it by its state file in the run directory; only the PIDs recorded there (with their
    start times) are signalled.
    """
    from orchestrator.devtools.demo.keep import down as stop_kept_demos
    from orchestrator.devtools.demo.keep import run_dir

    lines = stop_kept_demos()
    for line in lines:
        typer.echo(line)
    if not lines:
        typer.echo(f"no kept demo found (state files in {run_dir()})")
    if any("still running" in line for line in lines):
        raise typer.Exit(1)
