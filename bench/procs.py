"""What the processes of a benchmark shape cost, per role: resident memory (sampled) and CPU
time (snapshots). The processes themselves are started and stopped by
`orchestrator.devtools.supervisor`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence

import psutil

from orchestrator.devtools.memory import MemorySampler, Watched, tree
from orchestrator.devtools.supervisor import Child


def labelled(procs: Sequence[Child], servers: Mapping[str, Sequence[int]]) -> dict[int, str]:
    """pid -> role for every process of the shape and of the servers. A process's descendants
    take the role suffixed `-pool` (Celery's prefork children; PostgreSQL's backends)."""
    roles: dict[int, str] = {}
    for p in procs:
        for i, member in enumerate(tree(p.pid)):
            roles[member.pid] = p.role if i == 0 else f"{p.role}-pool"
    for role, pids in servers.items():
        for pid in pids:
            for member in tree(pid):
                roles[member.pid] = role
    return roles


def cpu_snapshot(pids: Mapping[int, str]) -> dict[int, float]:
    """User + system CPU seconds of each process so far."""
    out: dict[int, float] = {}
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            t = psutil.Process(pid).cpu_times()
            out[pid] = t.user + t.system
    return out


def system_busy_s() -> float:
    """CPU seconds the whole machine has been busy (all CPUs, all processes)."""
    t = psutil.cpu_times()
    return float(sum(t)) - float(t.idle) - float(getattr(t, "iowait", 0.0))


def cpu_by_role(
    roles: Mapping[int, str], before: Mapping[int, float], after: Mapping[int, float]
) -> dict[str, float]:
    """CPU seconds spent between two snapshots, summed per role."""
    out: dict[str, float] = {}
    for pid, end in after.items():
        role = roles.get(pid)
        if role is None:
            continue
        out[role] = out.get(role, 0.0) + max(0.0, end - before.get(pid, 0.0))
    return out


class ShapeSampler(MemorySampler):
    """The RSS of every process of the shape and of each of its descendants, and the Celery
    queue lengths, on the memory sampler's thread; keeps the maxima per role."""

    def __init__(
        self,
        procs: Callable[[], Sequence[Child]],
        queue_lengths: Callable[[], dict[str, int]] | None = None,
        interval_s: float = 0.25,
    ) -> None:
        super().__init__(self._watched, interval_s)
        self.procs = procs
        self.queue_lengths = queue_lengths
        self.max_queue: dict[str, int] = {}
        self.roles: dict[str, str] = {}

    def _watched(self) -> list[Watched]:
        procs = self.procs()
        self.roles.update((p.name, p.role) for p in procs)
        return [Watched(p.name, p.pid) for p in procs]

    def sample(self) -> None:
        super().sample()
        if self.queue_lengths is not None:
            with contextlib.suppress(Exception):
                for q, n in self.queue_lengths().items():
                    self.max_queue[q] = max(self.max_queue.get(q, 0), n)

    def max_mb_by_role(self) -> dict[str, float]:
        """A process's descendants count under its role suffixed `-pool`."""
        out: dict[str, float] = {}
        for key, mb in self.max_mb().items():
            role = self.roles[key.name] + ("-pool" if key.child else "")
            out[role] = max(out.get(role, 0.0), mb)
        return {k: round(v, 1) for k, v in sorted(out.items())}
