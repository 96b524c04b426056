"""Structured JSON logs (structlog) with the source design's event names.

Every line carries `correlation_id` and `session_id` (null when unknown) and the W3C
`traceparent` when one is bound; values that look like secrets are redacted before rendering.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from typing import Any

import orjson
import structlog

_SECRET_KEYS = re.compile(r"pass(word)?|secret|token|auth|credential|api[_-]?key", re.I)
_URL_CREDENTIALS = re.compile(
    r"(?P<scheme>[a-z][a-z0-9+.-]{0,31}://)(?P<user>[^:/@\s]{0,256}):[^@/\s]{1,256}@", re.I
)
REDACTED = "***"
_SCHEME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+.-")


def redact_text(text: str) -> str:
    """Mask the password of every URL in `text` (`redis://:pw@host` -> `redis://:***@host`).

    Linear in the text: the pattern only runs on a bounded window around each `://` (a 150 KB
    id bound to every line once made each line cost seconds)."""
    if "://" not in text:
        return text
    out: list[str] = []
    done = 0
    at = text.find("://")
    while at != -1:
        begin = at
        while begin > max(done, at - 32) and text[begin - 1] in _SCHEME_CHARS:
            begin -= 1
        stop = min(len(text), at + 520)
        m = next(
            (m for b in range(begin, at) if (m := _URL_CREDENTIALS.match(text, b, stop))), None
        )
        if m is not None:
            out.append(text[done : m.start()])
            out.append(f"{m['scheme']}{m['user']}:{REDACTED}@")
            done = m.end()
        at = text.find("://", max(at + 3, done))
    out.append(text[done:])
    return "".join(out)


def _redact(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key, value in list(event.items()):
        if _SECRET_KEYS.search(key) and key not in {"traceparent"}:
            event[key] = REDACTED
        elif isinstance(value, str):
            event[key] = redact_text(value)
    return event


def _always_ids(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    event.setdefault("correlation_id", None)
    event.setdefault("session_id", None)
    return event


def _dumps(obj: Any, **_: Any) -> str:
    return orjson.dumps(obj, default=str).decode()


def configure_logging(level: str = "INFO", stream: Any = None) -> None:
    """Configure structlog, and render the stdlib's records (Celery, kombu, alembic) as the same
    JSON lines, once per process."""
    lvl = logging.getLevelName(level.upper())
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _always_ids,
    ]
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                _redact,
                structlog.processors.JSONRenderer(serializer=_dumps),
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(lvl)
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.format_exc_info,
            _redact,
            structlog.processors.JSONRenderer(serializer=_dumps),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(lvl),
        logger_factory=structlog.WriteLoggerFactory(file=stream or sys.stderr),
        cache_logger_on_first_use=False,
    )


def get_logger(name: str = "orchestrator") -> Any:
    return structlog.get_logger(name)


@contextmanager
def bound(**context: Any) -> Iterator[None]:
    """Bind correlation_id / session_id / traceparent for the lines logged inside."""
    tokens = structlog.contextvars.bind_contextvars(**context)
    try:
        yield
    finally:
        structlog.contextvars.reset_contextvars(**tokens)
