"""Turning SIGINT and SIGTERM into one clean stop of the demo."""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any

from orchestrator.devtools.demo.errors import DemoInterrupted


class SignalGuard:
    """SIGINT / SIGTERM raise DemoInterrupted once; later ones are only remembered, so the
    clean-up they trigger is never itself interrupted."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._armed = False
        self._previous: dict[int, Any] = {}
        self._checked = False

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)
        self._armed = True

    def disarm(self) -> None:
        self._armed = False
        self._checked = True

    def restore(self) -> None:
        self._armed = False
        for sig, handler in self._previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        self._previous.clear()

    def check(self) -> None:
        """Raise again an interruption whose exception was swallowed (a signal landing in code
        that ignores exceptions, such as a fork callback). Called only while the run is going,
        where a delivered interruption would already have ended it."""
        if self.received is not None and not self._armed and not self._checked:
            self._checked = True
            raise DemoInterrupted(self.received)

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        if self.received is None:
            self.received = signum
        if self._armed:
            self._armed = False
            raise DemoInterrupted(signum)


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"
