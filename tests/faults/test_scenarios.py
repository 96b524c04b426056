"""Fault scenarios under load through every real process (see tests/faults/runner.py).

The fast part (in .ci/run): each scenario once, with a small load (80 commands at 20/s) and a
fixed seed. The long runs (`pytest -m slow tests/faults`, or `python -m tests.faults` for the
report): each scenario several times with a few hundred commands and random seeds, and the soak.
A failing run keeps its logs, inputs and figures in the test's temporary directory.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from tests.faults.runner import Options, RunResult, run_scenario
from tests.faults.scenarios import SCENARIOS
from tests.faults.soak import run_soak

FAST_COMMANDS = 80
# Seeds chosen so that each fast run injects a representative variant of its fault.
FAST_SEEDS = {
    "kill_ingester": 2,  # crash point ingest.before_commit in the 8th batch
    "kill_worker_mid_task": 4,  # crash point drain.before_commit, the worker then replaced
    "kill_relay_mid_batch": 1,  # crash point relay.after_publish, the relay then replaced
    "kill_beat": 1,
    "two_beats": 1,
    "redis_restart_data_lost": 2,
    "postgres_restart": 2,
    "kafka_restart": 5,  # the broker stays down ~5 s
    "duplicate_delivery": 1,
    "out_of_order_and_unknown_results": 1,
    "silent_capability": 1,
}


def explain(result: RunResult) -> str:
    lines = [result.line(), *result.problems, *result.fault_log]
    if result.logs:
        lines.append(f"logs, inputs and figures: {result.logs}")
    return "\n".join(lines)


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_scenario_once_under_load(name: str, tmp_path: Path) -> None:
    opts = Options(commands=FAST_COMMANDS, rate=20.0, settle_timeout_s=20.0, out_dir=tmp_path)
    result = run_scenario(SCENARIOS[name], FAST_SEEDS.get(name, 1), opts)
    print(f"\n{result.line()}")
    assert result.passed, explain(result)
    assert result.lost == 0 and result.duplicated_effects == 0


# -- long runs --------------------------------------------------------------------------------

SLOW_RUNS = int(os.environ.get("FAULT_RUNS", "3"))
SLOW_COMMANDS = int(os.environ.get("FAULT_COMMANDS", "300"))
SOAK_SECONDS = float(os.environ.get("FAULT_SOAK_SECONDS", "300"))
SOAK_RATE = float(os.environ.get("FAULT_SOAK_RATE", "15"))


@pytest.mark.slow
@pytest.mark.timeout(3600)
@pytest.mark.parametrize("name", list(SCENARIOS))
def test_scenario_repeated_under_load(name: str, tmp_path: Path) -> None:
    base = random.SystemRandom().randrange(1, 10**6)
    opts = Options(commands=SLOW_COMMANDS, rate=20.0, out_dir=tmp_path)
    results = [run_scenario(SCENARIOS[name], base + i, opts) for i in range(SLOW_RUNS)]
    for r in results:
        print(f"\n{r.line()}")
    failed = [r for r in results if not r.passed]
    assert not failed, "\n\n".join(explain(r) for r in failed)


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_soak_memory_flat_and_nothing_lost(tmp_path: Path) -> None:
    seed = random.SystemRandom().randrange(1, 10**6)
    soak = run_soak(SOAK_SECONDS, SOAK_RATE, seed, Options(out_dir=tmp_path))
    print("\n" + "\n".join(soak.lines()))
    assert soak.passed, "\n".join([*soak.lines(), explain(soak.run)])
