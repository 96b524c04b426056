"""The ingester under faults, through every real process: duplicate input, a SIGKILL at each
crash point, poison input interleaved with good input, and SIGTERM (also while PostgreSQL is
unreachable).

Each scenario checks exact counts in PostgreSQL (inbox, domain_events, event_outbox,
async_tasks, dead_letters) and on the topics (every message the orchestrator produced appears
exactly once, counted by its `message_id` header). "Everything on a topic" is read up to an end
marker the test produces after the pipeline drained, so a late extra copy cannot go unseen.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from confluent_kafka import Consumer, TopicPartition
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from orchestrator.devtools.simulator import Answer, CapabilitySimulator, SimulatorConfig
from tests.support.harness import Proc, RawTail, Stack, command, message_id
from tests.support.helpers import wait_for

CHARACTER_FACTS = ["Character.Requested", "Character.Proposed", "Character.Confirmed"]
COMMAND_TYPE = "Genesis.Session.Command.Received"


# -- reading topics --------------------------------------------------------------------------


# -- producing input -------------------------------------------------------------------------


class Sent:
    """Kafka offsets of produced test input, from the delivery reports."""

    def __init__(self) -> None:
        self.offsets: dict[str, tuple[str, int, int]] = {}  # label -> (topic, partition, offset)

    def produce(
        self,
        stack: Stack,
        label: str,
        topic: str,
        value: bytes | None,
        key: bytes | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> None:
        def on_delivery(err: Any, msg: Any) -> None:
            assert err is None, f"test input {label!r} not delivered: {err}"
            self.offsets[label] = (msg.topic(), msg.partition(), msg.offset())

        stack.producer.produce(
            topic, value=value, key=key, headers=headers or [], on_delivery=on_delivery
        )


def character_command(session: str, event_id: str | None = None, **extra: Any) -> bytes:
    doc = command(session, "Character.Request", {"name": f"Ada {session[:4]}"}, None, event_id)
    doc.update(extra)
    return orjson.dumps(doc)


def send_character_commands(stack: Stack, n: int) -> dict[str, str]:
    """n sessions, one Character.Request each; returns session -> command event id."""
    sessions: dict[str, str] = {}
    for _ in range(n):
        session, event_id = str(uuid.uuid4()), str(uuid.uuid4())
        stack.produce(stack.domain_topic, character_command(session, event_id), session.encode())
        sessions[session] = event_id
    stack.flush()
    return sessions


def confirmed_sessions(stack: Stack, sessions: Iterable[str]) -> int:
    return int(
        stack.scalar(
            "SELECT count(*) FROM domain_events WHERE event_type ="
            " 'Genesis.Session.Character.Confirmed' AND session_id = ANY(:s)",
            s=list(sessions),
        )
    )


def wait_confirmed(stack: Stack, sessions: Iterable[str], timeout: float = 45.0) -> float:
    """Seconds until every session has its Character.Confirmed fact."""
    wanted = list(sessions)
    start = time.monotonic()
    wait_for(
        lambda: confirmed_sessions(stack, wanted) == len(wanted),
        timeout=timeout,
        interval=0.05,
        message=lambda: (
            f"Character.Confirmed for {len(wanted)} sessions"
            f" (have {confirmed_sessions(stack, wanted)})"
        ),
    )
    return time.monotonic() - start


# -- the exactly-once checks -----------------------------------------------------------------


def assert_character_sessions_exactly_once(
    stack: Stack,
    sessions: dict[str, str],
    *,
    extra_inbox: int = 0,
    dead_letters: int = 0,
) -> None:
    """Every session has exactly its three facts, two completed tasks and three processed inbox
    rows; the database and the topics hold each produced message exactly once."""
    names = list(sessions)
    n = len(names)
    for session, cmd_id in sessions.items():
        assert stack.facts(session) == CHARACTER_FACTS, session
        requested = stack.scalar(
            "SELECT causation_id FROM domain_events WHERE session_id = :s"
            " AND event_type = 'Genesis.Session.Character.Requested'",
            s=session,
        )
        assert requested == cmd_id
    assert (
        stack.rows(
            "SELECT causation_id, event_type FROM domain_events"
            " GROUP BY causation_id, event_type HAVING count(*) > 1"
        )
        == []
    )
    assert stack.scalar("SELECT count(*) FROM domain_events") == 3 * n
    tasks = stack.rows(
        "SELECT task_type, status, count(*) FROM async_tasks GROUP BY 1, 2 ORDER BY 1, 2"
    )
    assert [tuple(t) for t in tasks] == [
        ("Character.Design.GenerationRequested", "COMPLETED", n),
        ("Review.Quality.EvaluationRequested", "COMPLETED", n),
    ]
    inbox = stack.rows(
        "SELECT kind, count(*), count(processed_at) FROM inbox"
        " WHERE session_id = ANY(:s) GROUP BY kind ORDER BY kind",
        s=names,
    )
    assert [tuple(r) for r in inbox] == [("capability", 2 * n, 2 * n), ("command", n, n)]
    assert stack.scalar("SELECT count(*) FROM inbox") == 3 * n + extra_inbox
    assert stack.scalar("SELECT count(*) FROM inbox WHERE processed_at IS NULL") == 0
    assert stack.scalar("SELECT count(*) FROM dead_letters") == dead_letters
    outbox = stack.rows("SELECT kind, status, count(*) FROM event_outbox GROUP BY 1, 2")
    assert all(r[1] == "SENT" for r in outbox), outbox
    assert sum(r[2] for r in outbox) == 5 * n + dead_letters

    tail = RawTail(
        stack,
        [
            stack.domain_topic,
            stack.task_topic("character"),
            stack.task_topic("review"),
            stack.dlq_topic,
        ],
    )
    try:
        tail.drain()
    finally:
        tail.close()
    fact_ids = {
        r[0]
        for r in stack.rows(
            "SELECT event_id FROM domain_events WHERE session_id = ANY(:s)", s=names
        )
    }
    facts = Counter(
        message_id(m)
        for m in tail.on(stack.domain_topic)
        if message_id(m) is not None
        and orjson.loads(m.value or b"{}").get("event_type") != COMMAND_TYPE
    )
    assert set(facts) == fact_ids
    assert [i for i, c in facts.items() if c != 1] == [], "facts published more than once"
    task_ids = {r[0] for r in stack.rows("SELECT id FROM async_tasks")}
    requests = Counter(
        message_id(m) for t in ("character", "review") for m in tail.on(stack.task_topic(t))
    )
    assert set(requests) == task_ids
    assert [i for i, c in requests.items() if c != 1] == [], "requests published more than once"
    assert len(tail.on(stack.dlq_topic)) == dead_letters


# -- 1. every input twice --------------------------------------------------------------------


def test_every_input_twice_yields_each_fact_once(stack: Stack) -> None:
    """Commands and capability results each produced twice with the same id (adjacent, so the
    copies share a batch or follow each other), then once more after the pipeline drained."""
    stack.start_worker()
    stack.start_beat()
    ingester = stack.start_ingester()

    sessions: dict[str, str] = {}
    commands: list[tuple[bytes, bytes]] = []
    for _ in range(4):
        session, event_id = str(uuid.uuid4()), str(uuid.uuid4())
        value = character_command(session, event_id)
        commands.append((value, session.encode()))
        sessions[session] = event_id
        for _copy in range(2):
            stack.produce(stack.domain_topic, value, session.encode())
    stack.flush()

    # The test is the capability service: it answers each request twice with the same result id.
    sim = CapabilitySimulator(SimulatorConfig(scores=[8.0]), stack.capability_topic)
    requests = RawTail(stack, [stack.task_topic("character"), stack.task_topic("review")])
    answers: dict[str, Answer] = {}

    def answer_all() -> bool:
        for m in requests.poll():
            request_id = message_id(m)
            if request_id is None or request_id in answers:
                continue
            a = sim.answer(m.value, m.key, 0.0)
            assert a is not None, f"no answer for {m.value!r}"
            answers[request_id] = a
            for _copy in range(2):
                stack.produce(a.topic, a.value, a.key, a.headers)
        stack.flush()
        return confirmed_sessions(stack, sessions) == len(sessions)

    try:
        wait_for(answer_all, timeout=45, interval=0.05, message="four confirmed sessions")
    finally:
        requests.close()
    stack.wait_idle()
    assert len(answers) == 2 * len(sessions)

    # A late third copy of every input, after everything was processed. The sentinels show the
    # ingester has read past them (one partition per topic): an unknown command is
    # dead-lettered, an unknown capability event is recorded as `no_handler`.
    for value, key in commands:
        stack.produce(stack.domain_topic, value, key)
    for a in answers.values():
        stack.produce(a.topic, a.value, a.key, a.headers)
    sentinel_session = str(uuid.uuid4())
    stack.send_command(sentinel_session, "Sentinel.Unknown")
    sentinel_id = stack.send_result(sentinel_session, "Unknown.Thing.Happened", str(uuid.uuid4()))
    stack.flush()
    wait_for(
        lambda: (
            stack.scalar("SELECT count(*) FROM dead_letters") == 1
            and stack.scalar(
                "SELECT outcome FROM inbox WHERE message_id = :m AND processed_at IS NOT NULL",
                m=sentinel_id,
            )
            == "no_handler"
        ),
        timeout=30,
        message="the ingester to read past the late copies",
    )
    stack.wait_idle()

    assert_character_sessions_exactly_once(stack, sessions, extra_inbox=1, dead_letters=1)
    assert stack.scalar("SELECT category FROM dead_letters") == "unknown_command"
    outcomes = stack.rows("SELECT outcome, count(*) FROM inbox GROUP BY 1 ORDER BY 1")
    assert [tuple(r) for r in outcomes] == [("no_handler", 1), ("processed", 12)]
    assert ingester.alive()


# -- 2. SIGKILL at each crash point of the ingester ------------------------------------------


@pytest.mark.parametrize(
    ("point", "beat"),
    [
        pytest.param("ingest.before_commit", True, id="before_commit"),
        pytest.param("ingest.after_commit", True, id="after_commit"),
        # Without beat no re-drive can help: the redelivery alone must trigger the rows the
        # inbox already holds unprocessed.
        pytest.param("ingest.after_commit", False, id="after_commit-redelivery-only"),
        pytest.param("ingest.after_offsets", True, id="after_offsets"),
    ],
)
def test_ingester_killed_at_crash_point_loses_and_duplicates_nothing(
    stack: Stack, point: str, beat: bool
) -> None:
    stack.start_worker()
    if beat:
        stack.start_beat()
    stack.start_simulator("--scores", "8")
    # The new member waits for the killed one to time out of the group: keep that short.
    group = {"KAFKA_SESSION_TIMEOUT_MS": "1000", "KAFKA_HEARTBEAT_INTERVAL_MS": "200"}
    sessions = send_character_commands(stack, 5)

    crashing = stack.start_ingester("ingester-crashing", ORCHESTRATOR_CRASH_AT=point, **group)
    wait_for(lambda: not crashing.alive(), timeout=30, message=f"the ingester to die at {point}")
    assert crashing.popen.returncode == -signal.SIGKILL
    recorded = stack.scalar("SELECT count(*) FROM inbox")
    if point == "ingest.before_commit":
        assert recorded == 0, "the batch was committed although the crash came before"
        assert confirmed_sessions(stack, sessions) == 0
    else:
        # Committed, but the triggers died with the process (the re-drive waits 3 s).
        assert 1 <= recorded <= len(sessions)
        assert stack.scalar("SELECT count(*) FROM inbox WHERE processed_at IS NOT NULL") == 0

    fresh = stack.start_ingester("ingester", **group)
    seconds = wait_confirmed(stack, sessions, timeout=45)
    stack.wait_idle()
    print(
        f"{point} (beat {beat}): {recorded} inbox rows at the crash,"
        f" all confirmed {seconds:.1f}s after restart"
    )

    assert_character_sessions_exactly_once(stack, sessions)
    assert fresh.alive()


# -- 3. poison input interleaved with good input ---------------------------------------------

MAX_BYTES = 2048


@dataclass(frozen=True)
class Bad:
    label: str
    topic_kind: str  # "domain" | "capability"
    value: bytes
    key: bytes | None
    headers: tuple[tuple[str, bytes | None], ...]
    category: str
    # Parsed fine by the ingester (an inbox row), refused by the handler in the worker.
    in_inbox: bool = False


def poison(session: str) -> list[Bad]:
    def cmd(**changes: Any) -> dict[str, Any]:
        doc = command(session, "Character.Request", {"name": "Ada"})
        doc.update(changes)
        return doc

    no_aggregate = cmd()
    del no_aggregate["aggregate_id"]
    no_command_type = cmd()
    del no_command_type["payload"]["command_type"]
    unknown = command(session, "Character.Teleport", {"name": "Ada"})
    nul = command(session, "Character.Request", {"name": "A\x00da"})
    too_large = command(session, "Character.Request", {"name": "x" * (MAX_BYTES + 100)})
    no_session = {
        "id": str(uuid.uuid4()),
        "ts": "2026-11-29T12:00:01Z",
        "type": "Character.Design.Generated",
        "data": {"correlation_id": str(uuid.uuid4()), "name": "Ada"},
    }
    bad_score = {
        "id": str(uuid.uuid4()),
        "ts": "2026-11-29T12:00:01Z",
        "type": "Review.Quality.Evaluated",
        "data": {
            "session_id": str(uuid.uuid4()),
            "correlation_id": str(uuid.uuid4()),
            "score": "high",
            "target_type": "character",
        },
    }
    h = (("x-origin", b"fault-test"),)
    # Repeated names keep their order, a null header value stays null.
    odd = (("x-origin", b"first"), ("x-origin", b"second"), ("x-null", None))
    return [
        Bad("not_utf8", "domain", b'{"event_id": "\xff\xfe"}', b"k-utf8", h, "not_utf8"),
        Bad("not_json", "domain", b"{this is not json", None, h, "not_json"),
        Bad("array", "domain", b'[1, 2, "three"]', b"k-array", h, "not_object"),
        Bad("shape", "domain", b'{"hello": "world"}', b"k-shape", odd, "unknown_shape"),
        Bad("no_agg", "domain", orjson.dumps(no_aggregate), b"k-agg", h, "missing_field"),
        Bad(
            "no_cmd_type",
            "domain",
            orjson.dumps(no_command_type),
            session.encode(),
            (),
            "missing_command_type",
        ),
        Bad("unknown_cmd", "domain", orjson.dumps(unknown), session.encode(), h, "unknown_command"),
        Bad("too_large", "domain", orjson.dumps(too_large), session.encode(), h, "too_large"),
        Bad("nul", "domain", orjson.dumps(nul), session.encode(), h, "nul_character"),
        Bad(
            "bad_header",
            "domain",
            orjson.dumps(cmd(event_id=str(uuid.uuid4()))),
            session.encode(),
            (("correlation_id", b"\xc3\x28-not-utf8"), ("x-origin", b"fault-test")),
            "bad_headers",
        ),
        Bad(
            "no_session",
            "capability",
            orjson.dumps(no_session),
            b"k-no-session",
            h,
            "missing_field",
        ),
        Bad("cap_not_json", "capability", b"\x01\x02 not json", b"k-cap", (), "not_json"),
        Bad(
            "score_not_a_number",
            "capability",
            orjson.dumps(bad_score),
            bad_score["data"]["session_id"].encode(),  # type: ignore[index]
            h,
            "wrong_type",
            in_inbox=True,
        ),
    ]


def test_poison_input_is_dead_lettered_and_good_input_completes(stack: Stack) -> None:
    stack.overrides["ORCHESTRATOR_MAX_MESSAGE_BYTES"] = str(MAX_BYTES)
    stack.start_worker()
    stack.start_beat()
    stack.start_simulator("--scores", "8")
    ingester = stack.start_ingester()

    sent = Sent()
    topics = {"domain": stack.domain_topic, "capability": stack.capability_topic}
    good = {str(uuid.uuid4()): str(uuid.uuid4()) for _ in range(3)}
    bad = poison(next(iter(good)))
    skipped_id, no_handler_id = str(uuid.uuid4()), str(uuid.uuid4())
    skipped = command(str(uuid.uuid4()), "unused", event_id=skipped_id)
    skipped["event_type"] = "Genesis.Session.Something.Happened"
    skipped["payload"] = {"what": "nothing to do"}
    no_handler = {
        "id": no_handler_id,
        "ts": "2026-11-29T12:00:01Z",
        "type": "Unknown.Thing.Happened",
        "data": {"session_id": str(uuid.uuid4()), "correlation_id": str(uuid.uuid4())},
    }

    good_items = list(good.items())
    for i, b in enumerate(bad):
        if i % 4 == 0 and good_items:
            session, event_id = good_items.pop(0)
            sent.produce(
                stack,
                f"good-{session}",
                stack.domain_topic,
                character_command(session, event_id),
                session.encode(),
            )
        sent.produce(stack, b.label, topics[b.topic_kind], b.value, b.key, list(b.headers))
        if i == 5:
            sent.produce(stack, "skipped", stack.domain_topic, orjson.dumps(skipped), b"k-skip")
            sent.produce(
                stack, "no_handler", stack.capability_topic, orjson.dumps(no_handler), b"k-nh"
            )
    assert not good_items
    stack.flush()
    assert len(sent.offsets) == len(bad) + len(good) + 2

    wait_confirmed(stack, good)
    wait_for(
        lambda: stack.scalar("SELECT count(*) FROM dead_letters") >= len(bad),
        timeout=20,
        message="every poison message in dead_letters",
    )
    stack.wait_idle()
    assert ingester.alive(), ingester.tail()

    rows = stack.rows(
        "SELECT id, category, reason, source_topic, source_partition, source_offset, key, value,"
        " status, session_id, message_id FROM dead_letters"
    )
    assert len(rows) == len(bad)
    by_value = {bytes(r.value): r for r in rows}
    expected = {b.value: b for b in bad}
    assert set(by_value) == set(expected)
    for value, b in expected.items():
        r = by_value[value]
        topic, partition, offset = sent.offsets[b.label]
        assert (r.category, r.source_topic, r.source_partition, r.source_offset) == (
            b.category,
            topic,
            partition,
            offset,
        ), b.label
        assert (bytes(r.key) if r.key is not None else None) == b.key, b.label
        assert r.status == "OPEN" and r.reason, b.label
        if b.in_inbox:
            doc = orjson.loads(b.value)
            assert (r.session_id, r.message_id) == (doc["data"]["session_id"], doc["id"])
            assert [
                tuple(i)
                for i in stack.rows(
                    "SELECT outcome, processed_at IS NOT NULL FROM inbox WHERE message_id = :m",
                    m=doc["id"],
                )
            ] == [("dead_lettered", True)]

    tail = RawTail(stack, [stack.dlq_topic])
    try:
        dlq = tail.drain()
    finally:
        tail.close()
    assert len(dlq) == len(bad)
    for m in dlq:
        b = expected[m.value or b""]
        r = by_value[m.value or b""]
        assert m.key == b.key, b.label
        context_names = ("correlation_id", "causation_id", "traceparent")
        own = {n: v for n, v in m.headers if not n.startswith("orig.") and n not in context_names}
        # The input's trace context, when it had one, is carried as it was in the input.
        source = (m.value or b"") + b"".join(v or b"" for _n, v in b.headers)
        for n, v in m.headers:
            if n in context_names:
                assert v and v in source, (b.label, n, v)
        assert own == {
            "dlq_category": b.category.encode(),
            "dlq_reason": r.reason.encode(),
            "source_topic": r.source_topic.encode(),
            "source_partition": str(r.source_partition).encode(),
            "source_offset": str(r.source_offset).encode(),
            "message_id": r.id.encode(),
            "type": b"DeadLetter",
        }, b.label
        orig = [(n.removeprefix("orig."), v) for n, v in m.headers if n.startswith("orig.")]
        assert orig == list(b.headers), b.label

    # Not dead letters: the skipped domain event leaves no trace, the unmatched capability
    # event is recorded and processed as `no_handler`.
    assert stack.scalar("SELECT count(*) FROM inbox WHERE message_id = :m", m=skipped_id) == 0
    assert [
        tuple(r)
        for r in stack.rows(
            "SELECT kind, message_type, outcome, processed_at IS NOT NULL FROM inbox"
            " WHERE message_id = :m",
            m=no_handler_id,
        )
    ] == [("capability", "Unknown.Thing.Happened", "no_handler", True)]
    for session in good:
        assert stack.facts(session) == CHARACTER_FACTS
    in_inbox = sum(b.in_inbox for b in bad)
    assert stack.scalar("SELECT count(*) FROM inbox") == 3 * len(good) + 1 + in_inbox
    assert stack.scalar("SELECT count(*) FROM domain_events") == 3 * len(good)
    assert ingester.alive()


# -- 4. graceful shutdown --------------------------------------------------------------------


def committed_offset(stack: Stack, topic: str) -> int:
    """The ingester group's committed position on a topic (no group join: OffsetFetch only)."""
    consumer = Consumer(
        {
            "bootstrap.servers": stack.bootstrap,
            "group.id": f"orch-{stack.suffix}",
            "enable.auto.commit": False,
        }
    )
    try:
        (tp,) = consumer.committed([TopicPartition(topic, 0)], timeout=10)
        return int(tp.offset)
    finally:
        consumer.close()


