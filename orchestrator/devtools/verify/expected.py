"""What each input should have produced: the caller's expectation, and the input re-planned.

Every id the orchestrator writes derives from its cause, so re-planning a recorded input with
the same pure code the workers run yields exactly the rows it should have written.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from orchestrator.core.catalogue import QUALITY_REVIEW_TYPES
from orchestrator.core.classify import Kind, classify
from orchestrator.core.command_strategies import CommandStrategyRegistry
from orchestrator.core.errors import Category, InvalidInput
from orchestrator.core.inbound import CapabilityEvent, RawMessage
from orchestrator.core.outbound import raw_dead_letter_id
from orchestrator.core.plan import Plan, plan_capability, plan_command
from orchestrator.core.result_handlers import (
    EventHandlerRegistry,
    review_outcome_actions,
    target_type_of,
)
from orchestrator.core.wire import fact_type
from orchestrator.devtools.verify.state import InboxRow, State

# Ids never depend on the clock: only ids and types of the re-planned rows are compared.
PLAN_TIME = "1970-01-01T00:00:00.000Z"


class InputKind(StrEnum):
    COMMAND = "command"
    CAPABILITY = "capability"
    SKIP = "skip"
    INVALID = "invalid"


@dataclass(frozen=True, slots=True)
class ExpectedInput:
    """One input the caller sent, and what it should have become.

    `message_id` is the envelope's `event_id` / `id`; an invalid input may be named by its raw
    message instead (dead letters of unparseable input carry no message id). `fact_types` (full
    names, e.g. `Genesis.Session.Character.Requested`) overrides the re-planned expectation;
    `category` is the dead-letter category an invalid input must have.
    """

    kind: InputKind
    message_id: str | None = None
    topic: str | None = None
    fact_types: frozenset[str] | None = None
    category: str | None = None
    raw: RawMessage | None = None

    @classmethod
    def command(
        cls, message_id: str, fact_types: Iterable[str] | None = None, topic: str | None = None
    ) -> ExpectedInput:
        types = frozenset(fact_types) if fact_types is not None else None
        return cls(InputKind.COMMAND, message_id, topic, types)

    @classmethod
    def capability(
        cls, message_id: str, fact_types: Iterable[str] | None = None, topic: str | None = None
    ) -> ExpectedInput:
        types = frozenset(fact_types) if fact_types is not None else None
        return cls(InputKind.CAPABILITY, message_id, topic, types)

    @classmethod
    def skipped(cls, message_id: str, topic: str | None = None) -> ExpectedInput:
        return cls(InputKind.SKIP, message_id, topic)

    @classmethod
    def invalid(
        cls,
        raw: RawMessage | None = None,
        category: str | Category | None = None,
        message_id: str | None = None,
    ) -> ExpectedInput:
        if raw is None and message_id is None:
            raise ValueError("an invalid input is named by its raw message or its message id")
        cat = category.value if isinstance(category, Category) else category
        topic = raw.topic if raw is not None else None
        return cls(InputKind.INVALID, message_id, topic, None, cat, raw)

    @property
    def label(self) -> str:
        if self.message_id:
            return self.message_id
        if self.raw is not None:
            return raw_dead_letter_id(self.raw)
        return "?"


@dataclass(frozen=True, slots=True)
class Replanner:
    """Plans a recorded input again with what the workers ran with."""

    state: State
    commands: CommandStrategyRegistry
    handlers: EventHandlerRegistry
    mapping: Mapping[str, str]

    def plans(self, row: InboxRow) -> list[Plan]:
        """The row's plan; for a quality review, the plan with the review count it saw first,
        then the plans with every other count (a replayed review may have seen another)."""
        c = classify(row.raw, self.commands, sys.maxsize, self.mapping)
        if c.kind is Kind.COMMAND:
            assert c.command is not None
            return [plan_command(c.command, self.commands, self.mapping, PLAN_TIME)]
        if c.kind is Kind.SKIP:
            raise InvalidInput(Category.UNKNOWN_SHAPE, "the message is a skipped domain event")
        evt = c.envelope
        assert isinstance(evt, CapabilityEvent)
        if evt.type not in QUALITY_REVIEW_TYPES or not evt.correlation_id:
            return [plan_capability(evt, self.handlers, 0, PLAN_TIME)]
        types = {fact_type("Genesis", a) for a in review_outcome_actions(target_type_of(evt.data))}
        reviews = [
            f
            for f in self.state.facts_by_corr.get(evt.correlation_id, [])
            if f.event_type in types and f.causation_id != evt.id
        ]
        before = sum(1 for f in reviews if self.state.order.get(f.causation_id, -1) < row.id)
        counts = [before, *(n for n in range(len(reviews) + 1) if n != before)]
        return [plan_capability(evt, self.handlers, n, PLAN_TIME) for n in counts]


def within(plan: Plan, actual: Counter[str]) -> bool:
    """The plan's facts are among the facts written (a review's plan depends on a count)."""
    need = Counter(f.event_type for f in plan.facts)
    return all(actual[t] >= n for t, n in need.items())
