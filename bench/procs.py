"""The processes a benchmark shape runs, started through their real command lines, and what
they cost: resident memory (sampled) and CPU time (snapshots), per role.

Every process is started in its own session (process group) and stopped by that group only:
SIGTERM, a grace period, then SIGKILL. Nothing is ever signalled by name.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil

BIN = Path(sys.executable).parent
STOP_GRACE_S = 20.0


@dataclass
class Proc:
    """A process started in its own session, with its log; the benchmark and the tests' harness
    both use it. Signals go to its own process group only."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    role: str = ""

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float = STOP_GRACE_S) -> int | None:
        """SIGTERM, wait, then SIGKILL; only this process's own group."""
        if self.alive():
            os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.popen.returncode

    def kill(self) -> None:
        if self.alive():
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(10)

    def text(self) -> str:
        """The whole log so far."""
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.text().splitlines()[-lines:])


def stop_together(procs: Sequence[Proc], timeout: float = STOP_GRACE_S) -> None:
    """SIGTERM every live process group at once, then wait (a Celery worker's soft shutdown
    takes seconds: one after the other adds up); SIGKILL what outlives the deadline."""
    live = [p for p in procs if p.alive()]
    for p in live:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for p in live:
        try:
            p.popen.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()


@dataclass
class Supervisor:
    """Starts processes in a work directory and stops every one of them (and their groups)."""

    workdir: Path
    procs: list[Proc] = field(default_factory=list)

    def spawn(self, role: str, name: str, argv: Sequence[str], env: Mapping[str, str]) -> Proc:
        log = self.workdir / f"{name}.log"
        with log.open("ab") as handle:
            popen = subprocess.Popen(
                list(argv),
                cwd=self.workdir,
                env=dict(env),
                stdout=handle,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        proc = Proc(name, popen, log, role)
        self.procs.append(proc)
        return proc

    def check_alive(self) -> None:
        for p in self.procs:
            if not p.alive():
                raise RuntimeError(
                    f"{p.name} (pid {p.pid}) exited with status {p.popen.returncode}:\n{p.tail()}"
                )

    def stop_all(self) -> None:
        """SIGTERM each leader (newest first; a Celery worker then stops its pool itself),
        wait, and SIGKILL whatever is left of each group."""
        for p in reversed(self.procs):
            if p.alive():
                with contextlib.suppress(ProcessLookupError):
                    p.popen.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for p in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.popen.wait(max(0.1, deadline - time.monotonic()))
        for p in self.procs:
            # The group may outlive its leader (pool children): kill what is left of it.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(p.pid, signal.SIGKILL)
            if p.popen.poll() is None:
                p.popen.wait(10)
        self.procs.clear()

    def logs(self, lines: int = 30) -> str:
        return "\n".join(
            f"---- {p.name} (pid {p.pid}, rc {p.popen.returncode})\n{p.tail(lines)}"
            for p in self.procs
        )


def tree(pid: int) -> list[psutil.Process]:
    """The process and its descendants (empty when it is gone)."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def labelled(procs: Sequence[Proc], servers: Mapping[str, Sequence[int]]) -> dict[int, str]:
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


class MemorySampler:
    """Samples the RSS of every process of the shape (and its descendants) in a thread and
    keeps the maximum per process; also samples the Celery queue lengths."""

    def __init__(
        self,
        procs: Callable[[], Sequence[Proc]],
        queue_lengths: Callable[[], dict[str, int]] | None = None,
        interval_s: float = 0.25,
    ) -> None:
        self.procs = procs
        self.queue_lengths = queue_lengths
        self.interval_s = interval_s
        self.max_rss: dict[int, tuple[str, int]] = {}
        self.max_queue: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def sample(self) -> None:
        for p in self.procs():
            for i, member in enumerate(tree(p.pid)):
                role = p.role if i == 0 else f"{p.role}-pool"
                with contextlib.suppress(psutil.Error):
                    rss = member.memory_info().rss
                    _, best = self.max_rss.get(member.pid, (role, 0))
                    self.max_rss[member.pid] = (role, max(best, rss))
        if self.queue_lengths is not None:
            with contextlib.suppress(Exception):
                for q, n in self.queue_lengths().items():
                    self.max_queue[q] = max(self.max_queue.get(q, 0), n)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def max_mb_by_role(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for role, rss in self.max_rss.values():
            out[role] = max(out.get(role, 0.0), rss / 2**20)
        return {k: round(v, 1) for k, v in sorted(out.items())}
