"""`orchestrator topics create`: every topic the orchestrator reads or writes."""

from __future__ import annotations

import typer

from orchestrator.cli.app import topics_app
from orchestrator.cli.errors import cli_errors
from orchestrator.cli.wiring import command_settings
from orchestrator.core.catalogue import task_topics
from orchestrator.settings import Settings
from orchestrator.startup import fail


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


@topics_app.command("create")
def topics_create() -> None:
    """Create every topic the orchestrator reads or writes (idempotent).

    A broker that does not answer is asked again, quietly, for ORCHESTRATOR_KAFKA_CONNECT_TIMEOUT_S;
    then one line names the bootstrap servers (exit 1). Ctrl-C stops it at once (exit 130).
    """
    settings = command_settings(quiet=True)
    from orchestrator.adapters.kafka.topics import create_topics

    try:
        with cli_errors("topics create"):
            created = create_topics(
                settings,
                all_topics(settings),
                settings.topic_partitions,
                connect_timeout=settings.kafka_connect_timeout_s,
            )
    except KeyboardInterrupt:
        fail("topics create: interrupted", 130)
    typer.echo(f"created {len(created)} topic(s): {', '.join(created) or '-'}")
