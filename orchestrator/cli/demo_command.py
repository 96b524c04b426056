"""`orchestrator demo`: the whole pipeline with a few sessions, their story shown live.

The logic lives in `orchestrator.devtools.demo`; this is the command line around it.
"""

from __future__ import annotations

from pathlib import Path

import typer

from orchestrator.cli.app import app


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
) -> None:
    """Run the whole pipeline with a few sessions and show their story live.

    Uses the configured PostgreSQL, Redis and Kafka when all three answer, otherwise starts
    embedded ones from pip wheels. Stops everything it started, also on Ctrl-C.
    """
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
        )
    )
    raise typer.Exit(code)
