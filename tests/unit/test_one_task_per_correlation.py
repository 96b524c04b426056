"""One task per correlation (docs/architecture.md): a second command of a correlation whose
task is still active gets no AsyncTask and its capability message is not sent.

Before, the second message went out untracked: the capability did the work twice and its
second result completed nothing. The same paths on PostgreSQL are in
`tests/integration/test_agent_one_task_per_correlation.py`.
"""

from __future__ import annotations

import pytest
from structlog.testing import capture_logs

from orchestrator.core import ids
from orchestrator.core.records import Outcome, Status
from orchestrator.service.apply_plan import apply_plan
from orchestrator.service.process_message import MessageProcessor, ProcessorConfig
from tests.support.db import FIXED_NOW, Wire
from tests.support.memory_store import MemoryStore

CHAR_REQ = "Character.Design.GenerationRequested"


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


def processor(store: MemoryStore) -> MessageProcessor:
    return MessageProcessor(store, clock=lambda: FIXED_NOW)


def cap_id(cause: str) -> str:
    return ids.derive(cause, "capability", CHAR_REQ)


def capability_rows(store: MemoryStore) -> list[str]:
    return [m.id for m in store.outbox() if m.kind == "capability"]


def test_a_second_command_of_an_active_correlation_is_not_sent(store: MemoryStore) -> None:
    s, c = "session-" + Wire.new_id(), Wire.new_id()
    p = processor(store)
    first_cmd = Wire.command("Character.Request", s, c, {"name": "Aria"})
    second_cmd = Wire.command("Character.Request", s, c, {"name": "Aria again"})
    first = p.process_message(first_cmd)
    with capture_logs() as logs:
        second = p.process_message(second_cmd)

    held = cap_id(Wire.message_id(first_cmd))
    assert first.task_ids == first.message_ids == [held]
    assert (second.status, second.task_ids, second.message_ids) == (Status.PROCESSED, [], [])
    # Its fact is written and published; its capability message is not.
    assert second.fact_types == ["Genesis.Session.Character.Requested"]
    assert capability_rows(store) == [held]
    assert [t.id for t in store.tasks()] == [held]
    skipped = [e for e in logs if e["event"] == "orchestrator_async_task_skipped"]
    assert [(e["log_level"], e["existing_task_id"], e["task_id"]) for e in skipped] == [
        ("info", held, cap_id(Wire.message_id(second_cmd)))
    ]


def test_a_redelivered_second_command_writes_nothing(store: MemoryStore) -> None:
    s, c = "session-" + Wire.new_id(), Wire.new_id()
    p = processor(store)
    p.process_message(Wire.command("Character.Request", s, c))
    second = Wire.command("Character.Request", s, c)
    p.process_message(second)
    before = store.counts()
    again = p.process_message(second)
    assert (again.status, again.wrote_outbox) == (Status.DUPLICATE, False)
    assert (
        store.counts()
        == before
        == {
            "inbox": 2,
            "domain_events": 2,
            "event_outbox": 3,
            "async_tasks": 1,
            "dead_letters": 0,
        }
    )


def test_once_the_task_is_over_a_new_command_gets_its_own_task(store: MemoryStore) -> None:
    s, c = "session-" + Wire.new_id(), Wire.new_id()
    p = processor(store)
    first = p.process_message(Wire.command("Character.Request", s, c))
    store.set_task_status(first.task_ids[0], "COMPLETED")
    later_cmd = Wire.command("Character.Request", s, c)
    later = p.process_message(later_cmd)
    assert later.task_ids == later.message_ids == [cap_id(Wire.message_id(later_cmd))]
    assert capability_rows(store) == first.task_ids + later.task_ids


def test_another_correlation_or_type_is_not_held(store: MemoryStore) -> None:
    s = "session-" + Wire.new_id()
    p = processor(store)
    a = p.process_message(Wire.command("Character.Request", s, Wire.new_id()))
    b = p.process_message(Wire.command("Character.Request", s, Wire.new_id()))
    theme = p.process_message(Wire.command("Theme.Request", s, Wire.new_id()))
    assert len(a.task_ids + b.task_ids + theme.task_ids) == 3
    assert len(capability_rows(store)) == 3


def test_dispatching_the_same_message_again_is_idempotent_not_skipped(
    store: MemoryStore,
) -> None:
    """The message's own task exists: the outbox upsert writes nothing new and nothing is
    reported skipped (a replay, not a second message of the correlation)."""
    s, c = "session-" + Wire.new_id(), Wire.new_id()
    p = processor(store)
    raw = Wire.command("Character.Request", s, c)
    first = p.process_message(raw)
    [row] = [r.row() for r in store.inbox()]
    plan = p._plan(None, p.classify(raw), "2026-11-29T12:00:00Z")  # type: ignore[arg-type]
    before = store.counts()
    again = Outcome(Status.PROCESSED)
    with capture_logs() as logs, store.transaction() as tx:
        apply_plan(tx, row, plan, FIXED_NOW, again, ProcessorConfig())
    assert store.counts() == before
    assert (again.task_ids, again.message_ids, again.wrote_outbox) == (
        [],
        first.message_ids,
        False,
    )
    assert "orchestrator_async_task_skipped" not in {e["event"] for e in logs}
