"""End-to-end latency: a command's arrival in the inbox -> its outcome fact, by kind.

`orchestrator_command_latency_seconds{kind,outcome}` gets one observation per outcome fact
written (Confirmed, Failed, or beat's TimedOut), measured on the store's clock; a redelivery
observes nothing. Before, only `orchestrator_task_roundtrip_seconds` (one task's created ->
result) existed. The SQL side is in `tests/integration/test_agent_command_latency.py`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta

from prometheus_client import REGISTRY

from orchestrator.core.records import Status
from orchestrator.observability.metrics import observe_command_latency, record_outcome
from orchestrator.service.maintenance import Maintenance
from orchestrator.service.outcome_latency import fact_outcome, task_kind
from orchestrator.service.ports import ExpiredTask, Transaction
from orchestrator.service.process_message import MessageProcessor, ProcessorConfig
from tests.support.db import DOMAIN_TOPIC, FIXED_NOW, Wire
from tests.support.memory_store import ACTIVE, MemoryStore, MemoryTransaction

METRIC = "orchestrator_command_latency_seconds"


class Clock:
    def __init__(self) -> None:
        self.now = FIXED_NOW

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def sample(kind: str, outcome: str, what: str = "count") -> float:
    value = REGISTRY.get_sample_value(f"{METRIC}_{what}", {"kind": kind, "outcome": outcome})
    return value or 0.0


def test_a_confirmed_session_observes_arrival_to_outcome_under_its_kind() -> None:
    clock = Clock()
    store = MemoryStore(clock)
    p = MessageProcessor(store, clock=clock)
    s, c = "session-" + Wire.new_id(), Wire.new_id()
    count, total = sample("character", "confirmed"), sample("character", "confirmed", "sum")

    outcomes = [p.process_message(Wire.command("Character.Request", s, c, {"name": "A"}))]
    clock.advance(10)
    outcomes.append(p.process_message(Wire.capability("Character.Design.Generated", s, c, n=1)))
    clock.advance(32)
    review = Wire.capability("Review.Quality.Evaluated", s, c, target_type="character", score=9.0)
    outcomes.append(p.process_message(review))
    assert outcomes[-1].fact_types == ["Genesis.Session.Character.Confirmed"]
    assert [o.command_latency for o in outcomes] == [[], [], [("character", "confirmed", 42.0)]]
    for o in outcomes:
        record_outcome(o)
    assert sample("character", "confirmed") == count + 1
    assert sample("character", "confirmed", "sum") - total == 42.0

    again = p.process_message(review)  # a redelivery: no second observation
    assert (again.status, again.command_latency) == (Status.DUPLICATE, [])


def test_the_first_command_of_the_correlation_starts_the_clock() -> None:
    clock = Clock()
    store = MemoryStore(clock)
    p = MessageProcessor(store, clock=clock)
    s, c = "session-" + Wire.new_id(), Wire.new_id()
    p.process_message(Wire.command("Stage.Validate", s, c))
    clock.advance(5)
    p.process_message(Wire.command("Stage.Validate", s, c))  # held: one task per correlation
    clock.advance(2)
    out = p.process_message(Wire.capability("Review.Consistency.Checked", s, c, ok=False))
    assert out.fact_types == ["Genesis.Session.Stage.Failed"]
    assert out.command_latency == [("stage", "failed", 7.0)]


def test_facts_that_end_nothing_observe_nothing() -> None:
    assert fact_outcome("Genesis.Session.Character.Proposed") is None
    assert fact_outcome("Genesis.Session.Character.RegenerationRequested") is None
    assert fact_outcome("Genesis.Session.AsyncTask.TimedOut") is None  # beat measures those
    assert fact_outcome("Genesis.Session.World.Failed") == ("world", "failed")
    assert task_kind("Outliner.Theme.GenerationRequested") == "theme"
    assert task_kind("Review.Consistency.CheckRequested") == "stage"
    assert task_kind("Review.Quality.EvaluationRequested") == "review"


class MemoryMaintenance:
    """Beat's timeout sweep on the in-memory store."""

    def __init__(self, store: MemoryStore) -> None:
        self.store = store

    @contextmanager
    def expire_tasks(self, limit: int) -> Iterator[tuple[list[ExpiredTask], Transaction]]:
        with self.store.transaction() as tx:
            yield self._expire(tx, limit), tx

    @staticmethod
    def _expire(tx: MemoryTransaction, limit: int) -> list[ExpiredTask]:
        due = [t for t in tx.t.tasks.values() if t.status in ACTIVE and t.deadline < tx.now]
        for t in due[:limit]:
            t.status = "FAILED"
        return [ExpiredTask(t.id, t.task_type, t.session_id, t.correlation_id or "") for t in due]

    def redrive(self, after_s: float, growth_max_s: float) -> list[tuple[str, str]]:
        return []

    def prune(self, keep_s: float, limit: int) -> tuple[int, int]:
        return 0, 0


def test_a_timed_out_task_observes_its_command_after_the_commit() -> None:
    clock = Clock()
    store = MemoryStore(clock)
    p = MessageProcessor(store, ProcessorConfig(task_timeout=lambda _t: 60.0), clock=clock)
    s, c = "session-" + Wire.new_id(), Wire.new_id()
    p.process_message(Wire.command("World.Request", s, c))
    clock.advance(61)
    seen: list[tuple[str, str, float, list[str]]] = []

    def on_latency(kind: str, outcome: str, seconds: float) -> None:
        committed = [f.event_type for f in store.facts()]
        seen.append((kind, outcome, seconds, committed))

    count = sample("world", "timed_out")
    m = Maintenance(
        MemoryMaintenance(store), DOMAIN_TOPIC, lambda *_: None, str, 60.0, 3600.0, on_latency
    )
    assert m.expire_tasks() == 1
    assert seen == [
        (
            "world",
            "timed_out",
            61.0,
            ["Genesis.Session.World.Requested", "Genesis.Session.AsyncTask.TimedOut"],
        )
    ]
    assert m.expire_tasks() == 0 and len(seen) == 1
    observe_command_latency(*seen[0][:3])
    assert sample("world", "timed_out") == count + 1
