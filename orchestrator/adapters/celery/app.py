"""The Celery application, configured from settings (JSON only, late acks, bounded retries)."""

from __future__ import annotations

import ssl

from celery import Celery
from kombu.entity import Exchange, Queue

from orchestrator.adapters.celery.transport import TRANSPORT
from orchestrator.core.queues import CAPABILITY_QUEUE, DOMAIN_QUEUE, RELAY_QUEUE
from orchestrator.settings import Settings

DRAIN_TASK = "orchestrator.drain_session"
DRAIN_BATCH_TASK = "orchestrator.drain"
RELAY_TASK = "orchestrator.relay"
RELAY_TICK_TASK = "orchestrator.relay_tick"
REDRIVE_TASK = "orchestrator.redrive"
TIMEOUT_TASK = "orchestrator.expire_tasks"
PRUNE_TASK = "orchestrator.prune"
NOOP_TASK = "orchestrator.noop"


def make_celery(settings: Settings) -> Celery:
    """Creating the app connects to nothing; the broker is reached on first use."""
    app = Celery("orchestrator", broker=settings.redis_url, set_as_current=False)
    if settings.redis_url.startswith("rediss://") and "ssl_cert_reqs" not in settings.redis_url:
        # kombu would otherwise fall back to CERT_NONE: verify the server like redis-py does.
        app.conf.broker_use_ssl = {"ssl_cert_reqs": ssl.CERT_REQUIRED}
        app.conf.redis_backend_use_ssl = {"ssl_cert_reqs": ssl.CERT_REQUIRED}
    transport = {"visibility_timeout": settings.celery_visibility_timeout_s}
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        event_serializer="json",
        task_ignore_result=True,
        task_store_errors_even_if_ignored=False,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_acks_on_failure_or_timeout=True,
        task_time_limit=settings.celery_task_time_limit_s,
        task_soft_time_limit=max(1, settings.celery_task_time_limit_s - 10),
        # kombu's Redis transport with a guard against a crash on connection loss.
        broker_transport=TRANSPORT,
        broker_transport_options=transport,
        result_backend_transport_options=transport,
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        worker_prefetch_multiplier=settings.celery_prefetch_multiplier,
        worker_hijack_root_logger=False,
        worker_soft_shutdown_timeout=10.0,
        worker_enable_soft_shutdown_on_idle=True,
        worker_cancel_long_running_tasks_on_connection_loss=False,
        task_default_queue=DOMAIN_QUEUE,
        # Each queue has its own exchange and routing key: a task sent to one queue must not be
        # copied into the others (a bare Queue(name) binds all of them to the default key).
        task_queues=tuple(_queue(q) for q in (DOMAIN_QUEUE, CAPABILITY_QUEUE, RELAY_QUEUE)),
        task_default_exchange=DOMAIN_QUEUE,
        task_default_routing_key=DOMAIN_QUEUE,
        task_create_missing_queues=False,
        task_routes={
            RELAY_TASK: {"queue": RELAY_QUEUE},
            RELAY_TICK_TASK: {"queue": RELAY_QUEUE},
            REDRIVE_TASK: {"queue": RELAY_QUEUE},
            TIMEOUT_TASK: {"queue": RELAY_QUEUE},
            PRUNE_TASK: {"queue": RELAY_QUEUE},
        },
        timezone="UTC",
        enable_utc=True,
    )
    return app


def _queue(name: str) -> Queue:
    return Queue(name, Exchange(name, type="direct"), routing_key=name)
