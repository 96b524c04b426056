"""Beat's periodic work on a real PostgreSQL: inbox re-drive, AsyncTask timeouts, retention."""

from __future__ import annotations

from typing import Any

import orjson
from sqlalchemy import Engine

from orchestrator.adapters.postgres.backlog import PgBacklog
from orchestrator.adapters.postgres.maintenance import PgMaintenance
from orchestrator.core import ids
from orchestrator.core.queues import CAPABILITY_QUEUE, DOMAIN_QUEUE
from orchestrator.service.maintenance import Maintenance
from tests.support.db import CAPABILITY_TOPIC, DOMAIN_TOPIC, EMPTY_COUNTS, Db

TIMED_OUT = "Genesis.Session.AsyncTask.TimedOut"
QUEUES = {DOMAIN_TOPIC: DOMAIN_QUEUE, CAPABILITY_TOPIC: CAPABILITY_QUEUE}


def make_maintenance(
    engine: Engine, triggered: list[tuple[str, str]] | None = None, **overrides: Any
) -> Maintenance:
    calls = triggered if triggered is not None else []
    options: dict[str, Any] = {"redrive_after_s": 30.0, "retention_s": 3600.0}
    options.update(overrides)
    return Maintenance(
        PgMaintenance(engine),
        DOMAIN_TOPIC,
        lambda session_id, queue: calls.append((session_id, queue)),
        QUEUES.__getitem__,
        **options,
    )


def add_inbox(
    db: Db,
    session_id: str,
    message_id: str,
    *,
    topic: str = DOMAIN_TOPIC,
    triggered: str | None = "2 minutes",
    received: str = "2 minutes",
    processed: str | None = None,
    attempts: int = 0,
) -> int:
    """One inbox row, aged with SQL interval arithmetic."""
    return int(
        db.scalar(
            "INSERT INTO inbox (topic, message_id, kind, message_type, session_id, value,"
            " received_at, triggered_at, processed_at, outcome, attempts) VALUES (:topic, :mid,"
            " 'command', 'Character.Request', :sid, '\\x7b7d'::bytea,"
            " now() - CAST(:received AS interval),"
            " now() - CAST(:triggered AS interval), now() - CAST(:processed AS interval),"
            " CASE WHEN CAST(:processed AS interval) IS NOT NULL THEN 'processed' END, :attempts)"
            " RETURNING id",
            topic=topic,
            mid=message_id,
            sid=session_id,
            received=received,
            triggered=triggered,
            processed=processed,
            attempts=attempts,
        )
    )


def test_redrive_triggers_each_sessions_oldest_stale_row(engine: Engine, db: Db) -> None:
    # s-a: two stale unprocessed rows; only the head is re-driven (the drain does the rest).
    a1 = add_inbox(db, "s-a", "a-1")
    a2 = add_inbox(db, "s-a", "a-2")
    # s-b: the processed row does not count; its oldest unprocessed row is on the capability topic.
    add_inbox(db, "s-b", "b-1", processed="3 minutes", triggered="5 minutes")
    b2 = add_inbox(db, "s-b", "b-2", topic=CAPABILITY_TOPIC)
    # s-c: triggered recently: left alone.
    add_inbox(db, "s-c", "c-1", triggered="5 seconds")
    # s-d: never triggered (its trigger was lost before being recorded): received long ago.
    d1 = add_inbox(db, "s-d", "d-1", triggered=None, received="2 minutes")
    # s-e: never triggered and only just received.
    add_inbox(db, "s-e", "e-1", triggered=None, received="1 second")
    # s-f: a fresh head does not let a stale row behind it be re-driven.
    add_inbox(db, "s-f", "f-1", triggered="1 second")
    add_inbox(db, "s-f", "f-2", triggered="10 minutes")

    calls: list[tuple[str, str]] = []
    maintenance = make_maintenance(engine, calls)
    before = db.scalar("SELECT now()")
    assert maintenance.redrive() == 3
    assert sorted(calls) == [
        ("s-a", "orchestrator.domain"),
        ("s-b", "orchestrator.capability"),
        ("s-d", "orchestrator.domain"),
    ]
    redriven = {r["id"] for r in db.all("SELECT id FROM inbox WHERE triggered_at >= :t", t=before)}
    assert redriven == {a1, b2, d1}
    assert db.one("SELECT attempts, processed_at FROM inbox WHERE id = :id", id=a2) == {
        "attempts": 0,
        "processed_at": None,
    }
    assert db.scalar("SELECT sum(attempts) FROM inbox") == 0  # re-drive never counts attempts

    # Just re-triggered: nothing is due on the next tick.
    calls.clear()
    assert maintenance.redrive() == 0
    assert calls == []


