"""Command strategies: a `*.Command.Received` command -> a `*.Requested` fact + a capability task.

The strategy pattern and public surface of the source design: a strategy names its aliases and
maps a command to a `CommandMapping(requested_action, capability_message)`; the registry finds
the strategy by alias. A new command is one small class registered with
`command_registry.register(MyStrategy())`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from orchestrator.core.catalogue import (
    CONSISTENCY_CHECK_REQUEST,
    GENERATION_KINDS,
    REVIEW_TOPIC_BASE,
    task_topic,
)
from orchestrator.core.wire import capability_request


@dataclass(frozen=True, slots=True)
class CommandMapping:
    """What a command becomes: the fact's action and the capability message (a plain dict)."""

    requested_action: str
    capability_message: dict[str, Any] | None = None


class CommandStrategy(ABC):
    """One kind of command. Subclasses name their aliases and build the mapping."""

    @abstractmethod
    def get_aliases(self) -> set[str]:
        """Every command type this strategy answers to."""

    @abstractmethod
    def process(
        self, scope_type: str, scope_prefix: str, aggregate_id: str, payload: dict[str, Any]
    ) -> CommandMapping:
        """Map the command (`payload` is the domain event's payload) to its effects."""


class GenerationStrategy(CommandStrategy):
    """A command that asks a capability service to generate one kind of content."""

    name: str
    message_type: str
    topic_base: str
    requested_action: str
    extra_aliases: tuple[str, ...] = ()

    def get_aliases(self) -> set[str]:
        upper = self.name.upper()
        return {
            f"{self.name}.Request",
            f"{upper}_REQUEST",
            f"{self.name}.Requested",
            f"Command.Genesis.Session.{self.name}.Request",
            *self.extra_aliases,
        }

    def process(
        self, scope_type: str, scope_prefix: str, aggregate_id: str, payload: dict[str, Any]
    ) -> CommandMapping:
        return CommandMapping(
            requested_action=self.requested_action,
            capability_message=capability_request(
                self.message_type,
                session_id=aggregate_id,
                topic=task_topic(scope_prefix, self.topic_base),
                input=payload.get("payload") or {},
            ),
        )


def _generation(
    name: str, message_type: str, topic_base: str, action: str | None = None
) -> GenerationStrategy:
    cls = type(
        f"{name}RequestStrategy",
        (GenerationStrategy,),
        {
            "name": name,
            "message_type": message_type,
            "topic_base": topic_base,
            "requested_action": action or f"{name}.Requested",
        },
    )
    strategy: GenerationStrategy = cls()
    return strategy


class StageValidationStrategy(CommandStrategy):
    """Ask the review service to check the consistency of a stage before it is validated."""

    aliases = frozenset({"Stage.Validate", "STAGE_VALIDATE", "ValidateStage"})
    requested_action = "Stage.ValidationRequested"

    def get_aliases(self) -> set[str]:
        return set(self.aliases)

    def process(
        self, scope_type: str, scope_prefix: str, aggregate_id: str, payload: dict[str, Any]
    ) -> CommandMapping:
        return CommandMapping(
            requested_action=self.requested_action,
            capability_message=capability_request(
                CONSISTENCY_CHECK_REQUEST,
                session_id=aggregate_id,
                topic=task_topic(scope_prefix, REVIEW_TOPIC_BASE),
                input=payload.get("payload") or {},
            ),
        )


class StageLockStrategy(StageValidationStrategy):
    """Locking a stage runs the same consistency check first."""

    aliases = frozenset({"Stage.Lock", "STAGE_LOCK", "LockStage"})
    requested_action = "Stage.LockRequested"


class CommandStrategyRegistry:
    """Strategies by alias. Later registrations of an alias replace earlier ones."""

    def __init__(self) -> None:
        self._strategies: dict[str, CommandStrategy] = {}

    def register(self, strategy: CommandStrategy) -> None:
        for alias in strategy.get_aliases():
            self._strategies[alias] = strategy

    def get(self, cmd_type: str) -> CommandStrategy | None:
        return self._strategies.get(cmd_type)

    def knows(self, cmd_type: str) -> bool:
        return cmd_type in self._strategies

    def aliases(self) -> set[str]:
        return set(self._strategies)

    def process_command(
        self,
        cmd_type: str,
        scope_type: str,
        scope_prefix: str,
        aggregate_id: str,
        payload: dict[str, Any],
        mapping: Mapping[str, str] | None = None,
    ) -> CommandMapping | None:
        """The mapping for a command, or None for an unknown command type.

        `mapping` is the configured command -> requested-action table, consulted first as in
        the source: it overrides the strategy's action (a mapped command with no strategy
        records its fact but dispatches no capability task).
        """
        strategy = self._strategies.get(cmd_type)
        override = (mapping or {}).get(cmd_type)
        if strategy is None:
            return CommandMapping(requested_action=override) if override else None
        result = strategy.process(scope_type, scope_prefix, aggregate_id, payload)
        if override:
            return CommandMapping(override, result.capability_message)
        return result


BUILTIN_STRATEGIES: tuple[CommandStrategy, ...] = (
    *(_generation(k.target, k.request_type, k.topic_base) for k in GENERATION_KINDS),
    StageValidationStrategy(),
    StageLockStrategy(),
)


def default_registry() -> CommandStrategyRegistry:
    registry = CommandStrategyRegistry()
    for strategy in BUILTIN_STRATEGIES:
        registry.register(strategy)
    return registry


command_registry = default_registry()
"""The process-wide registry, as in the source: register custom strategies here."""
