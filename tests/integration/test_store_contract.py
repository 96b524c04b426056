"""One contract for the `Store` port, run against the in-memory fake and PostgreSQL alike.

Every port method's behaviour and every unique constraint, observed through the port only (one
arranging hook aside: failing a task, which beat's maintenance does in production). If the fake
and PostgreSQL ever disagree, one of the two parametrizations fails here.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

import pytest

from orchestrator.core.clock import utc_now
from orchestrator.core.inbound import RawMessage
from orchestrator.core.plan import Completion, FactRow, MessageRow
from orchestrator.core.records import CompletionResult, DeadLetterRecord, NewInbox, OutboxMessage
from orchestrator.service.ports import Store, Transaction
from tests.support.db import Db
from tests.support.memory_store import MemoryStore


@dataclass
class Backend:
    store: Store
    fail_task: Callable[[str], None]


@pytest.fixture(params=["memory", "postgres"])
def backend(request: pytest.FixtureRequest) -> Backend:
    if request.param == "memory":
        memory = MemoryStore()
        return Backend(memory, lambda task_id: memory.set_task_status(task_id, "FAILED"))
    db: Db = request.getfixturevalue("db")

    def fail(task_id: str) -> None:
        db.exec(
            "UPDATE async_tasks SET status = 'FAILED', version = version + 1 WHERE id = :id",
            id=task_id,
        )

    return Backend(request.getfixturevalue("store"), fail)


class Boom(Exception):
    pass


def uid() -> str:
    return str(uuid.uuid4())


def new_inbox(
    session: str,
    topic: str = "t.domain",
    message_id: str | None = None,
    *,
    value: bytes = b'{"v": 1}',
    key: bytes | None = b"k",
    partition: int | None = 2,
    offset: int | None = 41,
) -> NewInbox:
    headers = (("h", b"\x00\xff"), ("empty", None))
    message = RawMessage(topic, value, key, headers, partition, offset)
    return NewInbox(message, message_id or uid(), "command", "X.Do", session, "corr", "tp")


def fact(cause: str, event_type: str = "Genesis.Session.X.Happened", **kw: str) -> FactRow:
    return FactRow(
        kw.get("event_id", uid()),
        event_type,
        "s-1",
        kw.get("correlation_id", "corr"),
        cause,
        {"n": 1},
        {},
    )


def outbox(message_id: str, payload: bytes = b"p") -> OutboxMessage:
    return OutboxMessage(message_id, "fact", "X.Happened", "t.out", b"k", (), payload, "s", "c")


def task(
    correlation: str | None, task_type: str = "Character.Design.GenerationRequested", **kw: str
) -> MessageRow:
    return MessageRow(
        kw.get("message_id", uid()),
        task_type,
        "t.tasks",
        "s",
        "s",
        correlation,
        kw.get("cause", uid()),
        {"data": {"input": 1}},
    )


def dead_letter(dl_id: str) -> DeadLetterRecord:
    return DeadLetterRecord(dl_id, "invalid_json", "bad", RawMessage("t", b"x"), "s", "m")


DEADLINE = utc_now() + timedelta(hours=1)


# -- the inbox ---------------------------------------------------------------------------------


def test_inbox_is_unique_on_topic_and_message_id(backend: Backend) -> None:
    first = new_inbox("s")
    with backend.store.transaction() as tx:
        [a] = tx.insert_inbox([first], triggered=False)
        again = new_inbox("s", message_id=first.message_id, value=b'{"other": 1}')
        assert tx.insert_inbox([again], triggered=False) == []
        other_topic = new_inbox("s", topic="t.other", message_id=first.message_id)
        [b] = tx.insert_inbox([other_topic], triggered=True)
    assert b > a
    with backend.store.transaction() as tx:
        row = tx.find_inbox("t.domain", first.message_id)
        assert row is not None and (row.id, row.value) == (a, b'{"v": 1}')


def test_an_inbox_row_reads_back_as_it_was_recorded(backend: Backend) -> None:
    new = new_inbox("s-read", key=None, partition=None, offset=None)
    with backend.store.transaction() as tx:
        [inbox_id] = tx.insert_inbox([new], triggered=False)
    with backend.store.transaction() as tx:
        found = tx.find_inbox(new.raw.topic, new.message_id)
        assert found is not None
        assert (found.id, found.topic, found.message_id, found.kind, found.message_type) == (
            inbox_id,
            "t.domain",
            new.message_id,
            "command",
            "X.Do",
        )
        assert (found.session_id, found.correlation_id, found.traceparent) == (
            "s-read",
            "corr",
            "tp",
        )
        assert found.raw() == new.raw
        assert (found.attempts, found.processed, found.more) == (0, False, True)
        assert tx.inbox_for_update(inbox_id) == found
        assert tx.lock_and_fetch(inbox_id, "s-read") == found
        assert tx.find_inbox("t.domain", "no-such-message") is None
        assert tx.inbox_for_update(inbox_id + 1000) is None
        assert tx.lock_and_fetch(inbox_id + 1000, "s-read") is None


def test_the_batch_insert_reports_the_new_keys_and_which_old_ones_still_wait(
    backend: Backend,
) -> None:
    done, waiting = new_inbox("s"), new_inbox("s")
    with backend.store.transaction() as tx:
        [done_id, _] = tx.insert_inbox([done, waiting], triggered=False)
        tx.mark_processed(done_id, "processed")
    fresh = new_inbox("s")
    twin = new_inbox("s", message_id=fresh.message_id)
    with backend.store.transaction() as tx:
        new = tx.insert_inbox_batch([done, fresh, waiting, twin])
        assert new == {("t.domain", fresh.message_id)}
        keys = [("t.domain", m.message_id) for m in (done, waiting)] + [("t.domain", "unknown")]
        assert tx.unprocessed_among(keys) == {("t.domain", waiting.message_id)}
        assert tx.unprocessed_among([]) == set()
        assert tx.insert_inbox_batch([]) == set()


def test_begin_next_counts_an_attempt_on_the_oldest_unprocessed_row(backend: Backend) -> None:
    s, other = "s-" + uid(), "o-" + uid()
    rows = [new_inbox(s), new_inbox(other), new_inbox(s), new_inbox(s)]
    with backend.store.transaction() as tx:
        ids = tx.insert_inbox(rows, triggered=True)
        tx.mark_processed(ids[0], "processed")
    store = backend.store
    head = store.begin_next(s)
    assert head is not None and (head.id, head.attempts, head.more) == (ids[2], 1, True)
    # The attempt is committed even though the processing that follows rolls back.
    with pytest.raises(Boom), store.transaction() as tx:
        tx.mark_processed(ids[2], "processed")
        raise Boom
    again = store.begin_next(s)
    assert again is not None and (again.id, again.attempts, again.processed) == (ids[2], 2, False)
    with store.transaction() as tx:
        tx.mark_processed(ids[2], "processed")
    last = store.begin_next(s)
    assert last is not None and (last.id, last.attempts, last.more) == (ids[3], 1, False)
    with store.transaction() as tx:
        tx.mark_processed(ids[3], "dead_lettered", "why")
        processed = tx.find_inbox("t.domain", rows[3].message_id)
        assert processed is not None and processed.processed
        untouched = tx.find_inbox("t.domain", rows[1].message_id)
        assert untouched is not None and untouched.attempts == 0
    assert store.begin_next(s) is None


# -- facts and the outbox ----------------------------------------------------------------------


def test_facts_are_unique_on_id_and_on_cause_and_type(backend: Backend) -> None:
    cause = uid()
    first = fact(cause)
    with backend.store.transaction() as tx:
        assert tx.insert_fact(first, "GenesisSession") is True
        assert tx.insert_fact(fact(cause), "GenesisSession") is False  # same cause and type
        assert tx.insert_fact(fact(uid(), event_id=first.event_id), "GenesisSession") is False
        assert tx.insert_fact(fact(cause, "Genesis.Session.X.Other"), "GenesisSession") is True


def test_handled_reviews_count_facts_of_the_correlation_from_other_causes(
    backend: Backend,
) -> None:
    wanted = ["Genesis.Session.A", "Genesis.Session.B"]
    this_review = uid()
    with backend.store.transaction() as tx:
        tx.insert_fact(fact(uid(), "Genesis.Session.A", correlation_id="c1"), "GenesisSession")
        tx.insert_fact(fact(uid(), "Genesis.Session.B", correlation_id="c1"), "GenesisSession")
        tx.insert_fact(
            fact(this_review, "Genesis.Session.A", correlation_id="c1"), "GenesisSession"
        )
        tx.insert_fact(fact(uid(), "Genesis.Session.C", correlation_id="c1"), "GenesisSession")
        tx.insert_fact(fact(uid(), "Genesis.Session.A", correlation_id="c2"), "GenesisSession")
        assert tx.count_handled_reviews("c1", wanted, this_review) == 2
        assert tx.count_handled_reviews("c1", wanted, uid()) == 3
        assert tx.count_handled_reviews("c3", wanted, this_review) == 0


def test_outbox_rows_are_unique_on_id(backend: Backend) -> None:
    with backend.store.transaction() as tx:
        assert tx.insert_outbox(outbox("o-1")) is True
        assert tx.insert_outbox(outbox("o-1", payload=b"different")) is False
        assert tx.insert_outbox(outbox("o-2")) is True


def test_a_fact_and_its_outbox_row_are_written_only_when_the_fact_is_new(
    backend: Backend,
) -> None:
    cause = uid()
    with backend.store.transaction() as tx:
        assert tx.insert_fact_with_outbox(fact(cause), "GenesisSession", outbox("f-1")) == (
            True,
            True,
        )
        # The same cause and type again: no fact, and its (new) outbox id is not written either.
        assert tx.insert_fact_with_outbox(fact(cause), "GenesisSession", outbox("f-2")) == (
            False,
            False,
        )
        assert tx.insert_outbox(outbox("f-2")) is True  # f-2 was free: it was the fact that held
        # A new fact whose outbox row exists already.
        assert tx.insert_fact_with_outbox(fact(uid()), "GenesisSession", outbox("f-1")) == (
            True,
            False,
        )


def test_a_task_and_its_message_are_written_only_when_the_task_is_new(backend: Backend) -> None:
    first = task("c9")
    with backend.store.transaction() as tx:
        assert tx.create_task_with_outbox(first, DEADLINE, outbox("t-1")) == (True, True)
        assert tx.create_task_with_outbox(task("c9"), DEADLINE, outbox("t-2")) == (False, False)
        assert tx.insert_outbox(outbox("t-2")) is True


# -- AsyncTasks --------------------------------------------------------------------------------


def test_one_active_task_per_correlation_and_type(backend: Backend) -> None:
    first = task("c1")
    with backend.store.transaction() as tx:
        assert tx.create_task(first, DEADLINE) is True
        assert tx.create_task(task("c2", message_id=first.message_id), DEADLINE) is False
        assert tx.create_task(task("c1"), DEADLINE) is False  # (c1, type) is active
        assert tx.create_task(task("c1", "Review.Quality.EvaluationRequested"), DEADLINE)
        # NULL correlations never conflict, as in a PostgreSQL unique index.
        assert tx.create_task(task(None), DEADLINE) is True
        assert tx.create_task(task(None), DEADLINE) is True
    completion = Completion("c1", "Character.Design.", {"name": "Aria"})
    with backend.store.transaction() as tx:
        assert tx.complete_task(completion).task_id == first.message_id
        # Completed, the pair is free again.
        assert tx.create_task(task("c1"), DEADLINE) is True


def test_completion_takes_the_oldest_active_task_of_the_prefix(backend: Backend) -> None:
    older, newer = (
        task("c1", message_id="task-a"),
        task("c1", "Character.Other", message_id="task-b"),
    )
    with backend.store.transaction() as tx:
        tx.create_task(older, DEADLINE)
    with backend.store.transaction() as tx:
        tx.create_task(newer, DEADLINE)
        tx.create_task(task("c1", "Review.Quality.EvaluationRequested"), DEADLINE)
    with backend.store.transaction() as tx:
        got = tx.complete_task(Completion("c1", "Character.", {}))
        assert (got.task_id, got.state) == ("task-a", "completed")
        assert got.age_s is not None and 0.0 <= got.age_s < 60.0
        got = tx.complete_task(Completion("c1", "Character.", {}))
        assert (got.task_id, got.state) == ("task-b", "completed")
        assert tx.complete_task(Completion("c1", "Character.", {})) == CompletionResult(
            None, "not_found"
        )
        assert tx.complete_task(Completion("c9", "Review.", {})).state == "not_found"
        assert tx.complete_task(Completion(None, "Review.", {})).state == "not_found"


def test_a_result_for_a_failed_task_is_late(backend: Backend) -> None:
    timed_out = task("c1")
    with backend.store.transaction() as tx:
        tx.create_task(timed_out, DEADLINE)
    backend.fail_task(timed_out.message_id)
    with backend.store.transaction() as tx:
        completion = Completion("c1", "Character.Design.", {"late": True})
        assert tx.complete_task(completion) == CompletionResult(timed_out.message_id, "late")
        # Still failed, not active: a new task of the pair may start.
        assert tx.create_task(task("c1"), DEADLINE) is True


# -- dead letters, rollback, savepoints, sessions ----------------------------------------------


def test_dead_letters_are_unique_on_id(backend: Backend) -> None:
    with backend.store.transaction() as tx:
        assert tx.insert_dead_letter(dead_letter("dl-1")) is True
        assert tx.insert_dead_letter(dead_letter("dl-1")) is False
        assert tx.insert_dead_letter(dead_letter("dl-2")) is True


def _write_one_of_each(tx: Transaction, inbox: NewInbox, cause: str, ids: dict[str, str]) -> None:
    assert tx.insert_inbox([inbox], triggered=False)
    assert tx.insert_fact(fact(cause, event_id=ids["fact"]), "GenesisSession")
    assert tx.insert_outbox(outbox(ids["outbox"]))
    assert tx.create_task(task("c-" + cause, message_id=ids["task"]), DEADLINE)
    assert tx.insert_dead_letter(dead_letter(ids["dead_letter"]))


def test_an_exception_rolls_the_whole_transaction_back(backend: Backend) -> None:
    inbox, cause = new_inbox("s"), uid()
    ids = {k: uid() for k in ("fact", "outbox", "task", "dead_letter")}
    with pytest.raises(Boom), backend.store.transaction() as tx:
        _write_one_of_each(tx, inbox, cause, ids)
        raise Boom
    # Nothing stayed: every write succeeds again.
    with backend.store.transaction() as tx:
        assert tx.find_inbox(inbox.raw.topic, inbox.message_id) is None
        _write_one_of_each(tx, inbox, cause, ids)


def test_a_failed_savepoint_undoes_only_its_own_writes(backend: Backend) -> None:
    kept, undone = uid(), uid()
    with backend.store.transaction() as tx:
        assert tx.insert_outbox(outbox(kept))
        with pytest.raises(Boom), tx.savepoint():
            assert tx.insert_outbox(outbox(undone))
            assert tx.create_task(task("c-sp", message_id=undone), DEADLINE)
            raise Boom
        with tx.savepoint():
            assert tx.insert_dead_letter(dead_letter(kept))
    with backend.store.transaction() as tx:
        assert tx.insert_outbox(outbox(kept)) is False
        assert tx.insert_dead_letter(dead_letter(kept)) is False
        assert tx.insert_outbox(outbox(undone)) is True
        assert tx.create_task(task("c-sp", message_id=undone), DEADLINE) is True


def test_transactions_inside_a_session_commit_one_by_one(backend: Backend) -> None:
    first, second = uid(), uid()
    with backend.store.session():
        with backend.store.transaction() as tx:
            tx.insert_outbox(outbox(first))
        with pytest.raises(Boom), backend.store.transaction() as tx:
            tx.insert_outbox(outbox(second))
            raise Boom
    with backend.store.transaction() as tx:
        assert tx.insert_outbox(outbox(first)) is False
        assert tx.insert_outbox(outbox(second)) is True


# -- what an outcome needs to know: the correlation's active task, its first command's age ----


def test_the_active_task_of_a_correlation_and_type(backend: Backend) -> None:
    first = task("c-held")
    with backend.store.transaction() as tx:
        assert tx.create_task(first, DEADLINE) is True
        assert tx.active_task_id("c-held", first.message_type) == first.message_id
        assert tx.active_task_id("c-held", "Review.Quality.EvaluationRequested") is None
        assert tx.active_task_id("c-other", first.message_type) is None
        assert tx.active_task_id(None, first.message_type) is None
    backend.fail_task(first.message_id)
    with backend.store.transaction() as tx:
        assert tx.active_task_id("c-held", first.message_type) is None


def test_a_correlations_age_runs_from_its_first_commands_arrival(backend: Backend) -> None:
    """The commands are found as the causes of the correlation's facts, on the given topic."""
    first, second = new_inbox("s-age"), new_inbox("s-age")
    result = new_inbox("s-age")
    result = NewInbox(result.raw, result.message_id, "capability", "X.Done", "s-age", None, None)
    with backend.store.transaction() as tx:
        tx.insert_inbox([first, result], triggered=False)
        tx.insert_fact(fact(first.message_id, correlation_id="c-both"), "GenesisSession")
        tx.insert_fact(fact(first.message_id, "G.S.X.Other", correlation_id="c-first"), "G")
        tx.insert_fact(fact(result.message_id, correlation_id="c-result"), "GenesisSession")
    with backend.store.transaction() as tx:  # a later transaction: a later arrival
        tx.insert_inbox([second], triggered=False)
        tx.insert_fact(fact(second.message_id, correlation_id="c-both"), "GenesisSession")
        tx.insert_fact(fact(second.message_id, "G.S.X.Other", correlation_id="c-second"), "G")
    with backend.store.transaction() as tx:
        both = tx.correlation_age_s("c-both", "t.domain")
        only_first = tx.correlation_age_s("c-first", "t.domain")
        only_second = tx.correlation_age_s("c-second", "t.domain")
        assert both is not None and only_first is not None and only_second is not None
        assert both == only_first > only_second >= 0
        assert both < 60
        assert tx.correlation_age_s("c-result", "t.domain") is None  # no command caused it
        assert tx.correlation_age_s("c-both", "t.other") is None
        assert tx.correlation_age_s("c-nothing", "t.domain") is None
