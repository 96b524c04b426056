"""Embedded servers that can be killed and started again at the same address.

The embedded servers of `orchestrator.devtools.embedded` start on a free port; the fault
scenarios need to restart one at the *same* port (clients keep their configured address):
Redis killed and started empty, PostgreSQL stopped in "immediate" mode (SIGQUIT, what
`pg_ctl stop -m immediate` sends) and started on the same data directory, Tansu killed and
started with an empty memory.
Each process is signalled by the PID started here, never by name.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

from orchestrator.devtools.embedded import (
    DEFAULT_STOP_TIMEOUT,
    EmbeddedKafka,
    EmbeddedPostgres,
    EmbeddedRedis,
    EmbeddedServer,
    EmbeddedServerError,
)
from orchestrator.devtools.processes import stop_process


class _Restartable(EmbeddedServer):
    """Kill / start again on the port chosen at the first start."""

    restarts: int

    def _started_port(self) -> int:
        return self.port

    def _workdir_path(self) -> Path:
        if self.workdir is None:
            raise EmbeddedServerError(f"embedded {self.kind} is not started")
        return self.workdir

    def kill(self, sig: int = signal.SIGKILL, timeout: float = DEFAULT_STOP_TIMEOUT) -> None:
        """Signal the server process (SIGKILL by default) and reap it; the port is kept."""
        proc = self._proc
        if proc is None:
            return
        stop_process(proc, first_signal=sig, grace=timeout)
        self._proc = None

    def start_again(self) -> None:
        """Start a new server process on the same port and directory; wait until it answers."""
        if self._proc is not None and self._proc.poll() is None:
            raise EmbeddedServerError(f"embedded {self.kind} is still running")
        port, workdir = self._started_port(), self._workdir_path()
        self._before_restart(workdir)
        deadline = time.monotonic() + self.start_timeout
        while True:
            try:
                self._launch(port, workdir, deadline)
                break
            except Exception as exc:  # the port may linger a moment after the kill
                if time.monotonic() > deadline:
                    raise EmbeddedServerError(f"cannot restart {self.kind}: {exc}") from exc
                time.sleep(0.1)
        self.restarts = getattr(self, "restarts", 0) + 1

    def _before_restart(self, workdir: Path) -> None:
        """Hook: clean up what the killed process left."""


class RestartableRedis(_Restartable, EmbeddedRedis):
    """Redis without persistence: a restart starts with no data at all."""


class RestartableKafka(_Restartable, EmbeddedKafka):
    """Tansu with memory storage: a restart loses every topic and committed offset."""


class RestartablePostgres(_Restartable, EmbeddedPostgres):
    """PostgreSQL whose commits survive an immediate stop of the server.

    The embedded default runs with `synchronous_commit=off`: a commit is acknowledged before its
    WAL is written, so an immediate stop may lose the last acknowledged commits. A real server
    keeps `synchronous_commit=on`, and so does this one (fsync stays off: the operating system
    keeps what was written, since only the server process stops).
    """

    def _command(self, port: int, workdir: Path) -> list[str]:
        command = super()._command(port, workdir)
        return [
            "synchronous_commit=on" if part == "synchronous_commit=off" else part
            for part in command
        ]

    def stop_immediate(self) -> None:
        """`pg_ctl stop -m immediate`: SIGQUIT to the postmaster, no checkpoint."""
        self.kill(signal.SIGQUIT)

    def _before_restart(self, workdir: Path) -> None:
        # The postmaster's lock file names a dead PID: PostgreSQL removes it itself.
        pass
