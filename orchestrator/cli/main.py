"""`orchestrator`: run the processes (ingest, relay, simulate, demo) and operate the system.

Every command reads its configuration from the environment only, works from any directory, and
turns an unreachable service or a bad argument into one clear line and a non-zero exit code.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import typer

from orchestrator.core.catalogue import task_topics
from orchestrator.observability.logs import configure_logging, redact_text
from orchestrator.settings import Settings
from orchestrator.startup import fail, settings_or_exit

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help="Genesis event orchestrator: ingest, relay, operate.",
)
db_app = typer.Typer(no_args_is_help=True, help="Database schema.")
topics_app = typer.Typer(no_args_is_help=True, help="Kafka topics.")
app.add_typer(db_app, name="db")
app.add_typer(topics_app, name="topics")


def _settings() -> Settings:
    settings = settings_or_exit()
    configure_logging(settings.log_level)
    return settings


@contextmanager
def service_errors(what: str) -> Iterator[None]:
    """Unreachable services and driver errors -> one line naming the service, exit 1."""
    from confluent_kafka import KafkaException
    from redis.exceptions import RedisError
    from sqlalchemy.exc import SQLAlchemyError

    from orchestrator.core.errors import OrchestratorError

    try:
        yield
    except SQLAlchemyError as exc:
        fail(f"{what}: database error: {redact_text(str(getattr(exc, 'orig', exc)))}".strip(), 1)
    except RedisError as exc:
        fail(f"{what}: redis error: {redact_text(str(exc))}", 1)
    except KafkaException as exc:
        fail(f"{what}: kafka error: {exc}", 1)
    except OrchestratorError as exc:
        fail(f"{what}: {redact_text(str(exc))}", 1)


def stop_on_signals() -> threading.Event:
    """SIGTERM / SIGINT set the returned event: the loop finishes its batch and exits."""
    stop = threading.Event()

    def handler(signum: int, _frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return stop


def all_topics(settings: Settings) -> list[str]:
    tasks = task_topics(settings.task_topic_prefix)
    return sorted(
        {
            *settings.topics_to_consume(),
            settings.domain_topic,
            settings.dlq_topic,
            *tasks,
            *settings.produce_topics,
        }
    )


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply the database migrations (idempotent)."""
    settings = _settings()
    from orchestrator.adapters.postgres.engine import upgrade

    with service_errors("db upgrade"):
        upgrade(settings.database_url)
    typer.echo("database schema is up to date")


@topics_app.command("create")
def topics_create() -> None:
    """Create every topic the orchestrator reads or writes (idempotent)."""
    settings = _settings()
    from orchestrator.adapters.kafka.clients import create_topics

    with service_errors("topics create"):
        created = create_topics(settings, all_topics(settings), settings.topic_partitions)
    typer.echo(f"created {len(created)} topic(s): {', '.join(created) or '-'}")


def _container(settings: Settings) -> Any:
    from orchestrator.adapters.celery.app import make_celery
    from orchestrator.bootstrap import Container

    return Container(settings, make_celery(settings))


@app.command()
def ingest() -> None:
    """Consume the configured topics into the inbox and trigger the Celery workers."""
    settings = _settings()
    from orchestrator.adapters.kafka.clients import make_consumer
    from orchestrator.core.queues import WORK_QUEUES

    stop = stop_on_signals()
    c = _container(settings)
    _serve_metrics(settings, c.engine)
    with service_errors("ingest"):
        ingester = c.ingester()
        ingester.run(
            make_consumer(settings),
            settings.topics_to_consume(),
            stop,
            batch_size=settings.ingest_batch_size,
            poll_timeout_s=settings.ingest_poll_timeout_s,
            max_queue_length=settings.ingest_max_queue_length,
            queue_length=lambda: c.state.queue_length(WORK_QUEUES),
        )
    c.close()


@app.command()
def relay(once: bool = typer.Option(False, "--once", help="One pass, then exit.")) -> None:
    """Publish due outbox rows to Kafka (normally beat and the workers do this)."""
    settings = _settings()
    c = _container(settings)
    with service_errors("relay"):
        if once:
            r = c.relay.run_once()
            typer.echo(
                f"claimed {r.claimed}, sent {r.sent}, retried {r.retried}, failed {r.failed}"
            )
        else:
            stop = stop_on_signals()
            while not stop.is_set():
                if c.relay.run_once().claimed == 0:
                    stop.wait(settings.relay_interval_s)
    c.close()


@app.command()
def simulate(
    scores: str = typer.Option("8.0", help="Review scores in order, per correlation: 6,8"),
    latency_ms: float = typer.Option(0.0, help="Delay before each answer."),
    silent: list[str] = typer.Option([], help="Request types never answered."),
    consistency_ok: bool = typer.Option(True, help="Consistency checks pass."),
    malformed_rate: float = typer.Option(0.0, help="Share of answers sent truncated."),
    group: str = typer.Option("genesis-capability-simulator", help="Consumer group."),
) -> None:
    """Answer capability tasks like the real services would (tests, demo, benchmark)."""
    settings = _settings()
    from orchestrator.devtools.simulator import SimulatorConfig, run_simulator

    try:
        score_list = [float(s) for s in scores.split(",") if s.strip()]
    except ValueError:
        fail(f"--scores must be numbers separated by commas, got {scores!r}")
    if not score_list:
        fail("--scores needs at least one number")
    config = SimulatorConfig(
        scores=score_list,
        consistency_ok=consistency_ok,
        latency_ms=latency_ms,
        silent_types=frozenset(silent),
        malformed_rate=malformed_rate,
    )
    with service_errors("simulate"):
        run_simulator(settings, config, stop_on_signals(), group=group)


def _serve_metrics(settings: Settings, engine: Any = None) -> None:
    if settings.metrics_port:
        from orchestrator.observability.metrics import serve

        serve(settings.metrics_port, engine)


def register(fn: Callable[..., Any], name: str | None = None) -> None:
    app.command(name=name)(fn)


def load_commands() -> None:
    """Register the operator, verify and demo commands (kept in their own modules)."""
    from orchestrator.cli import commands, demo_command, verify_command  # noqa: F401


def main() -> None:
    load_commands()
    app()
