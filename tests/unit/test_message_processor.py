"""The message processor on the in-memory store: what each kind of input writes, and what it
never writes twice. The same paths on PostgreSQL are in `tests/integration/test_agent_*.py`;
the fake keeps PostgreSQL's constraints (`tests/integration/test_store_contract.py`)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import orjson
import pytest

from orchestrator.core import ids
from orchestrator.core.inbound import RawMessage
from orchestrator.core.outbound import inbox_dead_letter_id
from orchestrator.core.records import InboxRow, NewInbox, OutboxMessage, Outcome, Status
from orchestrator.service.process_message import MessageProcessor, ProcessorConfig
from tests.support.db import CAPABILITY_TOPIC, DLQ_TOPIC, DOMAIN_TOPIC, FIXED_NOW, Wire
from tests.support.memory_store import MemoryStore, MemoryTransaction

CHAR_REQ = "Character.Design.GenerationRequested"
REVIEW_REQ = "Review.Quality.EvaluationRequested"


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


def processor(store: MemoryStore, **config: Any) -> MessageProcessor:
    return MessageProcessor(store, ProcessorConfig(**config), clock=lambda: FIXED_NOW)


def cap_id(cause: str, msg_type: str) -> str:
    return ids.derive(cause, "capability", msg_type)


def session() -> tuple[str, str]:
    return "session-" + Wire.new_id(), Wire.new_id()


def test_a_command_writes_its_fact_its_task_and_both_messages(store: MemoryStore) -> None:
    s, c = session()
    cmd = Wire.command("Character.Request", s, c, {"name": "Aria"})
    e = Wire.message_id(cmd)
    out = processor(store).process_message(cmd)

    fact_id = ids.derive(e, "fact", "Genesis.Session.Character.Requested")
    assert (out.status, out.fact_ids, out.task_ids, out.wrote_outbox) == (
        Status.PROCESSED,
        [fact_id],
        [cap_id(e, CHAR_REQ)],
        True,
    )
    [fact] = store.facts()
    assert (fact.event_id, fact.causation_id, fact.session_id, fact.correlation_id) == (
        fact_id,
        e,
        s,
        c,
    )
    assert fact.payload["input"] == {"name": "Aria"}
    assert [(m.id, m.kind, m.topic) for m in store.outbox()] == [
        (fact_id, "fact", DOMAIN_TOPIC),
        (cap_id(e, CHAR_REQ), "capability", "genesis.character.tasks"),
    ]
    [task] = store.tasks()
    assert (task.id, task.task_type, task.status, task.version, task.input) == (
        cap_id(e, CHAR_REQ),
        CHAR_REQ,
        "PENDING",
        1,
        {"session_id": s, "input": {"name": "Aria"}, "correlation_id": c},
    )
    assert task.deadline == FIXED_NOW + timedelta(seconds=900)
    [row] = store.inbox()
    assert (row.new.message_id, row.processed, row.outcome) == (e, True, "processed")


def test_a_generation_result_completes_its_task_and_asks_for_a_review(
    store: MemoryStore,
) -> None:
    s, c = session()
    p = processor(store)
    cmd = Wire.command("Character.Request", s, c, {"name": "Aria"})
    p.process_message(cmd)
    gen = Wire.capability("Character.Design.Generated", s, c, name="Aria", traits=["brave"])
    g = Wire.message_id(gen)
    out = p.process_message(gen)

    first_task = cap_id(Wire.message_id(cmd), CHAR_REQ)
    assert out.fact_types == ["Genesis.Session.Character.Proposed"]
    assert (out.completed_task_ids, out.task_ids) == ([first_task], [cap_id(g, REVIEW_REQ)])
    assert [(t.id, t.status, t.version) for t in store.tasks()] == [
        (first_task, "COMPLETED", 2),
        (cap_id(g, REVIEW_REQ), "PENDING", 1),
    ]
    assert store.tables.tasks[first_task].result == {
        "session_id": s,
        "correlation_id": c,
        "name": "Aria",
        "traits": ["brave"],
    }
    review = store.outbox()[-1]
    assert (review.topic, orjson.loads(review.payload)["data"]["input"]) == (
        "genesis.review.tasks",
        {"content": {"name": "Aria", "traits": ["brave"]}},
    )


def test_the_review_loop_gives_up_after_three_rounds(store: MemoryStore) -> None:
    s, c = session()
    p = processor(store)
    p.process_message(Wire.command("Character.Request", s, c, {"name": "Bo"}))
    verdicts = []
    for n in range(3):
        p.process_message(Wire.capability("Character.Design.Generated", s, c, name=f"Bo v{n}"))
        rev = Wire.capability("Review.Quality.Evaluated", s, c, target_type="character", score=5.0)
        out = p.process_message(rev)
        [fact] = [f for f in store.facts() if f.causation_id == Wire.message_id(rev)]
        verdicts.append((out.fact_types, fact.payload["attempts"], len(out.task_ids)))
    assert verdicts == [
        (["Genesis.Session.Character.RegenerationRequested"], 1, 1),
        (["Genesis.Session.Character.RegenerationRequested"], 2, 1),
        (["Genesis.Session.Character.Failed"], 3, 0),
    ]
    assert [t.status for t in store.tasks()] == ["COMPLETED"] * 6


def test_a_duplicate_delivery_writes_nothing(store: MemoryStore) -> None:
    s, c = session()
    p = processor(store)
    cmd = Wire.command("Character.Request", s, c, {"name": "Aria"})
    p.process_message(cmd)
    before = store.counts()
    again = p.process_message(cmd)
    assert (again.status, again.wrote_outbox, again.fact_ids) == (Status.DUPLICATE, False, [])
    assert (
        store.counts()
        == before
        == {
            "inbox": 1,
            "domain_events": 1,
            "event_outbox": 2,
            "async_tasks": 1,
            "dead_letters": 0,
        }
    )


def test_a_failed_dispatch_keeps_the_fact_and_dead_letters_the_rest(
    store: MemoryStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    s, c = session()
    probe = OutboxMessage("probe", "fact", "X", "t", None, (), b"", s, c)

    def refuse(self: MemoryTransaction, *args: Any) -> bool:
        self.insert_outbox(probe)  # undone with the savepoint
        raise RuntimeError("no tasks today")

    cmd = Wire.command("Character.Request", s, c, {"name": "Aria"})
    e = Wire.message_id(cmd)
    monkeypatch.setattr(MemoryTransaction, "create_task", refuse)
    out = processor(store).process_message(cmd)

    dl_id = inbox_dead_letter_id(DOMAIN_TOPIC, e, "capability_dispatch_failed")
    assert (out.status, out.dispatch_failed, out.dead_letter_id, out.task_ids) == (
        Status.PROCESSED,
        True,
        dl_id,
        [],
    )
    assert out.reason == f"dispatching {CHAR_REQ} failed: no tasks today"
    assert [m.topic for m in store.outbox()] == [DOMAIN_TOPIC, DLQ_TOPIC]
    assert (store.counts()["domain_events"], store.counts()["async_tasks"]) == (1, 0)
    assert [d.id for d in store.dead_letters()] == [dl_id]


# -- the runtime path: rows drained from the inbox ---------------------------------------------


def record(store: MemoryStore, p: MessageProcessor, raw: RawMessage) -> int:
    c = p.classify(raw)
    new = NewInbox(
        raw, c.message_id, c.kind.value, c.message_type, str(c.session_id), c.correlation_id, None
    )
    with store.transaction() as tx:
        [inbox_id] = tx.insert_inbox([new], triggered=True)
    return inbox_id


def drain_one(store: MemoryStore, p: MessageProcessor, session_id: str) -> Outcome:
    """What a session worker does for each row: count the attempt, then process."""
    row: InboxRow | None = store.begin_next(session_id)
    assert row is not None
    return p.process_row(row)


def test_a_poison_row_is_retried_then_dead_lettered(
    store: MemoryStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    s, c = session()
    p = processor(store, max_attempts=2)
    poison = Wire.command("Character.Request", s, c, {"name": "Aria"})
    later = Wire.command("Stage.Validate", s, c, {"stage": "s"})
    poison_id = record(store, p, poison)
    record(store, p, later)

    def boom(self: MemoryTransaction, *args: Any) -> bool:
        raise RuntimeError("database said no")

    with monkeypatch.context() as patch:
        patch.setattr(MemoryTransaction, "insert_fact", boom)
        for attempt in (1, 2):
            with pytest.raises(RuntimeError, match="database said no"):
                drain_one(store, p, s)
            head = store.tables.inbox[poison_id]
            assert (head.attempts, head.processed) == (attempt, False)
            assert store.counts()["domain_events"] == 0

    out = drain_one(store, p, s)
    mid = Wire.message_id(poison)
    dl_id = inbox_dead_letter_id(DOMAIN_TOPIC, mid, "processing_failed")
    reason = "processing failed 2 times (limit 2)"
    assert (out.status, out.dead_letter_id, out.reason, out.inbox_id) == (
        Status.DEAD_LETTERED,
        dl_id,
        reason,
        poison_id,
    )
    head = store.tables.inbox[poison_id]
    assert (head.attempts, head.processed, head.outcome, head.last_error) == (
        3,
        True,
        "dead_lettered",
        reason,
    )
    [dl] = store.dead_letters()
    assert (dl.id, dl.category, dl.raw.value, dl.message_id) == (
        dl_id,
        "processing_failed",
        poison.value,
        mid,
    )
    assert [(m.topic, m.payload) for m in store.outbox()] == [(DLQ_TOPIC, poison.value)]
    # The row behind it is not blamed: processed normally, on its first attempt.
    nxt = drain_one(store, p, s)
    assert (nxt.status, nxt.message_id) == (Status.PROCESSED, Wire.message_id(later))
    assert store.begin_next(s) is None


def test_unparseable_input_becomes_a_dead_letter_once(store: MemoryStore) -> None:
    raw = RawMessage(CAPABILITY_TOPIC, b"{not json", b"k", (), 0, 7)
    p = processor(store)
    first, again = p.process_message(raw), p.process_message(raw)
    assert (first.status, first.category, first.wrote_outbox) == (
        Status.DEAD_LETTERED,
        "not_json",
        True,
    )
    assert (again.dead_letter_id, again.wrote_outbox) == (first.dead_letter_id, False)
    assert store.counts() == {
        "inbox": 0,
        "domain_events": 0,
        "event_outbox": 1,
        "async_tasks": 0,
        "dead_letters": 1,
    }


def test_a_failed_dispatch_fits_its_dead_letter_to_the_configured_dlq_limit(
    store: MemoryStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The dispatch-failure dead letter obeys ORCHESTRATOR_DLQ_MAX_BYTES like every other one:
    a 20 KB command under a 4 KB DLQ limit reaches the DLQ topic truncated, not whole."""
    s, c = session()

    def refuse(self: MemoryTransaction, *args: Any) -> bool:
        raise RuntimeError("no tasks today")

    cmd = Wire.command("Character.Request", s, c, {"name": "Aria", "notes": "n" * 20_000})
    monkeypatch.setattr(MemoryTransaction, "create_task", refuse)
    out = processor(store, dlq_max_bytes=4_096).process_message(cmd)

    assert out.dispatch_failed
    [dlq] = [m for m in store.outbox() if m.topic == DLQ_TOPIC]
    headers = dict(dlq.headers)
    assert headers["x-dlq-truncated"] == b"true"
    assert dlq.payload is not None and len(dlq.payload) < 4_096 < len(cmd.value or b"")
