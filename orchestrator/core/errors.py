"""The project's error tree.

One root (`OrchestratorError`); driver errors are translated into `TransientError` at the
adapter boundary (retried), and bad input raises `InvalidInput` with a dead-letter category
(dead-lettered, never retried).
"""

from __future__ import annotations

from enum import StrEnum


class OrchestratorError(Exception):
    """Root of every error this project raises on purpose."""


class Category(StrEnum):
    """Dead-letter categories: why an input could not be processed."""

    NOT_UTF8 = "not_utf8"
    NOT_JSON = "not_json"
    NOT_OBJECT = "not_object"
    UNKNOWN_SHAPE = "unknown_shape"
    MISSING_FIELD = "missing_field"
    WRONG_TYPE = "wrong_type"
    MISSING_COMMAND_TYPE = "missing_command_type"
    UNKNOWN_COMMAND = "unknown_command"
    TOO_LARGE = "too_large"
    BAD_HEADERS = "bad_headers"
    NUL_CHARACTER = "nul_character"
    TOO_DEEP = "too_deep"
    PROCESSING_FAILED = "processing_failed"
    CAPABILITY_DISPATCH_FAILED = "capability_dispatch_failed"


DEAD_LETTER_CATEGORIES = tuple(c.value for c in Category)


class InvalidInput(OrchestratorError):
    """An input message that can never be processed; it becomes a dead letter."""

    def __init__(
        self,
        category: Category,
        reason: str,
        *,
        session_id: str | None = None,
        message_id: str | None = None,
    ) -> None:
        super().__init__(f"{category.value}: {reason}")
        self.category = category
        self.reason = reason
        # Known when the envelope parsed but its content is bad (e.g. an unknown command), so
        # the dead letter can be found from its session.
        self.session_id = session_id
        self.message_id = message_id


class TransientError(OrchestratorError):
    """A dependency (database, Redis, Kafka) is unavailable; retrying later may succeed."""


class ConfigurationError(OrchestratorError):
    """A setting is invalid; the message names the variable."""


class StaleVersion(OrchestratorError):
    """An optimistic-lock update found the row at another version than the one read."""