def sigterm(proc: Proc, timeout: float = 10.0) -> tuple[int, float]:
    start = time.monotonic()
    os.kill(proc.pid, signal.SIGTERM)
    rc = proc.popen.wait(timeout)
    return rc, time.monotonic() - start


def test_sigterm_stops_the_ingester_cleanly_and_a_new_one_resumes(stack: Stack) -> None:
    stack.start_worker()
    stack.start_beat()
    stack.start_simulator("--scores", "8")
    first = stack.start_ingester("ingester-1")

    sent = Sent()
    before: dict[str, str] = {}
    for _ in range(3):
        session, event_id = str(uuid.uuid4()), str(uuid.uuid4())
        sent.produce(
            stack,
            session,
            stack.domain_topic,
            character_command(session, event_id),
            session.encode(),
        )
        before[session] = event_id
    stack.flush()
    wait_confirmed(stack, before)

    # More commands right before the signal: the ingester may be in the middle of them.
    during = send_character_commands(stack, 3)
    rc, seconds = sigterm(first)
    assert rc == 0, first.tail()
    assert seconds < 15, f"SIGTERM took {seconds:.1f}s"
    assert "orchestrator_ingester_stopped" in first.log.read_text(errors="replace")
    last_before = max(sent.offsets[s][2] for s in before)
    assert committed_offset(stack, stack.domain_topic) > last_before

    # Produced while no ingester runs: a new member of the same group picks them up.
    after = send_character_commands(stack, 3)
    second = stack.start_ingester("ingester-2")
    recovery = wait_confirmed(stack, [*during, *after])
    stack.wait_idle()
    print(
        f"SIGTERM -> exit in {seconds:.2f}s; new ingester completed 6 sessions in {recovery:.1f}s"
    )

    assert_character_sessions_exactly_once(stack, {**before, **during, **after})
    assert second.alive()


