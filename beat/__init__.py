"""Celery beat's schedule: relay safety net, inbox re-drive, task timeouts, retention.

Every entry is idempotent and expires rather than piling up, so two beats at once are harmless.
"""

from __future__ import annotations

from typing import Any

from orchestrator.adapters.celery.app import (
    PRUNE_TASK,
    REDRIVE_TASK,
    RELAY_TICK_TASK,
    TIMEOUT_TASK,
)
from orchestrator.settings import Settings


def schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    def every(task: str, seconds: float) -> dict[str, Any]:
        return {"task": task, "schedule": seconds, "options": {"expires": max(seconds * 2, 2.0)}}

    return {
        "relay": every(RELAY_TICK_TASK, settings.relay_interval_s),
        "redrive": every(REDRIVE_TASK, settings.redrive_interval_s),
        "expire-tasks": every(TIMEOUT_TASK, settings.timeout_sweep_interval_s),
        "prune": every(PRUNE_TASK, settings.retention_interval_s),
    }
