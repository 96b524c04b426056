"""The one error the embedded servers raise on purpose."""

from __future__ import annotations


class EmbeddedServerError(RuntimeError):
    """An embedded server could not be located, started or stopped."""
