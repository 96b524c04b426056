"""Worker faults through the real processes: a worker killed inside a row's transaction, a
poison row, Celery's queue lost from Redis, two workers sharing the queues, AsyncTask timeouts
and results that arrive late or for no known task."""

from __future__ import annotations

import re
import time
import uuid
from collections import Counter

import orjson
import redis
from sqlalchemy import text

from orchestrator.core.queues import WORK_QUEUES
from tests.support.harness import Proc, Record, Stack, gone, pool_children
from tests.support.helpers import wait_for

FULL_CHARACTER = ["Character.Requested", "Character.Proposed", "Character.Confirmed"]
# Celery's worker logs this line for each drain task it ran.
DRAIN_SUCCEEDED = re.compile(r"Task orchestrator\.drain(_session)?\[[^\]]+\] succeeded")


# -- helpers -----------------------------------------------------------------------------------


def log_events(proc: Proc, event: str) -> list[dict[str, object]]:
    """The JSON log lines of `proc` whose `event` is `event`."""
    found = []
    for line in proc.text().splitlines():
        if event not in line:
            continue
        try:
            doc = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if isinstance(doc, dict) and doc.get("event") == event:
            found.append(doc)
    return found


def wait_ready(*procs: Proc, timeout: float = 30.0) -> None:
    """Celery workers log `... ready.` once they consume."""
    for proc in procs:
        wait_for(
            lambda p=proc: " ready." in p.text(),
            timeout=timeout,
            message=lambda p=proc: f"{p.name} to be ready; log:\n{p.tail()}",
        )
        assert proc.alive(), proc.tail()


def facts_on_topic(stack: Stack, records: list[Record]) -> list[Record]:
    return [
        r
        for r in records
        if r.topic == stack.domain_topic
        and r.type is not None
        and r.type.startswith("Genesis.Session.")
        and r.type != "Genesis.Session.Command.Received"
    ]


def facts_by_session(stack: Stack, records: list[Record]) -> dict[str, list[str]]:
    by: dict[str, list[str]] = {}
    for r in facts_on_topic(stack, records):
        by.setdefault(r.json()["aggregate_id"], []).append(
            r.type.removeprefix("Genesis.Session.")  # type: ignore[union-attr]
        )
    return by


def assert_full_sessions_once(stack: Stack, sessions: list[str], records: list[Record]) -> None:
    """Each session's facts are exactly the whole character flow, once each, in order: in the
    database (processing order) and on Kafka (the session's key)."""
    assert {s: stack.facts(s) for s in sessions} == {s: FULL_CHARACTER for s in sessions}
    on_kafka = facts_by_session(stack, records)
    assert {s: on_kafka.get(s) for s in sessions} == {s: FULL_CHARACTER for s in sessions}


def assert_unique_ids(records: list[Record]) -> None:
    """Every message the orchestrator produced appears once (by its message_id header)."""
    ids = Counter(r.headers.get("message_id") for r in records)
    dupes = {k: n for k, n in ids.items() if n > 1}
    assert not dupes, f"published more than once: {dupes}"


def confirmed_sessions(stack: Stack) -> int:
    return int(
        stack.scalar(
            "SELECT count(DISTINCT session_id) FROM domain_events"
            " WHERE event_type = 'Genesis.Session.Character.Confirmed'"
        )
    )


def orchestrator_output(stack: Stack, records: list[Record]) -> list[Record]:
    """Records the orchestrator produced (facts, capability tasks, dead letters), not inputs."""
    return [
        r
        for r in records
        if r.topic == stack.dlq_topic
        or (r.topic != stack.capability_topic and r.type != "Genesis.Session.Command.Received")
    ]


def execute(stack: Stack, sql: str, **params: object) -> None:
    with stack.engine.begin() as conn:
        conn.execute(text(sql), params)


# -- 1. a worker killed inside a row's transaction ---------------------------------------------


