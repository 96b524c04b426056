"""The Celery queue names, in one place: each queue's workers scale on their own."""

from __future__ import annotations

DOMAIN_QUEUE = "orchestrator.domain"
CAPABILITY_QUEUE = "orchestrator.capability"
RELAY_QUEUE = "orchestrator.relay"
WORK_QUEUES = (DOMAIN_QUEUE, CAPABILITY_QUEUE)
ALL_QUEUES = (*WORK_QUEUES, RELAY_QUEUE)


def queue_list(queues: tuple[str, ...] = ALL_QUEUES) -> str:
    """The `-Q` argument of `celery worker` for these queues."""
    return ",".join(queues)
