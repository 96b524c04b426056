"""The immediate relay: a worker that commits outbox rows asks for a relay run right after the
commit, so a command's effects reach Kafka in well under beat's relay tick.

Every other end-to-end test also runs beat, whose tick (0.5-1 s) publishes the outbox anyway
and hides a broken immediate relay. Here beat is not started: nothing but the worker's own
request publishes, and the bound (0.5 s from the row's commit to its delivery) is well under a
tick.
"""

from __future__ import annotations

import uuid

from tests.support.harness import Stack
from tests.support.helpers import wait_for

BOUND_S = 0.5


def sent_rows(stack: Stack, session: str) -> list[tuple[str, str, float | None]]:
    """(topic, status, seconds from the row's creation to its delivery) of a session's rows."""
    return [
        (r[0], r[1], r[2])
        for r in stack.rows(
            "SELECT topic, status, extract(epoch FROM sent_at - created_at)::float"
            " FROM event_outbox WHERE session_id = :s ORDER BY seq",
            s=session,
        )
    ]


def command_effects_sent(stack: Stack, session: str) -> list[tuple[str, str, float | None]]:
    """The fact and the capability request of a `Character.Request`, once both are SENT."""
    rows = sent_rows(stack, session)
    topics = {t for t, status, _ in rows if status == "SENT"}
    if {stack.domain_topic, stack.task_topic("character")} <= topics:
        return rows
    return []


def test_a_commands_effects_reach_kafka_without_beat(stack: Stack) -> None:
    stack.start_worker()
    stack.start_ingester()  # no beat: no relay tick, no re-drive
    reader = stack.reader()

    # A first command warms the worker up (its producer, the topics' metadata): it must get
    # through too, with nothing but the immediate relay, but its time is not bounded.
    warm = str(uuid.uuid4())
    stack.send_command(warm, "Character.Request", {"name": "Warm"})
    stack.flush()
    wait_for(
        lambda: command_effects_sent(stack, warm),
        timeout=60,
        message=lambda: f"the warm-up's outbox rows sent without beat; {sent_rows(stack, warm)}",
    )

    session = str(uuid.uuid4())
    stack.send_command(session, "Character.Request", {"name": "Ada"})
    stack.flush()
    rows = wait_for(
        lambda: command_effects_sent(stack, session),
        timeout=30,
        message=lambda: f"the outbox rows sent without beat; {sent_rows(stack, session)}",
    )
    slow = [(topic, took) for topic, _, took in rows if took is None or took > BOUND_S]
    assert not slow, f"effects published later than {BOUND_S} s after their commit: {slow}"

    # And the fact is on the domain topic for any consumer.
    reader.wait(
        lambda rs: any(
            r.topic == stack.domain_topic
            and r.type == "Genesis.Session.Character.Requested"
            and r.key == session.encode()
            for r in rs
        ),
        timeout=10,
        message="the fact on the domain topic",
    )
    reader.close()
