"""Low-level primitives for the child processes the dev tools start.

Shared by the embedded servers and the process supervisor, so that stopping a child, tying its
life to its owner and checking that it really serves its port are written once. Nothing here
imports a third-party package at import time (psutil only inside `listens_on`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

__all__ = [
    "DEFAULT_STOP_GRACE",
    "LOG_TAIL_CHARS",
    "LOOPBACK",
    "free_port",
    "listens_on",
    "log_tail",
    "log_tail_lines",
    "parent_death_signal",
    "stop_process",
]

LOOPBACK = "127.0.0.1"
DEFAULT_STOP_GRACE = 10.0
LOG_TAIL_CHARS = 4000
_PR_SET_PDEATHSIG = 1


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now.

    Another process may take it before the caller binds it: callers that start a server on it
    retry on a new port when their process dies at start.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def stop_process(
    proc: subprocess.Popen[bytes],
    *,
    first_signal: int = signal.SIGTERM,
    grace: float = DEFAULT_STOP_GRACE,
) -> None:
    """Stop exactly this child: `first_signal`, then SIGKILL after `grace`; always reaped."""
    if proc.poll() is None:
        # Popen.send_signal does nothing once the child has been reaped, so a recycled PID is
        # never signalled.
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(first_signal)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait()
    else:
        proc.wait()


def parent_death_signal(sig: int, *, reset_signals: bool = False) -> Callable[[], None] | None:
    """A `preexec_fn` asking Linux to send `sig` to the child when the thread that started it
    ends (even by SIGKILL), so a crashed owner leaves no child behind; None elsewhere unless
    `reset_signals` is set.

    `reset_signals` also gives the child default SIGINT/SIGTERM handling with both unblocked,
    for owners that ignore or block them while they supervise.

    The kernel ties this to the starting *thread*: start children from a long-lived thread (the
    main thread), not from a short-lived worker thread.
    """
    prctl: Callable[..., int] | None = None
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            prctl = ctypes.CDLL(None, use_errno=True).prctl
    if prctl is None and not reset_signals:
        return None
    parent = os.getpid()

    def set_parent_death_signal() -> None:  # runs in the child, after the switch of account
        if reset_signals:
            for default in (signal.SIGINT, signal.SIGTERM):
                signal.signal(default, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
        if prctl is not None:
            prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)
            if os.getppid() != parent:  # the owner already died between fork and prctl
                os._exit(1)

    return set_parent_death_signal


def listens_on(pid: int, port: int) -> bool:
    """True when process `pid` itself has a listening TCP socket on `port`.

    Guards against mistaking another server that already owned the port for ours.
    """
    import psutil

    try:
        connections = psutil.Process(pid).net_connections(kind="tcp")
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False
    return any(
        conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port
        for conn in connections
    )


def log_tail(path: Path, chars: int = LOG_TAIL_CHARS) -> str:
    """The last `chars` bytes of a log file, decoded; empty when it cannot be read."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - chars))
            return handle.read().decode("utf-8", "replace")
    except OSError:
        return ""


def log_tail_lines(path: Path, lines: int) -> str:
    """The last `lines` lines of a log file; empty when it cannot be read."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])
