"""The Kafka topics a demo run uses: the usual names on embedded servers, names of its own
(suffixed with the run id) on configured ones, deleted again at the end."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from orchestrator.core.catalogue import task_topics


@dataclass(frozen=True)
class DemoTopics:
    domain: str
    capability: str
    dlq: str
    task_prefix: str

    @property
    def tasks(self) -> list[str]:
        return task_topics(self.task_prefix)

    @property
    def watched(self) -> list[str]:
        """Every topic the story is told from, in the order a message's effects appear."""
        return [self.domain, *self.tasks, self.capability, self.dlq]

    @classmethod
    def defaults(cls) -> DemoTopics:
        return cls(
            "genesis.domain.events", "genesis.capability.events", "genesis.orchestrator.dlq", ""
        )

    @classmethod
    def private(cls, run_id: str) -> DemoTopics:
        suffix = f"demo-{run_id}"
        return cls(
            f"genesis.domain.events.{suffix}",
            f"genesis.capability.events.{suffix}",
            f"genesis.orchestrator.dlq.{suffix}",
            f"{suffix}.",
        )


def delete_private(
    kafka_conf: Mapping[str, Any], topics: DemoTopics, groups: Sequence[str]
) -> None:
    """Best effort: remove a run's private topics and consumer groups from the configured
    Kafka (leftovers would be harmless, only untidy)."""
    try:
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({**kafka_conf, "log_level": 0})
        futures = dict(admin.delete_topics(topics.watched, operation_timeout=5))
        futures.update(admin.delete_consumer_groups(list(groups), request_timeout=5))
        for future in futures.values():
            future.exception(timeout=5)
    except Exception:
        pass