def test_worker_killed_inside_the_transaction_processes_each_message_once(stack: Stack) -> None:
    # The killed child leaves its session lock behind: a short TTL lets recovery start soon.
    stack.overrides["ORCHESTRATOR_LOCK_TTL_S"] = "3"
    sessions = [str(uuid.uuid4()) for _ in range(5)]
    corr = {s: str(uuid.uuid4()) for s in sessions}
    stack.start_ingester()
    # Every pool child of this worker kills itself in its first row's transaction.
    doomed = stack.start_worker(
        "doomed", concurrency=1, ORCHESTRATOR_CRASH_AT="drain.before_commit"
    )
    wait_ready(doomed)
    children = wait_for(lambda: pool_children(doomed), message="the doomed worker's pool")
    cmd_ids = {
        s: stack.send_command(s, "Character.Request", {"name": "Ada"}, corr[s]) for s in sessions
    }
    stack.flush()

    wait_for(
        lambda: any(gone(pid) for pid in children),
        timeout=30,
        message=lambda: f"a pool child to die mid-transaction; log:\n{doomed.tail()}",
    )
    # The whole worker goes too, at once: what its children had taken is left to the re-drive.
    doomed.kill()
    crashed = {
        r[0]: r[1]
        for r in stack.rows(
            "SELECT message_id, attempts FROM inbox WHERE attempts >= 1 AND processed_at IS NULL"
        )
    }
    assert crashed, "no row counted an attempt"
    # Nothing of a killed transaction is visible.
    assert stack.scalar("SELECT count(*) FROM domain_events") == 0
    assert stack.scalar("SELECT count(*) FROM event_outbox") == 0
    assert stack.scalar("SELECT count(*) FROM inbox WHERE processed_at IS NOT NULL") == 0

    began = time.monotonic()
    healthy = stack.start_worker("healthy")
    stack.start_beat()
    stack.start_simulator("--scores", "8")
    wait_for(
        lambda: confirmed_sessions(stack) == len(sessions),
        timeout=60,
        message=lambda: f"every session confirmed ({confirmed_sessions(stack)} so far)",
    )
    stack.wait_idle()
    recovered_s = time.monotonic() - began
    records = stack.read_all()

    assert_full_sessions_once(stack, sessions, records)
    assert_unique_ids(orchestrator_output(stack, records))
    gens = [r for r in records if r.topic == stack.task_topic("character")]
    assert sorted(g.json()["data"]["session_id"] for g in gens) == sorted(sessions)
    rows = {
        r[0]: (r[1], r[2])
        for r in stack.rows(
            "SELECT message_id, attempts, outcome FROM inbox WHERE message_id = ANY(:ids)",
            ids=list(cmd_ids.values()),
        )
    }
    for message_id, before in crashed.items():
        attempts, outcome = rows[message_id]
        assert outcome == "processed"
        assert attempts >= before + 1 >= 2, (message_id, before, attempts)
    assert stack.scalar("SELECT count(*) FROM dead_letters") == 0
    redriven = {e["session_id"] for e in log_events(healthy, "orchestrator_inbox_redrive")}
    print(
        f"\nworker crash: {len(crashed)} row(s) crashed; {len(sessions)} sessions complete"
        f" {recovered_s:.1f}s after a healthy worker started ({len(redriven)} re-driven)"
    )


