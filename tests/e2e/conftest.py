"""Fixtures for end-to-end tests: a `stack` of real processes, stopped (and its logs shown on
failure) whatever happens."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.harness import Stack


@pytest.fixture
def stack(
    tmp_path: Path,
    kafka_bootstrap: str,
    database_url: str,
    redis_url: str,
    request: pytest.FixtureRequest,
) -> Iterator[Stack]:
    s = Stack(tmp_path, kafka_bootstrap, database_url, redis_url)
    s.setup()
    try:
        yield s
    finally:
        s.close()
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            print(s.logs())


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> object:
    rep = yield
    setattr(item, f"rep_{rep.when}", rep)
    return rep
