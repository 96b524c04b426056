"""The wall clock and its one text form.

Every timestamp the orchestrator writes into a message or a report is UTC with milliseconds and
a `Z` suffix, so the text sorts as the instants do and reads the same in every service.
"""

from __future__ import annotations

from datetime import UTC, datetime


def utc_now() -> datetime:
    """Now, as an aware UTC datetime (the default clock; tests pass a fixed one)."""
    return datetime.now(UTC)


def iso(ts: datetime) -> str:
    """`ts` as ISO 8601 in UTC with milliseconds, `2024-01-02T03:04:05.678Z`."""
    return ts.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
