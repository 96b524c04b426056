"""End-to-end latency on PostgreSQL: a command's inbox arrival -> its outcome fact, on the
database's clock, through the processor and through beat's timeout sweep, into the histogram.
The in-memory twin (and the label rules) is `tests/unit/test_command_latency.py`."""

from __future__ import annotations

from prometheus_client import REGISTRY
from sqlalchemy import Engine

from orchestrator.adapters.postgres.maintenance import PgMaintenance
from orchestrator.adapters.postgres.store import SqlStore
from orchestrator.observability.metrics import observe_command_latency, record_outcome
from orchestrator.service.maintenance import Maintenance
from orchestrator.service.process_message import MessageProcessor
from tests.support.db import DOMAIN_TOPIC, FIXED_NOW, Db, Wire

METRIC = "orchestrator_command_latency_seconds"


def sample(kind: str, outcome: str, what: str = "count") -> float:
    value = REGISTRY.get_sample_value(f"{METRIC}_{what}", {"kind": kind, "outcome": outcome})
    return value or 0.0


def arrived_ago(db: Db, message_id: str, seconds: int) -> None:
    db.exec(
        "UPDATE inbox SET received_at = now() - make_interval(secs => :s) WHERE message_id = :m",
        s=seconds,
        m=message_id,
    )


def test_a_confirmed_session_is_observed_from_its_commands_arrival(
    store: SqlStore, db: Db, wire: type[Wire]
) -> None:
    agent = MessageProcessor(store, clock=lambda: FIXED_NOW)
    s, c = "session-" + wire.new_id(), wire.new_id()
    cmd = wire.command("Plot.Request", s, c)
    agent.process_message(cmd)
    arrived_ago(db, wire.message_id(cmd), 42)
    agent.process_message(wire.capability("Plot.Structure.Generated", s, c, beats=3))
    count, total = sample("plot", "confirmed"), sample("plot", "confirmed", "sum")
    out = agent.process_message(
        wire.capability("Review.Quality.Evaluated", s, c, target_type="plot", score=8.0)
    )
    [(kind, outcome, seconds)] = out.command_latency
    assert (kind, outcome) == ("plot", "confirmed") and 42 <= seconds < 52
    record_outcome(out)
    assert sample("plot", "confirmed") == count + 1
    assert 42 <= sample("plot", "confirmed", "sum") - total < 52


def test_a_timeout_is_observed_by_beats_sweep(
    store: SqlStore, engine: Engine, db: Db, wire: type[Wire]
) -> None:
    agent = MessageProcessor(store, clock=lambda: FIXED_NOW)
    s, c = "session-" + wire.new_id(), wire.new_id()
    cmd = wire.command("Seed.Request", s, c)
    agent.process_message(cmd)
    arrived_ago(db, wire.message_id(cmd), 120)
    db.exec("UPDATE async_tasks SET deadline_at = now() - interval '1 minute'")
    count = sample("seed", "timed_out")
    maintenance = Maintenance(
        PgMaintenance(engine),
        DOMAIN_TOPIC,
        lambda _s, _q: None,
        lambda _t: "q",
        60.0,
        3600.0,
        on_latency=observe_command_latency,
    )
    assert maintenance.expire_tasks() == 1
    assert sample("seed", "timed_out") == count + 1
    assert maintenance.expire_tasks() == 0
    assert sample("seed", "timed_out") == count + 1
