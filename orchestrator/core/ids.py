"""Deterministic ids: every id the orchestrator creates derives from its cause.

A re-run of the same input (after a crash, a redelivery, or even after retention pruned the
inbox) therefore writes the same ids, so both our unique constraints and downstream consumers
can deduplicate.
"""

from __future__ import annotations

import hashlib
import uuid

NAMESPACE = uuid.UUID("6f1f4c8e-6b2a-5d1e-9a3c-0c6f7e8d9a10")


def derive(cause: str, *effect: str) -> str:
    """A stable UUID (as text) for the effect `effect` of the message `cause`."""
    return str(uuid.uuid5(NAMESPACE, "\x1f".join((cause, *effect))))


def content_id(
    topic: str,
    key: bytes | None,
    value: bytes | None,
    headers: tuple[tuple[str, bytes | None], ...] | None = None,
) -> str:
    """The id of a message that carries none: a hash of where it came from and what it holds.

    Every part is length-prefixed and a missing key or value hashes differently from an empty
    one; `headers`, when given, count too (same bytes with other headers: another message).
    """
    digest = hashlib.sha256()

    def part(data: bytes | None) -> None:
        if data is None:
            digest.update(b"\xff" * 8)
            return
        digest.update(len(data).to_bytes(8, "big"))
        digest.update(data)

    for item in (topic.encode(), key, value):
        part(item)
    for name, header in headers or ():
        part(name.encode())
        part(header)
    return "sha256:" + digest.hexdigest()
