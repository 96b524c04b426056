"""Fixtures for the integration tests: a real PostgreSQL database per test (`database_url`), the
store on it, raw SQL helpers and wire-contract message builders (`tests/support/db.py`)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine

from orchestrator.adapters.postgres.engine import make_engine
from orchestrator.adapters.postgres.store import SqlStore
from tests.support.db import Db, Wire


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    eng = make_engine(database_url)
    try:
        yield eng
    finally:
        eng.dispose()


@pytest.fixture
def store(engine: Engine) -> SqlStore:
    return SqlStore(engine)


@pytest.fixture
def db(engine: Engine) -> Db:
    return Db(engine)


@pytest.fixture
def wire() -> type[Wire]:
    return Wire
