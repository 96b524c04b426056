"""The whole bad-input corpus through the real pipeline, interleaved with good commands.

Every bad input is a dead letter with its category and is on the DLQ topic; every good command
completes; no process died; every consumed message is accounted for (inbox, skipped, dead
letter) and the ingester's committed offsets reached the end of both topics; `verify` holds.
"""

from __future__ import annotations

import uuid

from confluent_kafka import Consumer, TopicPartition

from orchestrator.core.classify import Kind, classify
from orchestrator.core.command_strategies import default_registry
from orchestrator.core.errors import InvalidInput
from orchestrator.core.inbound import RawMessage
from orchestrator.core.outbound import inbox_dead_letter_id, raw_dead_letter_id
from orchestrator.devtools.verify import ExpectedInput, verify
from tests.support.bad_input import CORPUS, MAX_BYTES, PLAN, BadInput
from tests.support.harness import RawTail, Stack, header
from tests.support.helpers import wait_for

GOOD_COMMANDS = 20
SESSIONS = 10


def committed(stack: Stack, topics: list[str]) -> dict[str, int]:
    consumer = Consumer({"bootstrap.servers": stack.bootstrap, "group.id": f"orch-{stack.suffix}"})
    try:
        parts = consumer.committed([TopicPartition(t, 0) for t in topics], timeout=10)
        return {tp.topic: int(tp.offset) for tp in parts}
    finally:
        consumer.close()


def expected_dead_letter_id(item: BadInput, raw: RawMessage) -> str:
    if item.stage == PLAN:
        assert item.message_id is not None
        return inbox_dead_letter_id(raw.topic, item.message_id, item.category.value)
    return raw_dead_letter_id(raw)


