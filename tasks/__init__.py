"""Celery entry points (`celery -A tasks worker|beat|flower`). Thin: decode, call, return.

The app is created at import (Celery needs a module-level app) but connects to nothing until
used; each worker process builds its own `Container` lazily after the fork.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

# Prefork children report metrics through files; the directory must be known before
# prometheus_client is first imported anywhere in this process.
if os.environ.get("ORCHESTRATOR_METRICS_PORT", "0") not in ("", "0"):
    os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="orch-metrics-"))

from celery import signals

import beat
from orchestrator.adapters.celery.app import (
    DRAIN_BATCH_TASK,
    DRAIN_TASK,
    NOOP_TASK,
    PRUNE_TASK,
    REDRIVE_TASK,
    RELAY_TASK,
    RELAY_TICK_TASK,
    TIMEOUT_TASK,
    make_celery,
)
from orchestrator.adapters.redis.state import REDIS_ERRORS
from orchestrator.bootstrap import Container
from orchestrator.core.errors import TransientError
from orchestrator.observability.logs import bound, configure_logging
from orchestrator.startup import settings_or_exit

settings = settings_or_exit()
app = make_celery(settings)
app.conf.beat_schedule = beat.schedule(settings)

_container: Container | None = None
_container_pid: int | None = None
# The ports raise TransientError; a broker call (kombu) may still fail with redis-py's own.
RETRYABLE = (TransientError, *REDIS_ERRORS)


def container() -> Container:
    """This process's composition root (rebuilt in a forked child: no shared sockets)."""
    global _container, _container_pid
    if _container is None or _container_pid != os.getpid():
        _container, _container_pid = Container(settings, app), os.getpid()
    return _container


@signals.setup_logging.connect
def _setup_logging(**_: Any) -> None:
    configure_logging(settings.log_level)


@signals.worker_init.connect
def _serve_metrics(**_: Any) -> None:
    """The worker's parent serves the children's aggregated metrics (if a port is set)."""
    if settings.metrics_port:
        from orchestrator.observability.metrics import serve

        serve(settings.metrics_port, container().backlog)


@signals.worker_process_shutdown.connect
def _close(pid: int | None = None, **_: Any) -> None:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid or os.getpid())
    if _container is not None and _container_pid == os.getpid():
        _container.close()


@app.task(
    bind=True,
    name=DRAIN_TASK,
    autoretry_for=RETRYABLE,
    retry_backoff=1,
    retry_backoff_max=int(settings.celery_retry_max_s),
    retry_jitter=True,
    max_retries=20,
)
def drain_session(self: Any, session_id: str) -> int:
    """Process the session's unprocessed inbox rows in order (a cheap no-op when none)."""
    with bound(session_id=session_id, traceparent=getattr(self.request, "traceparent", None)):
        return len(container().session_worker.drain(session_id).outcomes)


@app.task(
    name=DRAIN_BATCH_TASK,
    autoretry_for=RETRYABLE,
    retry_backoff=1,
    retry_backoff_max=int(settings.celery_retry_max_s),
    retry_jitter=True,
    max_retries=20,
)
def drain(queue: str) -> int:
    """A batched drain asked for on `queue`: every session with pending rows it can hold."""
    c = container()
    c.state.start_drain(queue)
    return len(c.batch_drainer(queue).run().outcomes)


@app.task(
    name=RELAY_TASK,
    autoretry_for=RETRYABLE,
    retry_backoff=1,
    retry_backoff_max=int(settings.celery_retry_max_s),
    retry_jitter=True,
    max_retries=5,
)
def relay() -> int:
    """A coalesced relay run asked for by a worker that just committed outbox rows."""
    return container().relay_runs.run(coalesced=True).sent


@app.task(name=RELAY_TICK_TASK)
def relay_tick() -> int:
    """Beat's safety net: relay whatever is due, independent of the request flags."""
    return container().relay_runs.run(coalesced=False).sent


@app.task(name=REDRIVE_TASK)
def redrive() -> int:
    return container().maintenance.redrive()


@app.task(name=TIMEOUT_TASK)
def expire_tasks() -> int:
    expired = container().maintenance.expire_tasks()
    if expired:
        container().request_relay()
    return expired


@app.task(name=PRUNE_TASK)
def prune() -> list[int]:
    return list(container().maintenance.prune())


@app.task(name=NOOP_TASK)
def noop() -> None:
    """An empty task, for measuring Celery's own round trip (bench)."""
