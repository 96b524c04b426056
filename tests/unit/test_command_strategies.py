"""Command strategies: every built-in alias, the mapping table and the source's custom example."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

import orchestrator.core.command_strategies as command_strategies_module
from orchestrator.core.classify import Kind, classify
from orchestrator.core.command_strategies import (
    CommandMapping,
    CommandStrategyRegistry,
    default_registry,
)
from orchestrator.core.inbound import RawMessage
from orchestrator.core.plan import plan_command
from orchestrator.core.wire import default_topic

# The table of seed-design.md: strategy -> aliases, requested action, message type, topic base.
STRATEGY_TABLE: dict[str, tuple[tuple[str, ...], str, str, str]] = {
    "Character": (
        (
            "Character.Request",
            "CHARACTER_REQUEST",
            "Character.Requested",
            "Command.Genesis.Session.Character.Request",
        ),
        "Character.Requested",
        "Character.Design.GenerationRequested",
        "character",
    ),
    "Theme": (
        (
            "Theme.Request",
            "THEME_REQUEST",
            "Theme.Requested",
            "Command.Genesis.Session.Theme.Request",
        ),
        "Theme.Requested",
        "Outliner.Theme.GenerationRequested",
        "outline",
    ),
    "Seed": (
        (
            "Seed.Request",
            "SEED_REQUEST",
            "Seed.Requested",
            "Command.Genesis.Session.Seed.Request",
        ),
        "Seed.Requested",
        "Outliner.Concept.GenerationRequested",
        "outline",
    ),
    "World": (
        (
            "World.Request",
            "WORLD_REQUEST",
            "World.Requested",
            "Command.Genesis.Session.World.Request",
        ),
        "World.Requested",
        "Worldbuilder.World.GenerationRequested",
        "world",
    ),
    "Plot": (
        (
            "Plot.Request",
            "PLOT_REQUEST",
            "Plot.Requested",
            "Command.Genesis.Session.Plot.Request",
        ),
        "Plot.Requested",
        "Plot.Structure.GenerationRequested",
        "plot",
    ),
    "Details": (
        (
            "Details.Request",
            "DETAILS_REQUEST",
            "Details.Requested",
            "Command.Genesis.Session.Details.Request",
        ),
        "Details.Requested",
        "Writer.Content.GenerationRequested",
        "writer",
    ),
    "StageValidation": (
        ("Stage.Validate", "STAGE_VALIDATE", "ValidateStage"),
        "Stage.ValidationRequested",
        "Review.Consistency.CheckRequested",
        "review",
    ),
    "StageLock": (
        ("Stage.Lock", "STAGE_LOCK", "LockStage"),
        "Stage.LockRequested",
        "Review.Consistency.CheckRequested",
        "review",
    ),
}

ALIAS_CASES = [
    pytest.param(alias, action, msg_type, base, id=alias)
    for aliases, action, msg_type, base in STRATEGY_TABLE.values()
    for alias in aliases
]
ALL_ALIASES = {alias for aliases, *_ in STRATEGY_TABLE.values() for alias in aliases}
SCOPES = [
    pytest.param("GENESIS", "Genesis", "genesis", id="genesis"),
    pytest.param("NOVEL", "Novel", "novel", id="novel"),
]
USER_INPUT = {"name": "Lin Feng", "traits": ["brave", "curious"], "age": 17}
SESSION = "0b8f2a5e-1c44-4d6f-9a3b-5e7d8c9f0a12"


@pytest.fixture
def registry() -> CommandStrategyRegistry:
    return default_registry()


@pytest.mark.parametrize(("scope_type", "scope_prefix", "topic_prefix"), SCOPES)
@pytest.mark.parametrize(("alias", "action", "msg_type", "base"), ALIAS_CASES)
def test_builtin_alias_maps_to_fact_and_capability_message(
    registry: CommandStrategyRegistry,
    alias: str,
    action: str,
    msg_type: str,
    base: str,
    scope_type: str,
    scope_prefix: str,
    topic_prefix: str,
) -> None:
    payload = {"command_type": alias, "payload": USER_INPUT, "user_id": "u-7"}

    mapped = registry.process_command(
        cmd_type=alias,
        scope_type=scope_type,
        scope_prefix=scope_prefix,
        aggregate_id=SESSION,
        payload=payload,
    )

    assert mapped is not None
    assert mapped.requested_action == action
    message = mapped.capability_message
    assert message is not None
    assert message["type"] == msg_type
    assert message["_topic"] == f"{topic_prefix}.{base}.tasks"
    assert message["_key"] == SESSION
    assert message["session_id"] == SESSION
    assert message["input"] == USER_INPUT
    assert message == {
        "type": msg_type,
        "session_id": SESSION,
        "input": USER_INPUT,
        "_topic": f"{topic_prefix}.{base}.tasks",
        "_key": SESSION,
    }


@pytest.mark.parametrize(("alias", "action", "msg_type", "base"), ALIAS_CASES)
def test_missing_user_input_becomes_empty_input(
    registry: CommandStrategyRegistry, alias: str, action: str, msg_type: str, base: str
) -> None:
    mapped = registry.process_command(alias, "GENESIS", "Genesis", SESSION, {"command_type": alias})
    assert mapped is not None
    assert mapped.capability_message is not None
    assert mapped.capability_message["input"] == {}


def test_registry_knows_exactly_the_table_aliases(registry: CommandStrategyRegistry) -> None:
    assert len(ALL_ALIASES) == 30
    assert registry.aliases() == ALL_ALIASES
    for alias in ALL_ALIASES:
        assert registry.knows(alias)


@pytest.mark.parametrize(
    ("aliases", "action"),
    [
        pytest.param(aliases, action, id=name)
        for name, (aliases, action, _, _) in STRATEGY_TABLE.items()
    ],
)
def test_each_strategy_exposes_its_aliases(
    registry: CommandStrategyRegistry, aliases: tuple[str, ...], action: str
) -> None:
    strategy = registry.get(aliases[0])
    assert strategy is not None
    assert strategy.get_aliases() == set(aliases)
    for alias in aliases:
        assert registry.get(alias) is strategy


@pytest.mark.parametrize(
    "cmd_type",
    ["Unknown.Command", "character.request", "Character.Request ", "", "Stage.Unlock"],
)
def test_unknown_command_yields_none(registry: CommandStrategyRegistry, cmd_type: str) -> None:
    assert registry.knows(cmd_type) is False
    assert registry.get(cmd_type) is None
    assert registry.process_command(cmd_type, "GENESIS", "Genesis", SESSION, {}) is None


def test_mapping_table_overrides_requested_action(registry: CommandStrategyRegistry) -> None:
    mapping = {"Character.Request": "Character.Asked"}
    payload = {"command_type": "Character.Request", "payload": USER_INPUT}

    mapped = registry.process_command(
        "Character.Request", "GENESIS", "Genesis", SESSION, payload, mapping=mapping
    )

    assert mapped == CommandMapping(
        requested_action="Character.Asked",
        capability_message={
            "type": "Character.Design.GenerationRequested",
            "session_id": SESSION,
            "input": USER_INPUT,
            "_topic": "genesis.character.tasks",
            "_key": SESSION,
        },
    )


def test_mapping_table_leaves_other_commands_alone(registry: CommandStrategyRegistry) -> None:
    mapping = {"Character.Request": "Character.Asked"}
    mapped = registry.process_command(
        "Theme.Request", "GENESIS", "Genesis", SESSION, {"payload": {}}, mapping=mapping
    )
    assert mapped is not None
    assert mapped.requested_action == "Theme.Requested"


def test_mapped_command_without_strategy_has_no_capability_message(
    registry: CommandStrategyRegistry,
) -> None:
    mapping = {"Legacy.Outline.Request": "Outline.Requested"}
    mapped = registry.process_command(
        "Legacy.Outline.Request", "GENESIS", "Genesis", SESSION, {"payload": USER_INPUT}, mapping
    )
    assert mapped == CommandMapping(requested_action="Outline.Requested", capability_message=None)


def test_later_registration_replaces_an_alias(registry: CommandStrategyRegistry) -> None:
    class Replacement(command_strategies_module.CommandStrategy):
        def get_aliases(self) -> set[str]:
            return {"Character.Request"}

        def process(
            self, scope_type: str, scope_prefix: str, aggregate_id: str, payload: dict[str, Any]
        ) -> CommandMapping:
            return CommandMapping("Character.Replaced")

    registry.register(Replacement())

    mapped = registry.process_command("Character.Request", "GENESIS", "Genesis", SESSION, {})
    assert mapped == CommandMapping("Character.Replaced", None)
    other = registry.process_command("CHARACTER_REQUEST", "GENESIS", "Genesis", SESSION, {})
    assert other is not None
    assert other.requested_action == "Character.Requested"


def test_default_registry_returns_independent_registries() -> None:
    first = default_registry()
    second = default_registry()
    assert first is not second
    assert first.aliases() == second.aliases() == ALL_ALIASES
    assert command_strategies_module.command_registry.aliases() >= ALL_ALIASES


@pytest.fixture
def fresh_global_registry(monkeypatch: pytest.MonkeyPatch) -> CommandStrategyRegistry:
    """Swap the process-wide registry for a fresh one, so the source's example can run as is."""
    fresh = default_registry()
    monkeypatch.setattr(command_strategies_module, "command_registry", fresh)
    return fresh


