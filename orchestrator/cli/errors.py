"""The CLI's one error -> exit-code mapping.

A refused action or an unreachable service prints one line on stderr naming the command and
the service (driver messages span several lines; credentials are masked) and exits 1; a bad
argument exits 2. A traceback is never what an operator sees for either.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn

from orchestrator.core.errors import OrchestratorError
from orchestrator.observability.logs import redact_text
from orchestrator.startup import fail


def one_line(message: object) -> str:
    return redact_text(" ".join(str(message).split()))


def usage_error(message: str) -> NoReturn:
    fail(message, 2)


# PostgreSQL's SQLSTATE for a missing table (psycopg2.errors.UndefinedTable).
UNDEFINED_TABLE = "42P01"
_NO_DATABASE = re.compile(r'database "(?P<name>[^"]+)" does not exist')
_NO_RELATION = re.compile(r'relation "(?P<name>[^"]+)" does not exist')


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """The error, the driver's error it wraps (`orig`) and its causes, each once."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        current = todo.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        orig = getattr(current, "orig", None)
        todo += [orig if isinstance(orig, BaseException) else None]
        todo += [current.__cause__, current.__context__]


def fresh_setup_hint(exc: BaseException) -> str | None:
    """What to run when the error means the set-up was not done: the schema or the whole
    database is missing (`orchestrator db upgrade` creates both). None otherwise."""
    for cause in _causes(exc):
        text = str(cause)
        found = _NO_RELATION.search(text)
        if found or getattr(cause, "pgcode", None) == UNDEFINED_TABLE:
            table = f" (table {found['name']} does not exist)" if found else ""
            return f"the database schema is missing{table}: run `orchestrator db upgrade`"
        missing = _NO_DATABASE.search(text)
        if missing:
            return (
                f"database {missing['name']} does not exist: run `orchestrator db upgrade`,"
                " which creates it and its schema"
            )
    return None


@contextmanager
def cli_errors(what: str) -> Iterator[None]:
    """Refusals (`OrchestratorError`, `OperationRefused` among them) and driver errors -> one
    line `what: ...` and exit 1. The drivers are imported here, not at start-up, so that
    `--help` and argument errors stay fast."""
    from confluent_kafka import KafkaException
    from redis.exceptions import RedisError
    from sqlalchemy.exc import SQLAlchemyError

    try:
        yield
    except SQLAlchemyError as exc:
        hint = fresh_setup_hint(exc)
        if hint is not None:
            fail(f"{what}: {hint}", 1)
        fail(f"{what}: database error: {one_line(getattr(exc, 'orig', None) or exc)}", 1)
    except RedisError as exc:
        fail(f"{what}: redis error: {one_line(exc)}", 1)
    except KafkaException as exc:
        err = exc.args[0] if exc.args else exc
        fail(f"{what}: kafka error: {one_line(getattr(err, 'str', lambda: err)())}", 1)
    except OrchestratorError as exc:  # TransientError: "database unavailable: ..." etc.
        fail(f"{what}: {fresh_setup_hint(exc) or one_line(exc)}", 1)
