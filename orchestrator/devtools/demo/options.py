"""What a demo run is asked to do (the `orchestrator demo` options)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class DemoOptions:
    embedded: bool = False
    sessions: int = 2
    scores: tuple[float, ...] = (6.0, 8.0)
    timeout_s: float = 60.0
    workdir: Path | None = None
    # Leave the stack running after the story, until Ctrl-C or `orchestrator down`.
    keep: bool = False


def parse_scores(text: str) -> tuple[float, ...]:
    """`"6,8"` -> (6.0, 8.0); ValueError with a readable message otherwise."""
    try:
        scores = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError as exc:
        raise ValueError(f"--scores must be numbers separated by commas, got {text!r}") from exc
    if not scores:
        raise ValueError("--scores needs at least one number")
    return scores


def format_score(value: Any) -> str:
    """6.0 -> "6", 7.5 -> "7.5"; anything else as it is."""
    return f"{value:g}" if isinstance(value, int | float) else str(value)
