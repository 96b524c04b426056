"""The hot path's goal table (2 cores, shape `simple`, default settings, ratios of one run) and
the before/after comparison of two runs on the same servers."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

# (name, goal text, path in a shape's result, comparison, bound)
GOALS: tuple[tuple[str, str, str, str, float], ...] = (
    ("burst over many sessions / celery noop", ">= 1.5", "e2e_to_celery_noop", ">=", 1.5),
    (
        "burst, one session per command / celery noop",
        ">= 1.0",
        "distinct_sessions_to_celery_noop",
        ">=",
        1.0,
    ),
    ("p99 at half the best rate, ms", "< 100", "latency_ms.p99", "<", 100.0),
    ("light load (15/s) p50, ms", "< 25", "light_load_latency_ms.p50", "<", 25.0),
    ("light load (15/s) p99, ms", "< 60", "light_load_latency_ms.p99", "<", 60.0),
    ("relay lag p99, ms", "< 50", "relay_lag_ms.p99", "<", 50.0),
    ("CPU per command, all processes, ms", "<= 1.5", "cpu_ms_per_command.total", "<=", 1.5),
)


def value_at(shape: dict[str, Any], path: str) -> float | None:
    node: Any = shape
    for part in path.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return float(node) if isinstance(node, int | float) and not isinstance(node, bool) else None


def _met(value: float | None, op: str, bound: float) -> bool:
    if value is None:
        return False
    return {">=": value >= bound, "<": value < bound, "<=": value <= bound}[op]


def goals(shapes: list[dict[str, Any]]) -> dict[str, Any]:
    """Each goal on the `simple` shape, and whether every other shape is at least as fast."""
    ref = next((s for s in shapes if s["name"] == "simple"), shapes[0])
    out: dict[str, Any] = {}
    for name, text, path, op, bound in GOALS:
        value = value_at(ref, path)
        out[name] = {"goal": text, "value": value, "met": _met(value, op, bound)}
    others = {s["name"]: s["e2e_commands_per_s"] for s in shapes if s is not ref}
    if others:
        slowest = min(others.values())
        out["every other shape at least simple's rate"] = {
            "goal": f">= {ref['e2e_commands_per_s']:.0f} cmd/s",
            "value": slowest,
            "met": slowest >= ref["e2e_commands_per_s"],
        }
    return out


def render_goals(doc: dict[str, Any], console: Console) -> None:
    table = Table(title="Goal table (issue: batched hot path)", title_justify="left")
    for col in ("goal", "target", "measured", "met"):
        table.add_column(col, justify="right" if col == "measured" else "left")
    for name, g in doc.get("goals", {}).items():
        value = "-" if g["value"] is None else f"{g['value']:,.2f}"
        table.add_row(name, g["goal"], value, "yes" if g["met"] else "NO")
    console.print(table)


def render_comparison(after: dict[str, Any], before: dict[str, Any], console: Console) -> None:
    """The same figures of the same shapes, this tree against the revision measured after it."""
    table = Table(
        title=f"Before ({before.get('revision', {}).get('commit', '?')[:10]}) and after,"
        " same servers, measured one right after the other",
        title_justify="left",
    )
    for col in ("shape", "figure", "before", "after", "after / before"):
        table.add_column(col, justify="left" if col in ("shape", "figure") else "right")
    paths = [
        ("celery noop tasks/s", "celery_noop_tasks_per_s"),
        ("e2e cmd/s", "e2e_commands_per_s"),
        *((name, path) for name, _t, path, _o, _b in GOALS),
    ]
    old = {s["name"]: s for s in before.get("shapes", [])}
    for s in after.get("shapes", []):
        prev = old.get(s["name"], {})
        for label, path in paths:
            a, b = value_at(s, path), value_at(prev, path)
            ratio = f"{a / b:.2f}" if a is not None and b else "-"
            table.add_row(
                s["name"],
                label,
                "-" if b is None else f"{b:,.2f}",
                "-" if a is None else f"{a:,.2f}",
                ratio,
            )
    console.print(table)
