"""The long-running processes: `ingest`, `relay` and `simulate`.

Each stops on SIGTERM or SIGINT once its current batch is done.
"""

from __future__ import annotations

import signal
import threading
from typing import Any

import typer

from orchestrator.cli.app import app
from orchestrator.cli.errors import cli_errors, usage_error
from orchestrator.cli.wiring import command_settings, container
from orchestrator.settings import Settings


def stop_on_signals() -> threading.Event:
    """SIGTERM / SIGINT set the returned event: the loop finishes its batch and exits."""
    stop = threading.Event()

    def handler(signum: int, _frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return stop


def _serve_metrics(settings: Settings, backlog: Any = None) -> None:
    if settings.metrics_port:
        from orchestrator.observability.metrics import serve

        serve(settings.metrics_port, backlog)


@app.command()
def ingest() -> None:
    """Consume the configured topics into the inbox and trigger the Celery workers."""
    settings = command_settings()
    from orchestrator.core.queues import WORK_QUEUES

    stop = stop_on_signals()
    c = container(settings)
    _serve_metrics(settings, c.backlog)
    with cli_errors("ingest"):
        ingester = c.ingester()
        source = c.message_source()
        topics = settings.topics_to_consume()
        # A broker that never answers: one line naming it after the bound, exit 1.
        if not source.wait_until_reachable(settings.kafka_connect_timeout_s, stop, topics):
            source.consumer.close()
            c.close()
            return
        ingester.run(
            source,
            topics,
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
    settings = command_settings()
    c = container(settings)
    with cli_errors("relay"):
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
    """Answer capability tasks like the real services would (tests, demo, benchmark).

    With ORCHESTRATOR_METRICS_PORT set it serves the Prometheus endpoint (a liveness check).
    """
    settings = command_settings()
    from orchestrator.devtools.simulator import SimulatorConfig, run_simulator

    try:
        score_list = [float(s) for s in scores.split(",") if s.strip()]
    except ValueError:
        usage_error(f"--scores must be numbers separated by commas, got {scores!r}")
    if not score_list:
        usage_error("--scores needs at least one number")
    config = SimulatorConfig(
        scores=score_list,
        consistency_ok=consistency_ok,
        latency_ms=latency_ms,
        silent_types=frozenset(silent),
        malformed_rate=malformed_rate,
    )
    _serve_metrics(settings)
    with cli_errors("simulate"):
        run_simulator(settings, config, stop_on_signals(), group=group)
