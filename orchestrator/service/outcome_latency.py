"""Which facts end a command's work, and the `kind` label of its end-to-end latency.

A command's outcome is a `<Target>.Confirmed` / `<Target>.Failed` fact of its
correlation, or the `AsyncTask.TimedOut` fact beat writes when a task of it got no answer. The
latency (`orchestrator_command_latency_seconds{kind,outcome}`) runs from the command's arrival
in the inbox to that fact's transaction. `kind` is the outcome fact's target in lower case
(`character`, `theme`, `seed`, `world`, `plot`, `details`, `stage`); for a timeout, the kind of
the task that timed out (a generation kind, `stage` for a consistency check, `review` for a
quality review).
"""

from __future__ import annotations

from orchestrator.core.catalogue import (
    CONSISTENCY_CHECK_REQUEST,
    GENERATION_KINDS,
    QUALITY_REVIEW_REQUEST,
)

CONFIRMED, FAILED, TIMED_OUT = "confirmed", "failed", "timed_out"
_FACT_OUTCOMES = {"Confirmed": CONFIRMED, "Failed": FAILED}


def fact_outcome(event_type: str) -> tuple[str, str] | None:
    """(kind, outcome) of an outcome fact (`Genesis.Session.Character.Confirmed` ->
    `("character", "confirmed")`); None for every other fact."""
    parts = event_type.rsplit(".", 2)
    if len(parts) < 3 or parts[2] not in _FACT_OUTCOMES:
        return None
    return parts[1].lower(), _FACT_OUTCOMES[parts[2]]


def task_kind(task_type: str) -> str:
    """The `kind` label of a timed-out task."""
    for kind in GENERATION_KINDS:
        if task_type.startswith(kind.task_prefix):
            return kind.target_type
    if task_type == CONSISTENCY_CHECK_REQUEST:
        return "stage"
    if task_type == QUALITY_REVIEW_REQUEST:
        return "review"
    return task_type.split(".", 1)[0].lower()
