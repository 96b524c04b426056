"""How the demo stops early: an error it explains in one line, or an interruption."""

from __future__ import annotations


class DemoError(Exception):
    """The demo cannot go on: one clear line, an exit code, and whether the logs help."""

    def __init__(self, message: str, code: int = 1, *, show_logs: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.show_logs = show_logs


class DemoInterrupted(BaseException):
    """SIGINT or SIGTERM reached the demo: stop everything and exit 128 + signal.

    A BaseException, so that no `except Exception` on the way swallows it.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum
