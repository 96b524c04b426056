"""The one memory sampler, on real child processes: a parent holding 64 MB with one child."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import psutil
import pytest

from orchestrator.devtools.memory import Children, Key, MemorySampler, Watched
from tests.support.helpers import wait_for

HOLD_MB = 64
PARENT = f"""
import subprocess, sys, time
block = bytearray({HOLD_MB} * 2**20)
for i in range(0, len(block), 4096):
    block[i] = 1
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
print(child.pid, flush=True)
time.sleep(60)
"""


@pytest.fixture
def parent() -> Iterator[tuple[int, int]]:
    proc = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        child_pid = int(proc.stdout.readline())
        yield proc.pid, child_pid
    finally:
        for p in psutil.Process(proc.pid).children(recursive=True):
            p.kill()
        proc.kill()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()


def _sampled(pid: int, children: Children) -> dict[Key, float]:
    sampler = MemorySampler(lambda: [Watched("p", pid, children)], interval_s=60)
    sampler.sample()
    return sampler.max_mb()


def test_each_child_is_its_own_series(parent: tuple[int, int]) -> None:
    pid, _ = parent
    wait_for(lambda: len(psutil.Process(pid).children()) == 1, timeout=10)
    got = _sampled(pid, Children.APART)
    assert set(got) == {Key("p"), Key("p", 1)}
    assert got[Key("p")] > HOLD_MB > got[Key("p", 1)]


def test_summed_is_the_whole_tree_and_none_the_process_alone(parent: tuple[int, int]) -> None:
    pid, child_pid = parent
    apart = _sampled(pid, Children.APART)
    summed = _sampled(pid, Children.SUMMED)
    alone = _sampled(pid, Children.NONE)
    assert set(summed) == set(alone) == {Key("p")}
    assert summed[Key("p")] > alone[Key("p")] > HOLD_MB
    child_mb = psutil.Process(child_pid).memory_info().rss / 2**20
    assert summed[Key("p")] == pytest.approx(apart[Key("p")] + child_mb, rel=0.2)


def test_a_process_that_is_gone_is_absent_from_the_sample() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait(10)
    assert _sampled(proc.pid, Children.APART) == {}
