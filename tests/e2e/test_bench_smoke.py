"""The benchmark still runs: `python -m bench --smoke` (tiny load, one shape, embedded servers)
completes and writes a JSON document with every required figure present and numeric. Speed is
not asserted here: the figures of a smoke run mean nothing (docs/performance.md)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from bench.report import missing_numbers

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(600)
def test_smoke_run_writes_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=540,
        check=False,
    )
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    doc = orjson.loads(out.read_bytes())
    assert missing_numbers(doc) == [], doc
    assert doc["e2e_commands_per_s"] > 0
    assert doc["options"]["smoke"] is True
    assert [s["name"] for s in doc["shapes"]] == ["simple"]
    assert set(doc["targets"]) == {
        "e2e_at_least_half_of_celery_noop",
        "latency_p99_under_250_ms_at_half_load",
        "relay_lag_p99_under_1_s",
        "worker_rss_under_150_mb",
    }
    for target in doc["targets"].values():
        assert isinstance(target["met"], bool)
    assert "JSON:" in done.stdout


def test_missing_numbers_names_absent_and_non_numeric_fields() -> None:
    doc = {"e2e_commands_per_s": 1.5, "latency_ms": {"p50": "fast"}, "ratios": {}}
    missing = missing_numbers(doc)
    assert "e2e_commands_per_s" not in missing
    assert "latency_ms.p50" in missing
    assert "ratios.e2e_to_pg_txn" in missing
    assert "memory.max_worker_rss_mb" in missing