def test_redrive_backs_off_with_attempts(engine: Engine, db: Db) -> None:
    """A head row is due after redrive_after_s * 2**attempts (capped at 2**6)."""

    def add(session: str, attempts: int, ago: str) -> None:
        # Triggered on arrival: only the attempts count.
        add_inbox(db, session, f"m-{session}", attempts=attempts, triggered=ago, received=ago)

    add("s-0", 0, "40 seconds")  # 30 s: due
    add("s-1", 1, "40 seconds")  # 60 s: not yet
    add("s-2", 2, "130 seconds")  # 120 s: due
    add("s-3", 3, "230 seconds")  # 240 s: not yet
    add("s-9", 9, "1930 seconds")  # capped 1920 s: due
    add("s-8", 8, "1900 seconds")  # capped 1920 s: not yet
    calls: list[tuple[str, str]] = []
    assert make_maintenance(engine, calls).redrive() == 3
    assert sorted(s for s, _q in calls) == ["s-0", "s-2", "s-9"]


def test_redrive_backs_off_with_its_own_redrives(engine: Engine, db: Db) -> None:
    """A row waits at least as long as it had waited when last triggered (capped at 8 x 30 s),
    so a row the workers have not reached yet is re-driven at 30, 60, 120, 240 s from its
    arrival, then every 240 s, not every 30 s."""
    cases = {
        # session: (received ago, last triggered ago, due?)
        "on-arrival": ("40 seconds", "40 seconds", True),  # waited 0 s when triggered: 30 s
        "once-early": ("50 seconds", "20 seconds", False),  # waited 30 s: 30 s, 20 s so far
        "twice-early": ("130 seconds", "50 seconds", False),  # waited 80 s: 80 s, 50 s so far
        "twice-due": ("130 seconds", "90 seconds", True),  # waited 40 s: 40 s, 90 s so far
        "capped-early": ("3 hours", "230 seconds", False),  # capped at 240 s
        "capped-due": ("3 hours", "250 seconds", True),
        "never-triggered": ("40 seconds", None, True),  # its trigger was lost before recorded
    }
    for session, (received, triggered, _due) in cases.items():
        add_inbox(db, session, f"m-{session}", received=received, triggered=triggered)
    calls: list[tuple[str, str]] = []
    assert make_maintenance(engine, calls).redrive() == 4
    assert sorted(s for s, _q in calls) == sorted(s for s, c in cases.items() if c[2])


def add_task(db: Db, task_id: str, status: str, deadline: str | None, version: int = 1) -> None:
    db.exec(
        "INSERT INTO async_tasks (id, task_type, correlation_id, session_id, causation_id, status,"
        " version, deadline_at, error) VALUES (:id, 'Character.Design.GenerationRequested',"
        " :cid, :sid, 'cause', :status, :version, now() + CAST(:deadline AS interval),"
        " CASE WHEN :status = 'FAILED' THEN 'generator crashed' END)",
        id=task_id,
        cid=f"c-{task_id}",
        sid=f"s-{task_id}",
        status=status,
        version=version,
        deadline=deadline,
    )


def test_expire_tasks_fails_overdue_tasks_once_with_a_fact_each(engine: Engine, db: Db) -> None:
    add_task(db, "pending-late", "PENDING", "-1 minute")
    add_task(db, "running-late", "RUNNING", "-1 second", version=2)
    add_task(db, "pending-ok", "PENDING", "1 minute")
    add_task(db, "no-deadline", "PENDING", None)
    add_task(db, "completed-late", "COMPLETED", "-1 hour", version=2)
    add_task(db, "failed-late", "FAILED", "-1 hour", version=2)
    maintenance = make_maintenance(engine)

    assert maintenance.expire_tasks() == 2
    tasks = {
        r["id"]: (r["status"], r["error"], r["version"], r["completed_at"] is not None)
        for r in db.tasks()
    }
    assert tasks == {
        "pending-late": ("FAILED", "timeout", 2, True),
        "running-late": ("FAILED", "timeout", 3, True),
        "pending-ok": ("PENDING", None, 1, False),
        "no-deadline": ("PENDING", None, 1, False),
        "completed-late": ("COMPLETED", None, 2, False),
        "failed-late": ("FAILED", "generator crashed", 2, False),
    }

    facts = sorted(db.facts(), key=lambda f: f["causation_id"])
    assert facts == [
        {
            "event_id": ids.derive(task_id, "fact", TIMED_OUT),
            "event_type": TIMED_OUT,
            "aggregate_type": "GenesisSession",
            "session_id": f"s-{task_id}",
            "correlation_id": f"c-{task_id}",
            "causation_id": task_id,
            "payload": {
                "session_id": f"s-{task_id}",
                "task_id": task_id,
                "task_type": "Character.Design.GenerationRequested",
                "correlation_id": f"c-{task_id}",
                "reason": "timeout",
            },
        }
        for task_id in ("pending-late", "running-late")
    ]
    outbox = sorted(db.outbox(), key=lambda r: r["id"])
    assert [
        (r["id"], r["kind"], r["topic"], r["message_type"], r["key"], r["status"]) for r in outbox
    ] == sorted(
        (f["event_id"], "fact", DOMAIN_TOPIC, TIMED_OUT, f["session_id"].encode(), "PENDING")
        for f in facts
    )
    for row in outbox:
        envelope = orjson.loads(row["payload"])
        fact = next(f for f in facts if f["event_id"] == row["id"])
        assert envelope["event_id"] == fact["event_id"]
        assert envelope["payload"] == fact["payload"]
        assert envelope["metadata"] == {
            "correlation_id": fact["correlation_id"],
            "causation_id": fact["causation_id"],
        }
        headers = dict(row["headers"])
        assert (headers["message_id"], headers["causation_id"], headers["type"]) == (
            fact["event_id"].encode(),
            fact["causation_id"].encode(),
            TIMED_OUT.encode(),
        )

    # Safe to run twice (beat may run twice): nothing more to expire, nothing written.
    counts = db.counts()
    assert maintenance.expire_tasks() == 0
    assert (
        db.counts()
        == counts
        == {
            **EMPTY_COUNTS,
            "async_tasks": 6,
            "domain_events": 2,
            "event_outbox": 2,
        }
    )


