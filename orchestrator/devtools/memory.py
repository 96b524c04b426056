"""Resident memory (RSS) of processes and their descendants, sampled over time on a thread.

The benchmark (the largest RSS per role) and the fault suite's soak (does memory stay flat)
both watch processes that come and go: workers restart and pool children are replaced. So the
watched processes are asked for again at every sample, and a process that exits between being
listed and being read is simply absent from that sample.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import Enum
from typing import NamedTuple

import psutil

MB = float(2**20)


class Children(Enum):
    """How a watched process's descendants are counted."""

    APART = "apart"  # each descendant its own series (a Celery worker's pool children)
    SUMMED = "summed"  # one figure for the process and all below it (a server and its backends)
    NONE = "none"  # the process alone


@dataclass(frozen=True, slots=True)
class Watched:
    name: str
    pid: int
    children: Children = Children.APART


class Key(NamedTuple):
    """One series: the watched process itself (`child` 0), or the `child`-th of its
    descendants in the order they were first seen (from 1)."""

    name: str
    child: int = 0


def tree(pid: int, descendants: bool = True) -> list[psutil.Process]:
    """The process and (unless `descendants` is false) all below it; empty when it is gone."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)] if descendants else [root]
    except psutil.Error:
        return []


def rss_mb(proc: psutil.Process) -> float | None:
    """The process's RSS in MB; None when it is gone or unreadable."""
    try:
        return float(proc.memory_info().rss) / MB
    except psutil.Error:
        return None


class MemorySampler:
    """Every `interval_s`, the RSS of each process `watched()` names, as series over
    `time.monotonic()`; `sample()` may also be called directly (a last reading at the end)."""

    def __init__(self, watched: Callable[[], Iterable[Watched]], interval_s: float) -> None:
        self.watched = watched
        self.interval_s = interval_s
        self.series: dict[Key, list[tuple[float, float]]] = {}
        self.last_error: Exception | None = None
        self._children: dict[str, list[int]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="memory-sampler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float = 30.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    def sample(self) -> None:
        now = time.monotonic()
        with self._lock:
            for w in self.watched():
                for key, mb in self._read(w):
                    self.series.setdefault(key, []).append((now, mb))

    def max_mb(self) -> dict[Key, float]:
        with self._lock:
            return {key: max(mb for _, mb in s) for key, s in self.series.items() if s}

    def _read(self, w: Watched) -> Iterable[tuple[Key, float]]:
        procs = tree(w.pid, descendants=w.children is not Children.NONE)
        if not procs:
            return []
        if w.children is Children.SUMMED:
            readings = [rss_mb(p) for p in procs]
            if any(mb is None for mb in readings):
                return []  # a backend exiting mid-sample would show as a drop
            return [(Key(w.name), sum(mb for mb in readings if mb is not None))]
        root, *below = procs
        out = [(Key(w.name), rss_mb(root))]
        known = self._children.setdefault(w.name, [])
        for child in sorted(below, key=lambda p: p.pid):
            if child.pid not in known:
                known.append(child.pid)
            out.append((Key(w.name, known.index(child.pid) + 1), rss_mb(child)))
        return [(key, mb) for key, mb in out if mb is not None]

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.sample()
            except Exception as exc:  # a watched() that failed once: keep sampling
                self.last_error = exc
            self._stop.wait(self.interval_s)
