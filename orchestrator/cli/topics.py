"""`orchestrator topics create`: every topic the orchestrator reads or writes."""

from __future__ import annotations

import typer

from orchestrator.cli.app import topics_app
from orchestrator.cli.errors import cli_errors
from orchestrator.cli.wiring import command_settings
from orchestrator.core.catalogue import task_topics
from orchestrator.settings import Settings


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
    """Create every topic the orchestrator reads or writes (idempotent)."""
    settings = command_settings()
    from orchestrator.adapters.kafka.topics import create_topics

    with cli_errors("topics create"):
        created = create_topics(settings, all_topics(settings), settings.topic_partitions)
    typer.echo(f"created {len(created)} topic(s): {', '.join(created) or '-'}")
