"""Generated input, valid and mutated: `classify` only ever refuses with `InvalidInput` and a
known category; `MessageProcessor.process_message` on a real database never raises, every input
ends processed, ignored or dead-lettered, and the database stays consistent per `verify`."""

from __future__ import annotations

import copy
import uuid
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, text

from orchestrator.adapters.postgres.engine import make_engine
from orchestrator.adapters.postgres.store import SqlStore
from orchestrator.core.classify import Kind, classify
from orchestrator.core.command_strategies import default_registry
from orchestrator.core.errors import Category, InvalidInput
from orchestrator.core.inbound import RawMessage
from orchestrator.core.records import Status
from orchestrator.devtools.verify import verify
from orchestrator.service.process_message import MessageProcessor, ProcessorConfig
from tests.support.helpers import DatabaseFactory

DOMAIN_TOPIC = "genesis.domain.events"
CAPABILITY_TOPIC = "genesis.capability.events"
CAP = 16 * 1024
COMMANDS = default_registry()
COMMAND_TYPES = sorted(COMMANDS.aliases())
RESULT_TYPES = [
    "Character.Design.Generated",
    "Theme.Generated",
    "Outliner.Concept.Generated",
    "Worldbuilder.World.Generated",
    "Plot.Generated",
    "Writer.Content.Generated",
    "Review.Quality.Evaluated",
    "Review.Quality.Result",
    "Review.Consistency.Checked",
    "Consistency.Checked",
    "Custom.Process.Completed",  # no handler: recorded and ignored
]
TARGET_TYPES = ["character", "theme", "seed", "world", "plot", "details", "content", "stage"]
SESSIONS = [str(uuid.UUID(int=n)) for n in range(1, 6)]
HEADER_NAMES = ["correlation_id", "correlation-id", "type", "traceparent", "message_id", "x-other"]

# -- strategies -------------------------------------------------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)
ids = st.uuids().map(str)


@st.composite
def commands(
    draw: st.DrawFn, event_type: str = "Genesis.Session.Command.Received"
) -> dict[str, Any]:
    return {
        "event_id": draw(ids),
        "event_type": event_type,
        "aggregate_type": "GenesisSession",
        "aggregate_id": draw(st.sampled_from(SESSIONS)),
        "payload": {
            "command_type": draw(st.sampled_from(COMMAND_TYPES)),
            "user_id": draw(st.none() | st.text(max_size=8)),
            "payload": draw(st.dictionaries(st.text(max_size=6), json_values, max_size=3)),
        },
        "metadata": {"correlation_id": draw(ids), "causation_id": None},
        "created_at": "2026-11-29T12:00:00Z",
    }


@st.composite
def results(draw: st.DrawFn) -> dict[str, Any]:
    data: dict[str, Any] = {
        "session_id": draw(st.sampled_from(SESSIONS)),
        "correlation_id": draw(ids),
    }
    msg_type = draw(st.sampled_from(RESULT_TYPES))
    if msg_type.startswith("Review.Quality") or msg_type.endswith("Review.Quality.Result"):
        data["score"] = draw(st.floats(min_value=0, max_value=10))
        data["target_type"] = draw(st.sampled_from(TARGET_TYPES))
        if draw(st.booleans()):
            data["attempts"] = draw(st.integers(min_value=0, max_value=4))
    elif "Consistency" in msg_type:
        data["ok"] = draw(st.booleans())
    else:
        data["content"] = draw(json_values)
    return {"id": draw(ids), "ts": "2026-11-29T12:00:01Z", "type": msg_type, "data": data}


PATHS = {
    "command": [
        ("event_id",),
        ("event_type",),
        ("aggregate_type",),
        ("aggregate_id",),
        ("payload",),
        ("metadata",),
        ("created_at",),
        ("payload", "command_type"),
        ("payload", "payload"),
        ("payload", "user_id"),
        ("metadata", "correlation_id"),
    ],
    "result": [
        ("id",),
        ("ts",),
        ("type",),
        ("data",),
        ("data", "session_id"),
        ("data", "correlation_id"),
        ("data", "score"),
        ("data", "target_type"),
        ("data", "attempts"),
        ("data", "ok"),
    ],
}


def mutate(doc: dict[str, Any], path: tuple[str, ...], value: Any, delete: bool) -> dict[str, Any]:
    out = copy.deepcopy(doc)
    node: Any = out
    for part in path[:-1]:
        if not isinstance(node, dict) or not isinstance(node.get(part), dict):
            return out
        node = node[part]
    if delete:
        node.pop(path[-1], None)
    else:
        node[path[-1]] = value
    return out