def set_connections_allowed(stack: Stack, allowed: bool) -> None:
    """Open or close the stack's database to new sessions (and end the current ones)."""
    url = make_url(stack.database_url)
    name = url.database
    assert name is not None and name.startswith("orch_test_")
    admin = create_engine(
        url.set(database="postgres"), poolclass=NullPool, isolation_level="AUTOCOMMIT"
    )
    try:
        with admin.connect() as conn:
            conn.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {str(allowed).lower()}'))
            if not allowed:
                conn.execute(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                        " WHERE datname = :n AND pid <> pg_backend_pid()"
                    ),
                    {"n": name},
                )
    finally:
        admin.dispose()


def test_sigterm_stops_the_ingester_while_the_database_is_down(stack: Stack) -> None:
    stack.start_worker()
    stack.start_beat()
    stack.start_simulator("--scores", "8")
    first = stack.start_ingester("ingester-1")
    before = send_character_commands(stack, 1)
    wait_confirmed(stack, before)

    set_connections_allowed(stack, False)
    try:
        during = send_character_commands(stack, 2)
        wait_for(
            lambda: "orchestrator_inbox_unavailable" in first.log.read_text(errors="replace"),
            timeout=20,
            message="the ingester to find the database unavailable",
        )
        start = time.monotonic()
        os.kill(first.pid, signal.SIGTERM)
        try:
            rc = first.popen.wait(15)
        except subprocess.TimeoutExpired:
            rc = None
        seconds = time.monotonic() - start
    finally:
        set_connections_allowed(stack, True)
    # Its batch was never recorded, so its offsets were not stored: a new member gets it again.
    assert rc == 0, f"SIGTERM with the database down: rc {rc} after {seconds:.1f}s"
    assert "orchestrator_ingester_stopped" in first.log.read_text(errors="replace")

    second = stack.start_ingester("ingester-2")
    wait_confirmed(stack, during)
    stack.wait_idle()
    assert_character_sessions_exactly_once(stack, {**before, **during})
    assert second.alive()