def test_poison_row_is_dead_lettered_and_the_session_moves_on(stack: Stack) -> None:
    stack.overrides["ORCHESTRATOR_MAX_ATTEMPTS"] = "2"
    session = str(uuid.uuid4())
    stack.start_ingester()
    poison = stack.send_command(session, "Character.Request", {"name": "Ada"})
    second = stack.send_command(session, "Stage.Validate", {"stage": "characters"})
    third = stack.send_command(session, "Character.Request", {"name": "Bob"})
    other = str(uuid.uuid4())
    bystander = stack.send_command(other, "Character.Request", {"name": "Cy"})
    stack.flush()
    wait_for(
        lambda: stack.scalar("SELECT count(*) FROM inbox WHERE triggered_at IS NOT NULL") == 4,
        timeout=30,
        message="the four commands in the inbox",
    )
    # As if two workers had already died processing it: the limit is reached.
    execute(stack, "UPDATE inbox SET attempts = 2 WHERE message_id = :m", m=poison)
    stack.start_worker()
    stack.start_beat()
    stack.wait_idle(timeout=30)

    dead = stack.rows("SELECT category, reason, message_id, session_id FROM dead_letters")
    assert [tuple(d) for d in dead] == [
        ("processing_failed", "processing failed 2 times (limit 2)", poison, session)
    ]
    inbox = {
        r[0]: (r[1], r[2]) for r in stack.rows("SELECT message_id, outcome, attempts FROM inbox")
    }
    assert inbox == {
        poison: ("dead_lettered", 3),
        second: ("processed", 1),
        third: ("processed", 1),
        bystander: ("processed", 1),
    }
    assert stack.scalar("SELECT count(*) FROM domain_events WHERE causation_id = :c", c=poison) == 0
    records = stack.read_all()
    dlq = [r for r in records if r.topic == stack.dlq_topic]
    assert len(dlq) == 1
    assert dlq[0].headers["dlq_category"] == "processing_failed"
    assert dlq[0].key == session.encode()
    assert dlq[0].json()["event_id"] == poison
    facts = facts_on_topic(stack, records)
    # The rows behind the poison one were processed, and published, in their order.
    assert [
        r[0]
        for r in stack.rows(
            "SELECT message_id FROM inbox WHERE session_id = :s ORDER BY processed_at", s=session
        )
    ] == [poison, second, third]
    assert [
        (f.json()["metadata"]["causation_id"], f.type)
        for f in facts
        if f.json()["aggregate_id"] == session
    ] == [
        (second, "Genesis.Session.Stage.ValidationRequested"),
        (third, "Genesis.Session.Character.Requested"),
    ]


# -- 2. Celery's queue lost from Redis ---------------------------------------------------------


def test_triggers_flushed_from_redis_are_recovered_by_the_redrive(stack: Stack) -> None:
    sessions = [str(uuid.uuid4()) for _ in range(20)]
    stack.start_ingester()
    for s in sessions:
        stack.send_command(s, "Character.Request", {"name": "Ada"})
    stack.flush()
    client = redis.Redis.from_url(stack.redis_url)
    try:
        wait_for(
            lambda: (
                stack.scalar("SELECT count(*) FROM inbox WHERE triggered_at IS NOT NULL")
                == len(sessions)
                and sum(client.llen(q) for q in WORK_QUEUES) >= 1
            ),
            timeout=30,
            message="every command in the inbox and a (coalesced) drain trigger in Redis",
        )
        # Redis loses everything: the triggers, kombu's bindings, locks, markers.
        client.flushdb()
        assert sum(client.llen(q) for q in WORK_QUEUES) == 0
    finally:
        client.close()

    began = time.monotonic()
    worker = stack.start_worker()
    stack.start_beat()
    stack.start_simulator("--scores", "8")
    wait_for(
        lambda: confirmed_sessions(stack) == len(sessions),
        timeout=60,
        message=lambda: f"every session confirmed ({confirmed_sessions(stack)} so far)",
    )
    recovered_s = time.monotonic() - began
    stack.wait_idle()
    records = stack.read_all()

    assert_full_sessions_once(stack, sessions, records)
    assert_unique_ids(orchestrator_output(stack, records))
    # Every session's command came back through the re-drive (nothing else knew of it).
    redriven = {e["session_id"] for e in log_events(worker, "orchestrator_inbox_redrive")}
    assert set(sessions) <= redriven
    commands = stack.rows(
        "SELECT attempts, outcome FROM inbox WHERE kind = 'command' AND session_id = ANY(:s)",
        s=sessions,
    )
    assert sorted(tuple(r) for r in commands) == [(1, "processed")] * len(sessions)
    print(f"\nflushed queue: {len(sessions)} triggers lost, all recovered in {recovered_s:.1f}s")