def _register_source_example() -> None:
    """The custom-strategy example of the source design, as written there."""
    from orchestrator.core.command_strategies import (
        CommandMapping,
        CommandStrategy,
        command_registry,
    )

    class CustomCommandStrategy(CommandStrategy):
        def get_aliases(self) -> set[str]:
            return {"Custom.Command"}

        def process(
            self, scope_type: str, scope_prefix: str, aggregate_id: str, payload: dict[str, Any]
        ) -> CommandMapping:
            return CommandMapping(
                requested_action="Custom.Requested",
                capability_message={
                    "type": "Custom.Process.Requested",
                    "session_id": aggregate_id,
                    "input": payload.get("payload", {}),
                },
            )

    command_registry.register(CustomCommandStrategy())


def test_source_custom_strategy_example(fresh_global_registry: CommandStrategyRegistry) -> None:
    original_aliases = default_registry().aliases()
    _register_source_example()

    from orchestrator.core.command_strategies import command_registry

    assert command_registry is fresh_global_registry
    mapped = command_registry.process_command(
        cmd_type="Custom.Command",
        scope_type="GENESIS",
        scope_prefix="Genesis",
        aggregate_id=SESSION,
        payload={"command_type": "Custom.Command", "payload": {"mood": "dark"}},
    )
    assert mapped == CommandMapping(
        requested_action="Custom.Requested",
        capability_message={
            "type": "Custom.Process.Requested",
            "session_id": SESSION,
            "input": {"mood": "dark"},
        },
    )
    assert fresh_global_registry.aliases() == original_aliases | {"Custom.Command"}
    # The other registries did not see the custom command.
    assert default_registry().knows("Custom.Command") is False


