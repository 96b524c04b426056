"""The one supervisor of the child processes the dev tools and the tests start.

The demo, the benchmark and the tests' harness all run the orchestrator through its real
command lines and must leave nothing behind, also when they are interrupted. Each child runs in
its own session and process group (so a terminal's Ctrl-C reaches only its owner, which then
stops the children in order), writes to `<logdir>/<name>.log`, and is signalled through its own
process group only, never found by name. Stopping is done for all children at once: a Celery
worker's soft shutdown takes seconds, and one child after the other would add them up.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.devtools.processes import log_tail_lines, parent_death_signal

__all__ = [
    "BIN",
    "GROUP_EXIT_S",
    "STOP_GRACE_S",
    "Child",
    "ChildExited",
    "CommandFailed",
    "Supervisor",
    "stop_together",
]

# Where the console scripts of this Python (`orchestrator`, `celery`) are installed.
BIN = Path(sys.executable).parent
STOP_GRACE_S = 20.0
# After SIGKILL, the rest of a child's group (a worker's pool) must be gone within this.
GROUP_EXIT_S = 3.0
TAIL_LINES = 40
_INTERRUPTIONS = frozenset({signal.SIGINT, signal.SIGTERM})


class ChildExited(RuntimeError):
    """A long-running child ended although nobody stopped it."""

    def __init__(self, child: Child) -> None:
        super().__init__(
            f"{child.name} (pid {child.pid}) exited with status {child.returncode}:\n{child.tail()}"
        )
        self.child = child


class CommandFailed(RuntimeError):
    """A one-shot command (`Supervisor.run_all`) failed or did not finish in time."""

    def __init__(self, message: str, child: Child, *, timed_out: bool) -> None:
        super().__init__(message)
        self.child = child
        self.timed_out = timed_out


@dataclass(eq=False)
class Child:
    """One started process, the leader of its own process group, with its log file."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    role: str = ""
    # Once the group was seen empty its number may be reused: it is never signalled again.
    _group_gone: bool = field(default=False, repr=False)

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def returncode(self) -> int | None:
        return self.popen.returncode

    def alive(self) -> bool:
        return self.popen.poll() is None

    def group_alive(self) -> bool:
        """Some process of the child's group still exists (the leader or its descendants)."""
        if self._group_gone:
            return False
        try:
            os.killpg(self.pid, 0)
        except ProcessLookupError:
            self._group_gone = True
            return False
        except PermissionError:
            return True
        return True

    def signal_group(self, sig: int) -> None:
        if not self._group_gone:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, sig)

    def text(self) -> str:
        """The whole log so far."""
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def tail(self, lines: int = TAIL_LINES) -> str:
        return log_tail_lines(self.log, lines)

    def stop(self, timeout: float = STOP_GRACE_S) -> int | None:
        """SIGTERM to the group, SIGKILL after `timeout`; the exit status."""
        stop_together([self], timeout)
        return self.returncode

    def kill(self) -> None:
        """SIGKILL the whole group at once (a worker with its pool) and reap the leader."""
        if self.alive():
            self.signal_group(signal.SIGKILL)
            self.popen.wait(10)


