"""Figures of a long run as Markdown tables (the shape of docs/reliability.md) and JSON."""

from __future__ import annotations

from typing import Any

from tests.faults.runner import RunResult, summarize
from tests.faults.soak import SoakResult


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def scenario_table(results: list[RunResult]) -> str:
    rows = [
        "| scenario | runs (passed) | commands | messages | lost | duplicated effects |"
        " redelivered Kafka duplicates | dead-lettered | timed out | unexpected exits |"
        " time to recover min / median / max (s) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, t in summarize(results).items():
        rows.append(
            f"| {name} | {t['runs']} ({t['passed']}) | {t['commands']} | {t['messages']} |"
            f" {t['lost']} | {t['duplicated_effects']} | {t['redelivered']} |"
            f" {t['dead_lettered']} | {t['timed_out']} | {t['unexpected_exits']} |"
            f" {_s(t['recover_min_s'])} / {_s(t['recover_median_s'])} /"
            f" {_s(t['recover_max_s'])} |"
        )
    return "\n".join(rows)


def runs_table(results: list[RunResult]) -> str:
    rows = [
        "| scenario | seed | mode | verdict | commands | messages | lost | dup. effects |"
        " redelivered | dead-lettered | timed out | exits | recover (s) | settle (s) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        rows.append(
            f"| {r.scenario} | {r.seed} | {r.mode} | {'pass' if r.passed else 'FAIL'} |"
            f" {r.commands} | {r.messages} | {r.lost} | {r.duplicated_effects} |"
            f" {r.redelivered} | {r.dead_lettered} | {r.timed_out} | {r.unexpected_exits} |"
            f" {_s(r.recover_s)} | {_s(r.settle_s)} |"
        )
    return "\n".join(rows)


def soak_table(soak: SoakResult) -> str:
    rows = [
        f"Duration {soak.seconds:.0f} s at {soak.rate:g} commands/s: {soak.commands} commands,"
        f" {soak.run.messages} messages; lost {soak.run.lost}, duplicated effects"
        f" {soak.run.duplicated_effects}, dead-lettered {soak.run.dead_lettered}; max outbox lag"
        f" {soak.max_outbox_lag_s:.2f} s, max inbox backlog {soak.max_inbox_backlog}"
        f" ({'bounded' if soak.lag_bounded and soak.backlog_bounded else 'GROWING'});"
        f" memory after a {soak.warmup_s:.0f} s warm-up:",
        "",
        "| process | start (MB) | end (MB) | max (MB) | verdict |",
        "|---|---|---|---|---|",
    ]
    for m in soak.memory:
        verdict = ("flat" if m.flat else "GROWS") if m.judged else "not judged"
        rows.append(
            f"| {m.process} | {m.start_mb:.1f} | {m.end_mb:.1f} | {m.max_mb:.1f} | {verdict} |"
        )
    return "\n".join(rows)


def markdown(results: list[RunResult], soak: SoakResult | None, header: dict[str, Any]) -> str:
    parts = ["# Fault runs", ""]
    parts += [f"- {k}: {v}" for k, v in header.items()]
    if results:
        parts += ["", "## Per scenario", "", scenario_table(results)]
        parts += ["", "## Every run", "", runs_table(results)]
        failed = [r for r in results if not r.passed]
        if failed:
            parts += ["", "## Failed runs", ""]
            for r in failed:
                parts.append(f"- {r.scenario} seed {r.seed} ({r.mode}); evidence in {r.logs}")
                parts += [f"  - {p}" for p in r.problems[:8]]
    if soak is not None:
        parts += ["", "## Soak", "", soak_table(soak)]
        if not soak.run.passed:
            parts += [f"- {p}" for p in soak.run.problems[:8]]
    return "\n".join(parts) + "\n"
