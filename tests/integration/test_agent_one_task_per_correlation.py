"""One task per correlation on PostgreSQL (docs/architecture.md): a second command of a
correlation whose task is active gets no AsyncTask and its capability message is not sent;
redelivering it writes nothing; the task's result completes the first task. Before, the second
message went out untracked. The in-memory twin is `tests/unit/test_one_task_per_correlation.py`.
"""

from __future__ import annotations

from structlog.testing import capture_logs

from orchestrator.adapters.postgres.store import SqlStore
from orchestrator.core import ids
from orchestrator.core.records import Status
from orchestrator.service.process_message import MessageProcessor
from tests.support.db import FIXED_NOW, Db, Wire

CHAR_REQ = "Character.Design.GenerationRequested"


def test_a_second_command_is_held_by_the_first_task_and_not_sent(
    store: SqlStore, db: Db, wire: type[Wire]
) -> None:
    agent = MessageProcessor(store, clock=lambda: FIXED_NOW)
    s, c = "session-" + wire.new_id(), wire.new_id()
    first_cmd = wire.command("Character.Request", s, c, {"name": "Aria"})
    second_cmd = wire.command("Character.Request", s, c, {"name": "Aria, again"})
    first = agent.process_message(first_cmd)
    with capture_logs() as logs:
        second = agent.process_message(second_cmd)
    held = ids.derive(wire.message_id(first_cmd), "capability", CHAR_REQ)

    assert first.task_ids == [held]
    assert (second.status, second.task_ids, second.message_ids) == (Status.PROCESSED, [], [])
    outbox = db.all("SELECT id, kind FROM event_outbox ORDER BY seq")
    assert [o["id"] for o in outbox if o["kind"] == "capability"] == [held]
    assert [o["kind"] for o in outbox] == ["fact", "capability", "fact"]
    assert [t["id"] for t in db.tasks()] == [held]
    skipped = [e for e in logs if e["event"] == "orchestrator_async_task_skipped"]
    assert [(e["existing_task_id"], e["log_level"]) for e in skipped] == [(held, "info")]

    before = db.counts()
    again = agent.process_message(second_cmd)  # a redelivery
    assert again.status is Status.DUPLICATE and db.counts() == before

    result = agent.process_message(wire.capability("Character.Design.Generated", s, c, n=1))
    assert result.completed_task_ids == [held]
    # The pair is free again: a new command gets its own task and is sent.
    later_cmd = wire.command("Character.Request", s, c)
    later = agent.process_message(later_cmd)
    assert (
        later.task_ids
        == later.message_ids
        == [ids.derive(wire.message_id(later_cmd), "capability", CHAR_REQ)]
    )