def stop_together(
    children: Iterable[Child], timeout: float = STOP_GRACE_S, *, leaders_only: bool = False
) -> int:
    """Stop every child at once; how many were still running.

    SIGTERM to each child's group (to the leader alone with `leaders_only`: a Celery worker
    then stops its pool itself), newest first. Leaders and the rest of their groups share one
    grace of `timeout` seconds; SIGKILL then goes to the groups that are left, the leaders are
    reaped and the rest of each group is waited for. Safe to call again after an interruption,
    and for children already stopped.
    """
    children = list(children)
    running = [c for c in children if c.alive() or c.group_alive()]
    for child in reversed(running):
        if leaders_only and child.alive():
            with contextlib.suppress(ProcessLookupError):
                child.popen.send_signal(signal.SIGTERM)
        else:
            child.signal_group(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for child in running:
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.popen.wait(max(0.0, deadline - time.monotonic()))
        # The rest of the group (a worker's pool) gets the same grace as its leader.
        while child.group_alive() and time.monotonic() < deadline:
            time.sleep(0.02)
    for child in children:
        if child.alive() or child.group_alive():
            child.signal_group(signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.popen.wait(10)
    group_deadline = time.monotonic() + GROUP_EXIT_S
    for child in children:
        # Grandchildren (a worker's pool) are not ours to reap: wait until they are gone.
        while child.group_alive() and time.monotonic() < group_deadline:
            child.signal_group(signal.SIGKILL)
            time.sleep(0.02)
    return len(running)


class Supervisor:
    """Starts children and stops every one of them: nothing it started survives it.

    Children started from the main thread also get a parent-death signal (SIGTERM when the
    owner dies, even by SIGKILL); the kernel ties it to the starting thread, so children started
    from other, possibly short-lived threads (restarts on a timer) are not tied. While such a
    child is forked and recorded, SIGINT and SIGTERM are blocked, so an interruption can never
    leave an unrecorded child.
    """

    def __init__(
        self,
        logdir: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        *,
        append_logs: bool = True,
        leaders_only: bool = False,
        grace: float = STOP_GRACE_S,
    ) -> None:
        self.logdir = logdir
        self.env = dict(env) if env is not None else None
        self.cwd = cwd or logdir
        self.append_logs = append_logs
        self.leaders_only = leaders_only
        self.grace = grace
        self.started: list[Child] = []
        self._running: list[Child] = []
        self._lock = threading.Lock()

    @property
    def running(self) -> list[Child]:
        """The children started and not yet stopped (some may have exited on their own)."""
        with self._lock:
            return list(self._running)

    def spawn(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        role: str = "",
    ) -> Child:
        """Start `argv` with stdin closed and stdout and stderr in `<logdir>/<name>.log`."""
        log = self.logdir / f"{name}.log"
        env = env if env is not None else self.env
        tied = threading.current_thread() is threading.main_thread()
        with log.open("ab" if self.append_logs else "wb") as handle:
            previous = signal.pthread_sigmask(signal.SIG_BLOCK, _INTERRUPTIONS) if tied else None
            try:
                popen = subprocess.Popen(
                    list(argv),
                    cwd=self.cwd,
                    env=dict(env) if env is not None else None,
                    stdin=subprocess.DEVNULL,
                    stdout=handle,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    preexec_fn=(
                        parent_death_signal(signal.SIGTERM, reset_signals=True) if tied else None
                    ),
                )
                child = Child(name, popen, log, role)
                with self._lock:
                    self._running.append(child)
                    self.started.append(child)
            finally:
                if previous is not None:
                    signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        return child

    def run_all(self, commands: Mapping[str, Sequence[str]], timeout: float) -> None:
        """Run one-shot commands in parallel; CommandFailed names the first that fails."""
        children = [self.spawn(name, argv) for name, argv in commands.items()]
        deadline = time.monotonic() + timeout
        try:
            for child in children:
                try:
                    child.popen.wait(max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired as exc:
                    message = f"`{child.name}` did not finish within {timeout:.0f} s"
                    raise CommandFailed(message, child, timed_out=True) from exc
            for child in children:
                if child.returncode != 0:
                    message = (
                        f"`{child.name}` failed with exit code {child.returncode}:\n{child.tail(8)}"
                    )
                    raise CommandFailed(message, child, timed_out=False)
        finally:
            self.stop(children)

    def exited(self) -> Child | None:
        """A running child that has ended (none should before it is stopped)."""
        return next((c for c in self.running if not c.alive()), None)

    def check_alive(self) -> None:
        """Raise ChildExited for a running child that has ended."""
        child = self.exited()
        if child is not None:
            raise ChildExited(child)

    def stop_all(self, grace: float | None = None) -> int:
        """Stop every running child; how many were still running."""
        return self.stop(self.running, grace)

    def stop(self, children: Sequence[Child], grace: float | None = None) -> int:
        """Stop these children together (`stop_together`); each is forgotten once it and its
        group are gone, so a stop cut short by an interruption can simply be run again."""
        grace = self.grace if grace is None else grace
        count = stop_together(children, grace, leaders_only=self.leaders_only)
        with self._lock:
            for child in children:
                if child in self._running and not child.group_alive():
                    self._running.remove(child)
        return count

    def logs(self, lines: int = TAIL_LINES) -> str:
        """The last lines of every child's log, for a failure report."""
        return "\n".join(
            f"---- {c.name} (pid {c.pid}, rc {c.returncode})\n{c.tail(lines)}" for c in self.started
        )
