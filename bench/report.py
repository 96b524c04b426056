"""The benchmark's results: one JSON document and a rich table."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from bench.goals import goals
from bench.shapes import ShapeResult, max_worker_rss

TARGET_E2E_TO_NOOP = 0.5
TARGET_P99_MS = 250.0
TARGET_RELAY_LAG_P99_MS = 1000.0
TARGET_WORKER_RSS_MB = 150.0

# Fields every result carries (checked by the smoke test): dotted paths to numbers.
REQUIRED_NUMBERS = (
    "e2e_commands_per_s",
    "latency_ms.p50",
    "latency_ms.p95",
    "latency_ms.p99",
    "relay_lag_ms.p50",
    "relay_lag_ms.p99",
    "kafka_roundtrip_msgs_per_s",
    "pg_txn_per_s",
    "celery_noop_tasks_per_s",
    "ratios.e2e_to_kafka_roundtrip",
    "ratios.e2e_to_pg_txn",
    "ratios.e2e_to_celery_noop",
    "memory.max_worker_rss_mb",
)


def _ratio(a: float, b: float) -> float:
    return round(a / b, 3) if b else 0.0


def build(
    shapes: list[ShapeResult],
    limits: dict[str, Any],
    meta: dict[str, Any],
) -> dict[str, Any]:
    ref = next((s for s in shapes if s.shape.name == "simple"), shapes[0])
    e2e = ref.e2e_commands_per_s
    kafka = float(limits["kafka_roundtrip_msgs_per_s"])
    pg = float(limits["pg_txn_per_s"])
    noop = ref.celery_noop_tasks_per_s
    worker_rss = max((max_worker_rss(s.max_rss_mb) for s in shapes), default=0.0)
    by_role: dict[str, float] = {}
    for s in shapes:
        for role, mb in s.max_rss_mb.items():
            by_role[role] = max(by_role.get(role, 0.0), mb)
    targets = {
        "e2e_at_least_half_of_celery_noop": {
            "target": f">= {TARGET_E2E_TO_NOOP} x celery_noop_tasks_per_s",
            "value": _ratio(e2e, noop),
            "met": e2e >= TARGET_E2E_TO_NOOP * noop,
        },
        "latency_p99_under_250_ms_at_half_load": {
            "target": f"< {TARGET_P99_MS:.0f} ms",
            "value": ref.latency_ms.get("p99", 0.0),
            "met": ref.latency_ms.get("p99", float("inf")) < TARGET_P99_MS,
        },
        "relay_lag_p99_under_1_s": {
            "target": f"< {TARGET_RELAY_LAG_P99_MS:.0f} ms",
            "value": ref.relay_lag_ms.get("p99", 0.0),
            "met": ref.relay_lag_ms.get("p99", float("inf")) < TARGET_RELAY_LAG_P99_MS,
        },
        "worker_rss_under_150_mb": {
            "target": f"< {TARGET_WORKER_RSS_MB:.0f} MB per worker process",
            "value": worker_rss,
            "met": 0 < worker_rss < TARGET_WORKER_RSS_MB,
        },
    }
    return {
        "reference_shape": ref.shape.name,
        "e2e_commands_per_s": round(e2e, 1),
        "latency_rate_commands_per_s": round(ref.latency_rate, 1),
        "latency_ms": ref.latency_ms,
        "relay_lag_ms": ref.relay_lag_ms,
        "kafka_roundtrip_msgs_per_s": round(kafka, 1),
        "pg_txn_per_s": round(pg, 1),
        "celery_noop_tasks_per_s": round(noop, 1),
        "ratios": {
            "e2e_to_kafka_roundtrip": _ratio(e2e, kafka),
            "e2e_to_pg_txn": _ratio(e2e, pg),
            "e2e_to_celery_noop": _ratio(e2e, noop),
        },
        "scaling": {
            s.shape.name: {
                "worker_processes": s.shape.worker_processes,
                "e2e_commands_per_s": round(s.e2e_commands_per_s, 1),
                "celery_noop_tasks_per_s": round(s.celery_noop_tasks_per_s, 1),
                "e2e_to_celery_noop": _ratio(s.e2e_commands_per_s, s.celery_noop_tasks_per_s),
                "e2e_to_pg_txn": _ratio(s.e2e_commands_per_s, pg),
                "latency_p99_ms": s.latency_ms.get("p99", 0.0),
            }
            for s in shapes
        },
        "memory": {
            "max_worker_rss_mb": worker_rss,
            "target_mb": TARGET_WORKER_RSS_MB,
            "max_rss_mb_by_role": dict(sorted(by_role.items())),
        },
        "targets": targets,
        "goals": goals([s.as_dict() for s in shapes]),
        "limits": limits,
        "shapes": [s.as_dict() for s in shapes],
        **meta,
    }


def missing_numbers(doc: dict[str, Any]) -> list[str]:
    """The required fields that are absent or not numbers."""
    missing = []
    for path in REQUIRED_NUMBERS:
        node: Any = doc
        for part in path.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, bool) or not isinstance(node, int | float):
            missing.append(path)
    return missing


def _n(x: float, digits: int = 0) -> str:
    return f"{x:,.{digits}f}"


def render(doc: dict[str, Any], console: Console) -> None:
    limits = Table(title="Limits (same servers, same run)", title_justify="left")
    limits.add_column("limit")
    limits.add_column("value", justify="right")
    limits.add_column("e2e / limit", justify="right")
    limits.add_row(
        "kafka_roundtrip_msgs_per_s",
        _n(doc["kafka_roundtrip_msgs_per_s"]),
        f"{doc['ratios']['e2e_to_kafka_roundtrip']:.3f}",
    )
    pg_by = doc["limits"].get("pg_txn_per_s_by_processes", {})
    limits.add_row(
        "pg_txn_per_s (best of " + ", ".join(f"{k} proc: {v:,.0f}" for k, v in pg_by.items()) + ")",
        _n(doc["pg_txn_per_s"]),
        f"{doc['ratios']['e2e_to_pg_txn']:.3f}",
    )
    limits.add_row(
        f"celery_noop_tasks_per_s ({doc['reference_shape']})",
        _n(doc["celery_noop_tasks_per_s"]),
        f"{doc['ratios']['e2e_to_celery_noop']:.3f}",
    )
    console.print(limits)

    shapes = Table(title="End to end: command -> fact + capability message", title_justify="left")
    for col, justify in (
        ("shape", "left"),
        ("pool procs", "right"),
        ("noop tasks/s", "right"),
        ("e2e cmd/s (window)", "right"),
        ("e2e/noop", "right"),
        ("half load cmd/s", "right"),
        ("p50 ms", "right"),
        ("p95 ms", "right"),
        ("p99 ms", "right"),
        ("relay lag p50/p99 ms", "right"),
        ("CPU ms/cmd", "right"),
        ("max worker RSS MB", "right"),
    ):
        shapes.add_column(col, justify=justify)  # type: ignore[arg-type]
    for s in doc["shapes"]:
        shapes.add_row(
            s["name"],
            str(s["worker_processes"]),
            _n(s["celery_noop_tasks_per_s"]),
            f"{_n(s['e2e_commands_per_s'])} ({s['best_window']})",
            f"{s['e2e_to_celery_noop']:.2f}",
            _n(s["latency_rate_commands_per_s"]),
            _n(s["latency_ms"].get("p50", 0)),
            _n(s["latency_ms"].get("p95", 0)),
            _n(s["latency_ms"].get("p99", 0)),
            f"{_n(s['relay_lag_ms'].get('p50', 0))}/{_n(s['relay_lag_ms'].get('p99', 0))}",
            f"{s['cpu_ms_per_command'].get('total', 0):.1f}",
            f"{s['max_worker_rss_mb']:.0f}",
        )
    console.print(shapes)

    cpu = Table(
        title="CPU ms per command at the best window, by process role", title_justify="left"
    )
    roles = sorted({r for s in doc["shapes"] for r in s["cpu_ms_per_command"] if r != "total"})
    cpu.add_column("shape")
    for r in [*roles, "total"]:
        cpu.add_column(r, justify="right")
    cpu.add_column("cores used: ours / others", justify="right")
    for s in doc["shapes"]:
        c = s["cpu_ms_per_command"]
        cpu.add_row(
            s["name"],
            *(f"{c.get(r, 0):.2f}" for r in [*roles, "total"]),
            f"{s['cpu_cores_busy']:.2f} / {s['other_cpu_cores']:.2f}",
        )
    console.print(cpu)

    br = Table(title="Where a command's time goes at half load, ms", title_justify="left")
    br.add_column("shape")
    steps = ("kafka_to_inbox", "inbox_to_processing", "processing_to_sent", "sent_to_consumed")
    for step in steps:
        br.add_column(f"{step} p50/p99", justify="right")
    for s in doc["shapes"]:
        b = s["breakdown_ms"]
        br.add_row(
            s["name"],
            *(f"{_n(b[k].get('p50', 0))}/{_n(b[k].get('p99', 0))}" for k in steps),
        )
    console.print(br)

    for s in doc["shapes"]:
        odd = {k: v for k, v in s.get("anomalies", {}).items() if v}
        if odd:
            console.print(
                f"[{s['name']}] anomalies (commands settled without both messages seen by the"
                f" reader, not timed): {odd}",
                markup=False,
            )

    targets = Table(title=f"Targets ({doc['reference_shape']} shape)", title_justify="left")
    targets.add_column("target")
    targets.add_column("goal")
    targets.add_column("measured", justify="right")
    targets.add_column("met")
    for name, t in doc["targets"].items():
        targets.add_row(name, t["target"], f"{t['value']:,}", "yes" if t["met"] else "NO")
    console.print(targets)