def test_custom_message_without_topic_routes_to_default_topic(
    fresh_global_registry: CommandStrategyRegistry,
) -> None:
    _register_source_example()
    value = orjson.dumps(
        {
            "event_id": "evt-custom-1",
            "event_type": "Genesis.Session.Command.Received",
            "aggregate_type": "GenesisSession",
            "aggregate_id": SESSION,
            "payload": {"command_type": "Custom.Command", "payload": {"mood": "dark"}},
            "metadata": {"correlation_id": "corr-custom"},
        }
    )
    raw = RawMessage(topic="genesis.domain.events", value=value, key=SESSION.encode())

    classified = classify(raw, fresh_global_registry, 1_048_576)
    assert classified.kind is Kind.COMMAND
    assert classified.command is not None
    plan = plan_command(classified.command, fresh_global_registry, None, "2024-05-01T00:00:00Z")

    assert [f.event_type for f in plan.facts] == ["Genesis.Session.Custom.Requested"]
    assert len(plan.messages) == 1
    msg = plan.messages[0]
    assert msg.topic == default_topic("Genesis", "Custom.Process.Requested")
    assert msg.topic == "genesis.custom.tasks"
    assert msg.key == SESSION
    assert msg.session_id == SESSION
    assert msg.message_type == "Custom.Process.Requested"
    assert msg.correlation_id == "corr-custom"
    assert msg.envelope["data"] == {
        "session_id": SESSION,
        "input": {"mood": "dark"},
        "correlation_id": "corr-custom",
    }