def test_expire_tasks_respects_the_limit(engine: Engine, db: Db) -> None:
    for n in range(5):
        add_task(db, f"t-{n}", "PENDING", f"-{10 - n} minutes")
    maintenance = make_maintenance(engine)
    assert maintenance.expire_tasks(limit=2) == 2
    # The most overdue go first.
    assert [t["id"] for t in db.tasks() if t["status"] == "FAILED"] == ["t-0", "t-1"]
    assert maintenance.expire_tasks(limit=2) == 2
    assert maintenance.expire_tasks(limit=2) == 1
    assert maintenance.expire_tasks(limit=2) == 0
    assert db.counts()["domain_events"] == 5


def add_outbox(db: Db, row_id: str, status: str, sent: str | None, created: str) -> None:
    db.exec(
        "INSERT INTO event_outbox (id, kind, message_type, topic, key, payload, status, sent_at,"
        " created_at) VALUES (:id, 'fact', 'T', :topic, 'k', '\\x7b7d'::bytea, :status,"
        " now() - CAST(:sent AS interval), now() - CAST(:created AS interval))",
        id=row_id,
        topic=DOMAIN_TOPIC,
        status=status,
        sent=sent,
        created=created,
    )


def test_prune_deletes_only_old_sent_outbox_and_old_processed_inbox(engine: Engine, db: Db) -> None:
    add_outbox(db, "sent-old", "SENT", "2 hours", "2 hours")
    add_outbox(db, "sent-recent", "SENT", "10 minutes", "2 hours")
    add_outbox(db, "pending-old", "PENDING", None, "3 hours")
    add_outbox(db, "failed-old", "FAILED", None, "3 hours")
    add_inbox(db, "s-1", "processed-old", processed="2 hours", received="3 hours")
    add_inbox(db, "s-1", "processed-recent", processed="10 minutes", received="3 hours")
    add_inbox(db, "s-2", "unprocessed-old", received="3 hours", triggered="3 hours")
    maintenance = make_maintenance(engine, retention_s=3600.0)

    assert maintenance.prune() == (1, 1)
    assert sorted(r["id"] for r in db.outbox()) == ["failed-old", "pending-old", "sent-recent"]
    assert sorted(r["message_id"] for r in db.inbox()) == ["processed-recent", "unprocessed-old"]
    assert maintenance.prune() == (0, 0)


def test_prune_works_in_slices(engine: Engine, db: Db) -> None:
    for n in range(5):
        add_outbox(db, f"sent-{n}", "SENT", "2 hours", "2 hours")
        add_inbox(db, "s", f"done-{n}", processed="2 hours", received="2 hours")
    maintenance = make_maintenance(engine)
    assert maintenance.prune(limit=2) == (2, 2)
    assert maintenance.prune(limit=2) == (2, 2)
    assert maintenance.prune(limit=2) == (1, 1)
    assert maintenance.prune(limit=2) == (0, 0)
    assert db.counts()["event_outbox"] == db.counts()["inbox"] == 0


def test_backlog_counts_waiting_rows_and_ages_the_oldest(engine: Engine, db: Db) -> None:
    """Read at scrape time for the metrics gauges (`orchestrator_outbox_pending`, ...)."""
    assert PgBacklog(engine)() == (0.0, 0.0, 0.0, 0.0, 0.0)
    add_outbox(db, "pending-old", "PENDING", None, "2 minutes")
    add_outbox(db, "pending-new", "PENDING", None, "1 second")
    add_outbox(db, "failed", "FAILED", None, "1 hour")
    add_outbox(db, "sent", "SENT", "1 minute", "1 hour")
    add_inbox(db, "s-1", "waiting", received="30 seconds")
    add_inbox(db, "s-2", "done", processed="1 minute", received="1 hour")
    pending, lag, failed, backlog, oldest = PgBacklog(engine)()
    assert (pending, failed, backlog) == (2.0, 1.0, 1.0)
    assert 120.0 <= lag < 130.0
    assert 30.0 <= oldest < 40.0
