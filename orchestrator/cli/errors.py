"""The CLI's one error -> exit-code mapping.

A refused action or an unreachable service prints one line on stderr naming the command and
the service (driver messages span several lines; credentials are masked) and exits 1; a bad
argument exits 2. A traceback is never what an operator sees for either.
"""

from __future__ import annotations

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
        fail(f"{what}: database error: {one_line(getattr(exc, 'orig', None) or exc)}", 1)
    except RedisError as exc:
        fail(f"{what}: redis error: {one_line(exc)}", 1)
    except KafkaException as exc:
        err = exc.args[0] if exc.args else exc
        fail(f"{what}: kafka error: {one_line(getattr(err, 'str', lambda: err)())}", 1)
    except OrchestratorError as exc:  # TransientError: "database unavailable: ..." etc.
        fail(f"{what}: {one_line(exc)}", 1)