# -- 4. two workers on the same queues ---------------------------------------------------------


def test_two_workers_share_the_queues_without_duplicates(stack: Stack) -> None:
    sessions = [str(uuid.uuid4()) for _ in range(40)]
    corr = {s: str(uuid.uuid4()) for s in sessions}
    workers = [stack.start_worker(f"worker{i}", concurrency=2) for i in (1, 2)]
    stack.start_beat()
    stack.start_simulator("--scores", "8")
    stack.start_ingester()
    wait_ready(*workers)
    began = time.monotonic()
    for s in sessions:
        stack.send_command(s, "Character.Request", {"name": "Ada"}, corr[s])
    stack.flush()
    wait_for(
        lambda: confirmed_sessions(stack) == len(sessions),
        timeout=60,
        message=lambda: f"every session confirmed ({confirmed_sessions(stack)} so far)",
    )
    elapsed = time.monotonic() - began
    stack.wait_idle()
    records = stack.read_all()

    assert_full_sessions_once(stack, sessions, records)
    for r in facts_on_topic(stack, records):
        assert r.json()["metadata"]["correlation_id"] == corr[r.json()["aggregate_id"]]
    assert_unique_ids(orchestrator_output(stack, records))
    assert stack.scalar("SELECT count(*) FROM async_tasks WHERE status <> 'COMPLETED'") == 0
    assert stack.scalar("SELECT count(*) FROM async_tasks") == 2 * len(sessions)
    drains = [len(DRAIN_SUCCEEDED.findall(w.text())) for w in workers]
    processed = [len(log_events(w, "orchestrator_domain_event_processed")) for w in workers]
    # Batched drains take whatever is pending: how the work splits between the workers depends
    # on timing; that no effect is duplicated and each command is processed once does not.
    assert sum(drains) > 0, drains
    assert sum(processed) == len(sessions), processed
    print(
        f"\ntwo workers: {len(sessions)} sessions in {elapsed:.1f}s; drain tasks {drains},"
        f" commands processed {processed}"
    )


# -- 5. timeouts, late results and results for no known task -----------------------------------