@st.composite
def messages(draw: st.DrawFn) -> RawMessage:
    """A valid command or result, often mutated (a field set to a random JSON value or
    removed), sometimes replaced by random bytes or cut short; random headers and key."""
    shape = draw(st.sampled_from(["command", "command", "result", "result", "event"]))
    if shape == "event":  # a fact or any other non-command domain event: skipped
        doc, shape = draw(commands("Genesis.Session.Character.Proposed")), "command"
    else:
        doc = draw(commands() if shape == "command" else results())
    how = draw(st.sampled_from(["valid", "field", "field", "delete", "bytes", "cut", "splice"]))
    value: bytes | None
    if how in ("field", "delete"):
        path = draw(st.sampled_from(PATHS[shape]))
        doc = mutate(doc, path, draw(json_values), how == "delete")
    value = orjson.dumps(doc)
    if how == "bytes":
        value = draw(st.none() | st.binary(max_size=64))
    elif how == "cut":
        value = value[: draw(st.integers(min_value=0, max_value=len(value)))]
    elif how == "splice":
        at = draw(st.integers(min_value=0, max_value=len(value)))
        value = value[:at] + draw(st.binary(min_size=1, max_size=4)) + value[at:]
    headers = draw(
        st.lists(
            st.tuples(st.sampled_from(HEADER_NAMES), st.none() | st.binary(max_size=12)),
            max_size=2,
        )
    )
    topic = draw(st.sampled_from([DOMAIN_TOPIC, CAPABILITY_TOPIC]))
    key = draw(st.none() | st.binary(max_size=8))
    return RawMessage(topic, value, key, tuple(headers), 0, draw(st.integers(0, 10**6)))


# -- the pure property ------------------------------------------------------------------------


@settings(max_examples=400, deadline=None)
@given(raw=messages() | st.builds(RawMessage, st.just(DOMAIN_TOPIC), st.binary(max_size=200)))
def test_classify_refuses_only_with_a_known_category(raw: RawMessage) -> None:
    try:
        c = classify(raw, COMMANDS, CAP)
    except InvalidInput as exc:
        assert isinstance(exc.category, Category)
        assert exc.category in set(Category)
        assert exc.reason
        return
    assert c.kind in set(Kind)
    assert isinstance(c.message_id, str) and c.message_id
    assert isinstance(c.session_id, str) and c.session_id.strip()


# -- through the agent on a real database -----------------------------------------------------


@pytest.fixture(scope="module")
def agent_db(fresh_database_url: DatabaseFactory) -> Iterator[tuple[Engine, MessageProcessor]]:
    url = fresh_database_url()
    engine = make_engine(url)
    try:
        yield engine, MessageProcessor(SqlStore(engine), ProcessorConfig(max_message_bytes=CAP))
    finally:
        engine.dispose()
        fresh_database_url.drop(url)


SETTLED = {Status.PROCESSED, Status.NO_HANDLER, Status.DUPLICATE}


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(raw=messages())
def test_process_message_settles_every_input(
    agent_db: tuple[Engine, MessageProcessor], raw: RawMessage
) -> None:
    engine, agent = agent_db
    outcome = agent.process_message(raw)
    event(f"{outcome.status.value} {outcome.category or ''}".strip())
    assert outcome.status in SETTLED | {Status.IGNORED, Status.DEAD_LETTERED}
    with engine.connect() as conn:
        if outcome.status is Status.DEAD_LETTERED:
            row = conn.execute(
                text("SELECT category, source_topic, key, value FROM dead_letters WHERE id = :id"),
                {"id": outcome.dead_letter_id},
            ).one()
            assert row.category in {c.value for c in Category}
            assert outcome.category in {c.value for c in Category}
            # Each distinct input (headers included) has a dead letter of its own.
            assert row.category == outcome.category
            assert row.source_topic == raw.topic
            assert bytes(row.value or b"") == (raw.value or b"")
        elif outcome.status in SETTLED:
            processed = conn.execute(
                text(
                    "SELECT processed_at IS NOT NULL FROM inbox WHERE topic = :t"
                    " AND message_id = :m"
                ),
                {"t": raw.topic, "m": outcome.message_id},
            ).scalar_one()
            assert processed
    # The relay's part (publish, mark SENT, start tasks) is not under test here.
    with engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE async_tasks SET status = 'RUNNING' WHERE status = 'PENDING'"
                " AND id IN (SELECT id FROM event_outbox WHERE status = 'PENDING')"
            )
        )
        conn.execute(text("UPDATE event_outbox SET status = 'SENT' WHERE status = 'PENDING'"))
    # Results arrive for correlations no command opened: not a Genesis flow, so the session
    # invariants (every outcome has its request) are not asked for.
    report = verify(engine, sessions=False)
    assert report.ok, report.text()


def test_same_bytes_with_other_headers_are_another_dead_letter(
    agent_db: tuple[Engine, MessageProcessor],
) -> None:
    engine, agent = agent_db
    value, key = b"not json " + uuid.uuid4().hex.encode(), b"k"
    first = agent.process_message(RawMessage(DOMAIN_TOPIC, value, key, (), 0, 1))
    second = agent.process_message(
        RawMessage(DOMAIN_TOPIC, value, key, (("correlation_id", b"\xff"),), 0, 2)
    )
    assert (first.category, second.category) == ("not_json", "bad_headers")
    with engine.connect() as conn:
        stored = conn.execute(
            text("SELECT category FROM dead_letters WHERE value = :v ORDER BY created_at"),
            {"v": value},
        ).scalars()
        assert sorted(stored) == ["bad_headers", "not_json"]
