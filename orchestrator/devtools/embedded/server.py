"""The life cycle every embedded server shares.

A private temporary directory, a free port on 127.0.0.1, one child process in its own session,
a readiness probe polled against a deadline, and a stop that signals only the PID started here.
A server that dies at start (its free port was taken in the meantime) is retried on another.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, Self

from orchestrator.devtools.embedded.errors import EmbeddedServerError
from orchestrator.devtools.embedded.workdirs import claim_workdir, remove_abandoned_workdirs
from orchestrator.devtools.processes import (
    LOOPBACK,
    free_port,
    listens_on,
    log_tail,
    parent_death_signal,
    stop_process,
)

DEFAULT_START_TIMEOUT = 30.0
DEFAULT_STOP_TIMEOUT = 10.0
# A server that dies at start is retried on another port this many times in total.
PORT_ATTEMPTS = 5
POLL_INTERVAL = 0.01


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """A minimal environment, so variables such as STORAGE_ENGINE, PGDATA or
    OTEL_EXPORTER_OTLP_ENDPOINT in the caller's environment cannot reconfigure a server."""
    env = {"PATH": os.environ.get("PATH", os.defpath), "LC_ALL": "C", "LANG": "C", "TZ": "UTC"}
    if extra:
        env.update(extra)
    return env


class StartupFailed(Exception):
    """The server process exited before it was ready (e.g. its port was taken)."""


class EmbeddedServer:
    """Common life cycle: a private temporary directory, a free port, one child process, a
    readiness probe with a deadline, and a stop that signals only the PID started here.

    Subclasses fill in the hooks: the command line, the protocol probe, the URL.
    """

    kind: ClassVar[str] = "server"
    # Sent by the kernel to the server if the thread that started it ends without stopping it
    # (crash, SIGKILL): a fast, clean shutdown for each kind of server.
    parent_death_signal: ClassVar[int] = signal.SIGTERM

    def __init__(
        self,
        *,
        start_timeout: float = DEFAULT_START_TIMEOUT,
        stop_timeout: float = DEFAULT_STOP_TIMEOUT,
    ) -> None:
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._workdir: Path | None = None
        self._url: str | None = None
        self._port: int | None = None
        self.startup_seconds: float | None = None

    # -- public API -------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The address clients use; available after `start()`."""
        if self._url is None:
            raise EmbeddedServerError(f"embedded {self.kind} is not started")
        return self._url

    @property
    def port(self) -> int:
        if self._port is None:
            raise EmbeddedServerError(f"embedded {self.kind} is not started")
        return self._port

    @property
    def pid(self) -> int | None:
        """PID of the server process started here, while it runs."""
        if self._proc is None or self._proc.poll() is not None:
            return None
        return self._proc.pid

    @property
    def pids(self) -> list[int]:
        """PIDs of the running processes started here (the server's own children excluded)."""
        pid = self.pid
        return [] if pid is None else [pid]

    @property
    def workdir(self) -> Path | None:
        return self._workdir

    @property
    def log_path(self) -> Path | None:
        return None if self._workdir is None else self._workdir / f"{self.kind}.log"

    def start(self) -> str:
        """Start the server (idempotent) and return its URL once it answers."""
        if self._url is not None:
            return self._url
        began = time.monotonic()
        try:
            self._workdir = self._make_workdir()
            self._prepare(self._workdir)
            self._url = self._start_on_free_port(self._workdir)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - began
        atexit.register(self.stop)
        return self._url

    def stop(self) -> None:
        """Stop the process started here (if any) and remove the temporary directory."""
        atexit.unregister(self.stop)
        proc, self._proc = self._proc, None
        if proc is not None:
            self._shutdown(proc)
        self._url = None
        self._port = None
        workdir, self._workdir = self._workdir, None
        if workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- hooks ------------------------------------------------------------------------------

    def _workdir_base(self) -> Path:
        """The directory in which the private temporary directory is created."""
        return Path(tempfile.gettempdir())

    def _adopt_workdir(self, workdir: Path) -> None:
        """Hand the new temporary directory to the account the server runs as."""

    def _prepare(self, workdir: Path) -> None:
        """One-time work before the first launch (e.g. initdb)."""

    def _command(self, port: int, workdir: Path) -> list[str]:
        raise NotImplementedError

    def _popen_kwargs(self, workdir: Path) -> dict[str, Any]:
        return {"env": clean_env(), "cwd": workdir}

    def _probe(self, port: int, deadline: float) -> bool:
        """True once the server answers its protocol on `port`; never raises."""
        raise NotImplementedError

    def _on_ready(self, port: int) -> str:
        """Finish set-up once the server answers and return its URL."""
        raise NotImplementedError

    def _shutdown(self, proc: subprocess.Popen[bytes]) -> None:
        stop_process(proc, grace=self.stop_timeout)

    # -- internals --------------------------------------------------------------------------

    def _make_workdir(self) -> Path:
        base = self._workdir_base()
        prefix = f"orchestrator-{self.kind}-"
        remove_abandoned_workdirs(base, prefix)
        workdir = Path(tempfile.mkdtemp(prefix=prefix, dir=base))
        claim_workdir(workdir)
        self._adopt_workdir(workdir)
        return workdir

    def _start_on_free_port(self, workdir: Path) -> str:
        deadline = time.monotonic() + self.start_timeout
        failures: list[str] = []
        for _attempt in range(PORT_ATTEMPTS):
            port = free_port()
            try:
                self._launch(port, workdir, deadline)
            except StartupFailed as exc:
                failures.append(str(exc))
                continue
            self._port = port
            return self._on_ready(port)
        raise EmbeddedServerError(
            f"embedded {self.kind} died at start {PORT_ATTEMPTS} times:\n" + "\n".join(failures)
        )

    def _launch(self, port: int, workdir: Path, deadline: float) -> None:
        log_path = workdir / f"{self.kind}.log"
        with log_path.open("ab") as log:
            proc = subprocess.Popen(
                self._command(port, workdir),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Own session: a Ctrl-C in the terminal reaches the owner, which then stops the
                # servers in order, instead of killing them under running workers.
                start_new_session=True,
                preexec_fn=parent_death_signal(self.parent_death_signal),
                **self._popen_kwargs(workdir),
            )
        self._proc = proc
        while True:
            if proc.poll() is not None:
                self._proc = None
                raise StartupFailed(
                    f"port {port}: exit status {proc.returncode}\n{log_tail(log_path)}"
                )
            # Our own process must hold the listener before the protocol is probed: a port taken
            # by another server in the meantime is then never mistaken for ours.
            if listens_on(proc.pid, port) and self._probe(port, deadline):
                return
            if time.monotonic() > deadline:
                raise EmbeddedServerError(
                    f"embedded {self.kind} did not answer on {LOOPBACK}:{port} within "
                    f"{self.start_timeout:.0f}s\n{log_tail(log_path)}"
                )
            time.sleep(POLL_INTERVAL)