def test_timeout_late_result_and_unknown_correlation(stack: Stack) -> None:
    stack.overrides["ORCHESTRATOR_TASK_TIMEOUT_S"] = "2"
    # The stray generation's quality review must not time out on a slow machine.
    stack.overrides["ORCHESTRATOR_TASK_TIMEOUTS"] = '{"Review.Quality": 60}'
    session, stage_corr, stray_corr = (str(uuid.uuid4()) for _ in range(3))
    reader = stack.reader()
    worker = stack.start_worker()
    stack.start_beat()
    stack.start_simulator("--scores", "8", "--silent", "Review.Consistency.CheckRequested")
    stack.start_ingester()
    stack.send_command(session, "Stage.Validate", {"stage": "characters"}, stage_corr)
    stack.flush()

    def task() -> tuple[str, str, str, str | None, object]:
        row = stack.rows(
            "SELECT id, task_type, status, error, result FROM async_tasks"
            " WHERE correlation_id = :c",
            c=stage_corr,
        )
        assert len(row) <= 1, row
        return tuple(row[0]) if row else None  # type: ignore[return-value]

    created = wait_for(task, timeout=30, message="the consistency-check task")
    began = time.monotonic()
    task_id = created[0]
    assert created[1] == "Review.Consistency.CheckRequested"
    wait_for(
        lambda: task()[2] == "FAILED",
        timeout=15,
        message=lambda: f"the task to time out; now {task()}",
    )
    timed_out_s = time.monotonic() - began
    assert task()[3] == "timeout"
    records = reader.wait(
        lambda rs: any(r.type == "Genesis.Session.AsyncTask.TimedOut" for r in rs),
        timeout=15,
        message="the TimedOut fact",
    )
    timed_out = [r for r in records if r.type == "Genesis.Session.AsyncTask.TimedOut"]
    assert len(timed_out) == 1
    body = timed_out[0].json()
    assert body["aggregate_id"] == session
    assert body["metadata"]["correlation_id"] == stage_corr
    assert {k: body["payload"][k] for k in ("task_id", "task_type", "reason")} == {
        "task_id": task_id,
        "task_type": "Review.Consistency.CheckRequested",
        "reason": "timeout",
    }

    # A late answer: the stage is still decided, the task stays FAILED with the result kept.
    stack.send_result(
        session, "Review.Consistency.Checked", stage_corr, ok=True, score=1.0, issues=[]
    )
    # An answer nobody asked for: processed as a generation, no task completed.
    stray_id = stack.send_result(
        session, "Character.Design.Generated", stray_corr, name="Zed", attempt=0, text="zed"
    )
    stack.flush()
    wait_for(
        lambda: (
            stack.scalar(
                "SELECT count(*) FROM domain_events WHERE event_type = ANY(:t)",
                t=["Genesis.Session.Stage.Confirmed", "Genesis.Session.Character.Confirmed"],
            )
            == 2
        ),
        timeout=30,
        message="Stage.Confirmed, and Character.Confirmed for the stray generation",
    )
    stack.wait_idle()
    reader.close()
    records = stack.read_all()

    late = task()
    assert late[2] == "FAILED"
    assert "timeout" in (late[3] or "")
    assert isinstance(late[4], dict) and late[4].get("ok") is True
    by_corr: dict[str, list[str]] = {}
    for r in facts_on_topic(stack, records):
        by_corr.setdefault(r.json()["metadata"]["correlation_id"], []).append(
            r.type.removeprefix("Genesis.Session.")  # type: ignore[union-attr]
        )
    assert by_corr[stage_corr] == [
        "Stage.ValidationRequested",
        "AsyncTask.TimedOut",
        "Stage.Confirmed",
    ]
    assert by_corr[stray_corr] == ["Character.Proposed", "Character.Confirmed"]
    proposed = next(
        r for r in facts_on_topic(stack, records) if r.type == "Genesis.Session.Character.Proposed"
    )
    assert proposed.json()["metadata"]["causation_id"] == stray_id
    reviews = [
        r
        for r in records
        if r.topic == stack.task_topic("review")
        and r.json()["data"]["correlation_id"] == stray_corr
    ]
    assert [r.type for r in reviews] == ["Review.Quality.EvaluationRequested"]
    # Only the review request it caused exists for the stray correlation: nothing to complete.
    assert [
        r[0]
        for r in stack.rows(
            "SELECT task_type FROM async_tasks WHERE correlation_id = :c", c=stray_corr
        )
    ] == ["Review.Quality.EvaluationRequested"]
    assert (
        stack.scalar("SELECT outcome FROM inbox WHERE message_id = :m", m=stray_id) == "processed"
    )
    assert stack.scalar("SELECT count(*) FROM dead_letters") == 0

    late_logs = log_events(worker, "orchestrator_async_task_late_result")
    assert [e["task_id"] for e in late_logs] == [task_id]
    missing = log_events(worker, "orchestrator_async_task_not_found_for_completion")
    assert [(e["correlation_id"], e["expect_task_prefix"]) for e in missing] == [
        (stray_corr, "Character.Design.Generation")
    ]
    failed_after_s = stack.scalar(
        "SELECT extract(epoch FROM completed_at - created_at) FROM async_tasks WHERE id = :i",
        i=task_id,
    )
    print(
        f"\ntimeout: task FAILED {float(failed_after_s):.1f}s after it was created (timeout 2s),"
        f" seen {timed_out_s:.1f}s after the test first saw it"
    )
