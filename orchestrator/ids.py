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


def content_id(topic: str, key: bytes | None, value: bytes | None) -> str:
    """The id of a message that carries none: a hash of where it came from and what it holds."""
    digest = hashlib.sha256()
    for part in (topic.encode(), key or b"", value or b""):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return "sha256:" + digest.hexdigest()