def test_corpus_through_the_pipeline(stack: Stack) -> None:
    stack.overrides["ORCHESTRATOR_MAX_MESSAGE_BYTES"] = str(MAX_BYTES)
    stack.start_all("--scores", "8")
    raws = {item.name: item.raw(stack.domain_topic, stack.capability_topic) for item in CORPUS}

    sessions = [str(uuid.uuid4()) for _ in range(SESSIONS)]
    good: dict[str, str] = {}  # command event id -> correlation id
    every = max(1, len(CORPUS) // GOOD_COMMANDS)
    for i, item in enumerate(CORPUS):
        if i % every == 0 and len(good) < GOOD_COMMANDS:
            session, corr = sessions[len(good) % SESSIONS], str(uuid.uuid4())
            good[stack.send_command(session, "Character.Request", {"n": i}, corr)] = corr
        raw = raws[item.name]
        stack.produce(raw.topic, raw.value, raw.key, list(raw.headers))  # type: ignore[arg-type]
    while len(good) < GOOD_COMMANDS:
        session, corr = sessions[len(good) % SESSIONS], str(uuid.uuid4())
        good[stack.send_command(session, "Character.Request", {"n": "last"}, corr)] = corr
    stack.flush()

    def confirmed() -> int:
        return int(
            stack.scalar(
                "SELECT count(DISTINCT correlation_id) FROM domain_events WHERE event_type ="
                " 'Genesis.Session.Character.Confirmed' AND correlation_id = ANY(:c)",
                c=list(good.values()),
            )
        )

    wait_for(
        lambda: confirmed() == GOOD_COMMANDS,
        timeout=90,
        message=lambda: f"{GOOD_COMMANDS} Character.Confirmed (have {confirmed()})",
    )
    wait_for(
        lambda: stack.scalar("SELECT count(*) FROM dead_letters") >= len(CORPUS),
        timeout=30,
        message=lambda: (
            f"{len(CORPUS)} dead letters (have {stack.scalar('SELECT count(*) FROM dead_letters')})"
        ),
    )
    stack.wait_idle()

    # -- every bad input is a dead letter with its category -----------------------------------
    rows = {
        r.id: r
        for r in stack.rows(
            "SELECT id, category, source_topic, key, value, message_id FROM dead_letters"
        )
    }
    assert len(rows) == len(CORPUS), sorted(r.category for r in rows.values())
    for item in CORPUS:
        raw = raws[item.name]
        dead_id = expected_dead_letter_id(item, raw)
        assert dead_id in rows, f"{item.name}: no dead letter"
        row = rows[dead_id]
        assert row.category == item.category.value, item.name
        assert bytes(row.value or b"") == (raw.value or b""), item.name
        assert (bytes(row.key) if row.key is not None else None) == raw.key, item.name

    # -- ... and on the DLQ topic, as the original bytes with its category --------------------
    tail = RawTail(stack, [stack.domain_topic, stack.capability_topic, stack.dlq_topic])
    try:
        messages = tail.drain()
    finally:
        tail.close()
    dlq = {
        (header(m, "message_id") or b"").decode(): m for m in messages if m.topic == stack.dlq_topic
    }
    assert set(dlq) == set(rows), "DLQ topic and dead_letters differ"
    for item in CORPUS:
        raw = raws[item.name]
        m = dlq[expected_dead_letter_id(item, raw)]
        assert header(m, "dlq_category") == item.category.value.encode(), item.name
        assert (m.value or b"") == (raw.value or b""), item.name
        assert m.key == raw.key, item.name
        orig = [(n.removeprefix("orig."), v) for n, v in m.headers if n.startswith("orig.")]
        assert orig == list(raw.headers), item.name

    # -- every good command completed ----------------------------------------------------------
    assert confirmed() == GOOD_COMMANDS

    # -- no process died -----------------------------------------------------------------------
    for proc in stack.procs:
        assert proc.alive(), f"{proc.name} died:\n{proc.tail()}"

    # -- no partition blocked: every consumed message is accounted for ------------------------
    commands = default_registry()
    inbox = {(r.topic, r.message_id) for r in stack.rows("SELECT topic, message_id FROM inbox")}
    accounted = {"inbox": 0, "skipped": 0, "dead": 0}
    for m in messages:
        if m.topic == stack.dlq_topic:
            continue
        try:
            c = classify(m, commands, MAX_BYTES)
        except InvalidInput:
            assert raw_dead_letter_id(m) in rows, f"unaccounted input at {m.offset}"
            accounted["dead"] += 1
            continue
        if c.kind is Kind.SKIP:
            accounted["skipped"] += 1
        else:
            assert (m.topic, c.message_id) in inbox, f"{c.message_type} not in the inbox"
            accounted["inbox"] += 1
    plan_items = sum(1 for i in CORPUS if i.stage == PLAN)
    assert accounted["dead"] == len(CORPUS) - plan_items
    assert accounted["skipped"] >= GOOD_COMMANDS * 3  # Requested, Proposed, Confirmed each
    consumed = [m for m in messages if m.topic != stack.dlq_topic]
    assert sum(accounted.values()) == len(consumed)
    ends = {
        t: tail.last_fence[t] + 1 for t in (stack.domain_topic, stack.capability_topic)
    }  # the fences are consumed too
    wait_for(
        lambda: committed(stack, list(ends)) == ends,
        timeout=20,
        message=lambda: f"committed offsets {committed(stack, list(ends))} to reach {ends}",
    )

    # -- the invariants ------------------------------------------------------------------------
    expected = [
        ExpectedInput.invalid(raws[i.name], i.category, message_id=i.message_id) for i in CORPUS
    ] + [ExpectedInput.command(event_id) for event_id in good]
    report = verify(stack.engine, expected)
    assert report.ok, report.text()
    everything = verify(stack.engine)
    assert everything.ok, everything.text()
    assert everything.counts.dead_letters == len(CORPUS)
    for proc in stack.procs:
        assert "Traceback" not in proc.log.read_text(errors="replace"), proc.tail()
