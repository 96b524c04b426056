"""The end-to-end `stack` fixture (real processes) for the bad-input tests, and its report hook
(the processes' logs are printed when a test fails)."""

from __future__ import annotations

from tests.e2e.conftest import pytest_runtest_makereport, stack

__all__ = ["pytest_runtest_makereport", "stack"]
