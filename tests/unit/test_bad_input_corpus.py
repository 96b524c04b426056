"""Every corpus item is refused with its expected category by the pure code: `classify` for
what the ingester refuses, the handler's planning for what is refused while processing."""

from __future__ import annotations

import pytest

from orchestrator.core.catalogue import QUALITY_REVIEW_TYPES
from orchestrator.core.classify import Kind, classify
from orchestrator.core.command_strategies import default_registry
from orchestrator.core.errors import Category, InvalidInput
from orchestrator.core.inbound import CapabilityEvent
from orchestrator.core.outbound import raw_dead_letter_id
from orchestrator.core.plan import plan_capability
from orchestrator.core.result_handlers import (
    default_handler_registry,
    target_type_of,
)
from tests.support.bad_input import CLASSIFY, CORPUS, MAX_BYTES, PLAN, BadInput, by_category

COMMANDS = default_registry()
HANDLERS = default_handler_registry()
CLASSIFIED = [i for i in CORPUS if i.stage == CLASSIFY]
PLANNED = [i for i in CORPUS if i.stage == PLAN]


def test_corpus_size_and_coverage() -> None:
    assert len(CORPUS) >= 100
    counts = by_category()
    input_categories = set(Category) - {
        Category.PROCESSING_FAILED,  # a row that keeps failing: not a property of its bytes
        Category.CAPABILITY_DISPATCH_FAILED,  # a write that failed: not a property of its bytes
    }
    assert set(counts) == {c.value for c in input_categories}
    assert all(n >= 5 for n in counts.values()), counts


def test_corpus_items_are_distinct() -> None:
    names = [i.name for i in CORPUS]
    assert len(set(names)) == len(names)
    messages = {(i.topic, i.value, i.headers) for i in CORPUS}
    assert len(messages) == len(CORPUS), "two items are the same message"
    # Distinct dead-letter ids: no two items can share one dead letter.
    dead_ids = {raw_dead_letter_id(i.raw()) for i in CORPUS}
    assert len(dead_ids) == len(CORPUS)
    assert sum(i.key is None for i in CORPUS) >= 3


@pytest.mark.parametrize("item", CLASSIFIED, ids=[i.name for i in CLASSIFIED])
def test_classify_refuses_with_its_category(item: BadInput) -> None:
    with pytest.raises(InvalidInput) as info:
        classify(item.raw(), COMMANDS, MAX_BYTES)
    assert info.value.category is item.category, info.value.reason
    assert info.value.reason


@pytest.mark.parametrize("item", PLANNED, ids=[i.name for i in PLANNED])
def test_handler_refuses_with_its_category(item: BadInput) -> None:
    """Well-formed (recorded in the inbox), refused by its handler, as the agent plans it."""
    c = classify(item.raw(), COMMANDS, MAX_BYTES)
    assert c.kind is Kind.CAPABILITY and c.message_id == item.message_id
    evt = c.envelope
    assert isinstance(evt, CapabilityEvent)
    with pytest.raises(InvalidInput) as info:
        if evt.type in QUALITY_REVIEW_TYPES:
            target_type_of(evt.data)
        plan_capability(evt, HANDLERS, 0, "2026-11-29T12:00:00.000Z")
    assert info.value.category is item.category, info.value.reason


def test_the_cap_is_a_boundary() -> None:
    """Exactly at the cap is accepted; one byte over is too large (whatever the bytes)."""
    over = next(i for i in CORPUS if i.name == "over-cap-by-one")
    assert over.value is not None and len(over.value) == MAX_BYTES + 1
    classify(over.raw(), COMMANDS, MAX_BYTES + 1)  # parses once the cap allows it
    with pytest.raises(InvalidInput) as info:
        classify(over.raw(), COMMANDS, MAX_BYTES)
    assert info.value.category is Category.TOO_LARGE
