"""The operator CLI against a real pipeline: commands sent with `orchestrator send`, then every
operator command with --json (and its table), through real processes; unreachable services and
bad arguments give one clear line and a non-zero exit code."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from datetime import datetime
from typing import Any

from tests.support.harness import Stack
from tests.support.helpers import wait_for

CHAR_REQ = "Character.Design.GenerationRequested"
REVIEW_REQ = "Review.Quality.EvaluationRequested"
BAD_DATABASE = "postgresql+psycopg2://postgres@127.0.0.1:1/x"


def ok(done: subprocess.CompletedProcess[str]) -> Any:
    """The parsed --json output of a successful command."""
    assert done.returncode == 0, f"exit {done.returncode}: {done.stderr}"
    return json.loads(done.stdout)


def ms_apart(start: str, end: str) -> float:
    """Milliseconds between two of the commands' ISO-8601 timestamps."""
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds() * 1000


def assert_duration(ms: float, start: str, end: str) -> None:
    """A reported duration is positive and agrees with its two timestamps, which the JSON
    gives to the millisecond."""
    assert ms > 0, (ms, start, end)
    assert abs(ms - ms_apart(start, end)) <= 1.0, (ms, start, end)


def one_line_error(done: subprocess.CompletedProcess[str], code: int, *needles: str) -> str:
    assert done.returncode == code, (done.returncode, done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "Traceback" not in done.stderr and "Traceback" not in done.stdout
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def test_operator_commands_on_a_running_pipeline(stack: Stack) -> None:
    stack.start_all("--scores", "8")
    reader = stack.reader()
    session, corr = str(uuid.uuid4()), str(uuid.uuid4())

    sent = stack.cli(
        "send",
        "Character.Request",
        "--session",
        session,
        "--payload",
        '{"name": "Ada"}',
        "--user",
        "u-7",
        "--correlation-id",
        corr,
    )
    assert sent.returncode == 0, sent.stderr
    event_id = sent.stdout.strip()
    assert str(uuid.UUID(event_id)) == event_id
    poem = ok(stack.cli("send", "Poem.Request", "--session", session, "--payload", "{}", "--json"))
    assert set(poem) == {"event_id", "correlation_id", "session_id", "topic"}
    assert (poem["session_id"], poem["topic"]) == (session, stack.domain_topic)
    sonnet = stack.cli("send", "Sonnet.Request", "--session", session, "--payload", "{}")
    assert sonnet.returncode == 0, sonnet.stderr
    stack.produce(stack.domain_topic, b"not json at all", session.encode())
    stack.flush()

    wait_for(
        lambda: (
            "Character.Confirmed" in stack.facts(session)
            and stack.scalar("SELECT count(*) FROM dead_letters") == 3
        ),
        timeout=60,
        message="the character confirmed and three dead letters",
    )
    stack.wait_idle()

    # The command on the wire: the contract's envelope, keyed by session, correlation header.
    records = reader.wait(
        lambda rs: any(r.type == "Genesis.Session.Command.Received" for r in rs),
        message="the command on the domain topic",
    )
    command = next(
        r
        for r in records
        if r.topic == stack.domain_topic and r.headers.get("message_id") == event_id
    )
    body = command.json()
    assert command.key == session.encode() and command.headers["correlation_id"] == corr
    assert body["event_type"] == "Genesis.Session.Command.Received"
    assert (body["event_id"], body["aggregate_id"], body["aggregate_type"]) == (
        event_id,
        session,
        "GenesisSession",
    )
    assert body["payload"] == {
        "command_type": "Character.Request",
        "payload": {"name": "Ada"},
        "user_id": "u-7",
    }
    assert body["metadata"] == {"correlation_id": corr, "causation_id": None}
    assert body["created_at"].endswith("Z")

    # -- trace --------------------------------------------------------------------------------
    timeline = ok(stack.cli("trace", session, "--json"))
    assert all(set(e) == {"at", "kind", "type", "id", "details"} for e in timeline)
    assert [e["at"] for e in timeline] == sorted(e["at"] for e in timeline)
    inbox = [e for e in timeline if e["kind"] == "inbox"]
    assert inbox[0]["id"] == event_id and inbox[0]["type"] == "Character.Request"
    assert inbox[0]["details"]["outcome"] == "processed"
    first = inbox[0]["details"]
    assert_duration(first["processing_ms"], first["received_at"], first["processed_at"])
    assert [e["type"] for e in inbox] == [
        "Character.Request",
        "Character.Design.Generated",
        "Review.Quality.Evaluated",
    ]
    assert [e["type"] for e in timeline if e["kind"] == "fact"] == [
        "Genesis.Session.Character.Requested",
        "Genesis.Session.Character.Proposed",
        "Genesis.Session.Character.Confirmed",
    ]
    traced_tasks = [e for e in timeline if e["kind"] == "task"]
    assert [(e["type"], e["details"]["status"]) for e in traced_tasks] == [
        (CHAR_REQ, "COMPLETED"),
        (REVIEW_REQ, "COMPLETED"),
    ]
    assert all(e["details"]["duration_ms"] > 0 for e in traced_tasks)
    outbox_entries = [e for e in timeline if e["kind"] == "outbox"]
    assert len(outbox_entries) == 3 + 2 + 3  # facts, capability requests, DLQ messages
    for e in outbox_entries:
        assert e["details"]["status"] == "SENT"
        assert_duration(e["details"]["lag_ms"], e["at"], e["details"]["sent_at"])
    dead_entries = [e for e in timeline if e["kind"] == "dead_letter"]
    assert sorted(e["type"] for e in dead_entries) == [
        "not_json",
        "unknown_command",
        "unknown_command",
    ]
    table = stack.cli("trace", session)
    assert table.returncode == 0 and "Genesis.Session.Character.Confirmed" in table.stdout
    one_line_error(stack.cli("trace", "no-such-session"), 1, "nothing recorded")

    # -- tasks --------------------------------------------------------------------------------
    tasks = ok(stack.cli("tasks", "--session", session, "--json"))
    assert [t["task_type"] for t in tasks] == [REVIEW_REQ, CHAR_REQ]  # newest first
    assert all(t["status"] == "COMPLETED" and t["correlation_id"] == corr for t in tasks)
    assert all(t["duration_ms"] > 0 and t["completed_at"].endswith("Z") for t in tasks)
    assert tasks[1]["causation_id"] == event_id
    only = ok(
        stack.cli(
            "tasks", "--session", session, "--type", "Character.", "--state", "completed", "--json"
        )
    )
    assert [t["id"] for t in only] == [tasks[1]["id"]]
    assert ok(stack.cli("tasks", "--state", "PENDING", "--older-than", "1", "--json")) == []
    assert len(ok(stack.cli("tasks", "--limit", "1", "--json"))) == 1
    assert stack.cli("tasks").returncode == 0

    # -- outbox -------------------------------------------------------------------------------
    outbox = ok(stack.cli("outbox", "--status", "sent", "--json"))
    assert outbox["summary"]["pending"] == 0 and outbox["summary"]["failed"] == 0
    assert outbox["summary"]["oldest_pending_age_ms"] is None
    assert outbox["summary"]["sent"] == len(outbox["rows"]) == 8
    assert {r["kind"] for r in outbox["rows"]} == {"fact", "capability", "dead_letter"}
    for r in outbox["rows"]:
        assert r["status"] == "SENT"
        assert_duration(r["lag_ms"], r["created_at"], r["sent_at"])
    listed = stack.cli("outbox")
    assert listed.returncode == 0 and "pending 0" in listed.stdout
    one_line_error(stack.cli("outbox", "retry", "nope"), 1, "no outbox row nope")
    row = outbox["rows"][0]["id"]
    one_line_error(stack.cli("outbox", "retry", row), 1, f"outbox row {row} is SENT, not FAILED")
    retried = stack.cli("outbox", "retry", "--all-failed")
    assert retried.returncode == 0 and retried.stdout.strip() == "requeued 0 outbox row(s)"

    # -- dead letters -------------------------------------------------------------------------
    dead = ok(stack.cli("dead-letters", "list", "--json"))
    assert {d["status"] for d in dead} == {"OPEN"} and len(dead) == 3
    by_reason = {d["reason"]: d for d in dead}
    poem_dl = by_reason["unknown command type 'Poem.Request'"]
    sonnet_dl = by_reason["unknown command type 'Sonnet.Request'"]
    # The envelope parsed: the dead letter keeps the command's session and event id.
    assert (sonnet_dl["session_id"], sonnet_dl["message_id"]) == (session, sonnet.stdout.strip())
    junk = ok(stack.cli("dead-letters", "list", "--category", "not_json", "--json"))
    assert [d["category"] for d in junk] == ["not_json"]

    shown = ok(stack.cli("dead-letters", "show", poem_dl["id"], "--json"))
    assert shown["value_encoding"] == "utf-8"
    assert json.loads(shown["value"])["event_id"] == poem["event_id"]
    assert (shown["key"], shown["source_topic"]) == (session, stack.domain_topic)
    assert isinstance(shown["source_offset"], int) and shown["source_partition"] == 0
    assert {"name": "correlation_id", "value": poem["correlation_id"], "encoding": "utf-8"} in (
        shown["headers"]
    )
    assert (shown["category"], shown["status"]) == ("unknown_command", "OPEN")
    assert stack.cli("dead-letters", "show", poem_dl["id"]).returncode == 0
    assert stack.cli("dead-letters", "list").returncode == 0

    # Still unknown: dead-lettered again (the same row, still OPEN), exit 1 with the reason.
    still = stack.cli("dead-letters", "replay", sonnet_dl["id"])
    one_line_error(still, 1, "unknown_command", "Sonnet.Request")
    still_all = stack.cli("dead-letters", "replay", "--all", "--category", "not_json", "--json")
    assert still_all.returncode == 1
    assert json.loads(still_all.stdout)["still_dead"] == 1
    assert stack.scalar("SELECT count(*) FROM dead_letters WHERE status = 'OPEN'") == 3

    # Registered meanwhile (here through the configured command mapping): the replay records
    # the fact, which the relay then publishes.
    replayed = ok(
        stack.cli(
            "dead-letters",
            "replay",
            poem_dl["id"],
            "--json",
            ORCHESTRATOR_COMMAND_MAPPING='{"Poem.Request": "Poem.Requested"}',
        )
    )
    assert replayed["replayed"] is True and replayed["status"] == "REPLAYED"
    assert replayed["outcome"] == "processed" and len(replayed["fact_ids"]) == 1
    reader.wait(
        lambda rs: any(
            r.type == "Genesis.Session.Poem.Requested"
            and r.json()["metadata"]["causation_id"] == poem["event_id"]
            for r in rs
        ),
        message="the replayed command's fact on the domain topic",
    )
    reader.close()

    one_line_error(stack.cli("dead-letters", "discard", sonnet_dl["id"], "--reason", " "), 2)
    discarded = stack.cli("dead-letters", "discard", sonnet_dl["id"], "--reason", "test input")
    assert discarded.returncode == 0, discarded.stderr
    statuses = {
        d["id"]: (d["status"], d["resolution"])
        for d in ok(stack.cli("dead-letters", "list", "--json"))
    }
    assert statuses[sonnet_dl["id"]] == ("DISCARDED", "test input")
    assert statuses[poem_dl["id"]][0] == "REPLAYED"
    assert ok(stack.cli("dead-letters", "list", "--status", "open", "--json"))[0]["category"] == (
        "not_json"
    )
    one_line_error(stack.cli("dead-letters", "replay", poem_dl["id"]), 1, "is REPLAYED, not OPEN")

    # -- stats --------------------------------------------------------------------------------
    stack.wait_idle()
    stats = ok(stack.cli("stats", "--window", "600", "--json"))
    assert stats["window_s"] == 600.0
    assert stats["commands_processed"] == 2  # the character request and the replayed poem
    assert stats["facts_emitted"] == 4
    assert stats["tasks_created"] == 2 and stats["task_creation_success_rate"] == 1.0
    assert stats["end_to_end_latency"]["count"] == 1
    assert stats["end_to_end_latency"]["p50_ms"] > 0
    assert stats["task_latency"]["count"] == 2
    assert stats["errors"]["dead_letters"] == {"not_json": 1, "unknown_command": 2}
    assert stats["errors"]["outbox_failed"] == 0
    assert stats["outbox"]["pending"] == 0 and stats["inbox"]["unprocessed"] == 0
    assert stack.cli("stats").returncode == 0


def test_unreachable_services_and_bad_arguments(stack: Stack) -> None:
    for args in (
        ("tasks",),
        ("trace", "s-1"),
        ("outbox", "retry", "--all-failed"),
        ("dead-letters", "replay", "x"),
        ("stats",),
    ):
        one_line_error(stack.cli(*args, DATABASE_URL=BAD_DATABASE), 1, "database")

    one_line_error(stack.cli("tasks", "--state", "bogus"), 2, "--state")
    one_line_error(stack.cli("dead-letters", "list", "--category", "nope"), 2, "--category")
    one_line_error(stack.cli("outbox", "retry"), 2, "--all-failed")
    one_line_error(
        stack.cli("send", "Character.Request", "--session", "s", "--payload", "{oops"),
        2,
        "--payload is not valid JSON",
    )
    one_line_error(
        stack.cli("send", "Character.Request", "--session", "s", "--payload", "[1]"),
        2,
        "--payload must be a JSON object",
    )
    missing_reason = stack.cli("dead-letters", "discard", "x")
    assert missing_reason.returncode == 2 and "Traceback" not in missing_reason.stderr

    started = time.monotonic()
    down = stack.cli(
        "send",
        "Character.Request",
        "--session",
        "s",
        "--payload",
        "{}",
        "--timeout",
        "2",
        KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:1",
    )
    assert time.monotonic() - started < 20  # the --timeout holds: it does not hang
    one_line_error(down, 1, "kafka", "127.0.0.1:1")
