"""The one place where driver errors become project errors.

Connection-level trouble is `TransientError` (the caller retries or gives the work back), so the
layers above never see psycopg2 or SQLAlchemy exceptions; anything else is a bug and propagates.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import InterfaceError as SAInterfaceError

from orchestrator.core.errors import TransientError


@contextmanager
def translate_errors() -> Iterator[None]:
    """Connection-level driver errors become TransientError; the rest propagate as bugs."""
    try:
        yield
    except (OperationalError, SAInterfaceError) as exc:
        raise TransientError(f"database unavailable: {exc.orig or exc}") from exc
    except DBAPIError as exc:
        if exc.connection_invalidated:
            raise TransientError(f"database connection lost: {exc.orig or exc}") from exc
        raise
