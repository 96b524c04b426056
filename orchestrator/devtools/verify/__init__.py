"""Invariant checker: does the database hold exactly what the inputs should have produced?

`verify(engine, inputs)` reads the inbox, the facts, the outbox, the AsyncTasks and the dead
letters, re-plans every recorded input with the same pure code the workers run (every id the
orchestrator writes derives from its cause, so the expected rows are known exactly) and reports,
message by message, what is missing, unexpected or stuck:

- every processed input has exactly one fact per expected event type (the facts whose
  `causation_id` is the input's id), its capability messages in the outbox, and one AsyncTask
  per capability message (`async_tasks.id` = the outbox row id);
- every outbox row is SENT, no inbox row is left unprocessed;
- every invalid input is a dead letter (with its expected category, when one is given) and its
  DLQ record is in the outbox;
- no orphans: a fact whose causing message is neither an inbox row nor an AsyncTask (timeouts
  are caused by task ids), a fact outbox row without its fact, a fact without its outbox row, a
  capability message without its AsyncTask (unless the dispatch failure was dead-lettered or an
  active task of the same correlation and type absorbed it, as the source design dedupes), an
  AsyncTask without its message;
- Genesis sessions: every correlation that reached `<Target>.Proposed / Confirmed / Failed /
  RegenerationRequested` has its `<Target>.Requested` fact (`Stage.*`: a validation or lock
  request).

Checks that need rows retention may delete (inbox, sent outbox rows) are skipped when retention
pruned them: assumed when the inbox is empty while facts exist, or forced with `pruned=True`.
Read-only; every statement uses bound parameters.
"""

from __future__ import annotations

import sys
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from sqlalchemy import Engine, text

from orchestrator.adapters.postgres.store import decode_headers
from orchestrator.core.catalogue import GENERATION_KINDS, QUALITY_REVIEW_TYPES
from orchestrator.core.command_strategies import CommandStrategyRegistry, command_registry
from orchestrator.core.errors import Category, InvalidInput
from orchestrator.core.inbound import CapabilityEvent, RawMessage
from orchestrator.core.outbound import raw_dead_letter_id
from orchestrator.core.plan import (
    TIMEOUT_ACTION,
    FactRow,
    Kind,
    Plan,
    classify,
    plan_capability,
    plan_command,
)
from orchestrator.core.result_handlers import (
    EventHandlerRegistry,
    event_handler_registry,
    review_outcome_actions,
    target_type_of,
)
from orchestrator.core.wire import fact_type

# Ids never depend on the clock: only ids and types of the re-planned rows are compared.
PLAN_TIME = "1970-01-01T00:00:00.000Z"
TASK_TARGETS = frozenset(k.target for k in GENERATION_KINDS)
TARGET_OUTCOMES = ("Proposed", "Confirmed", "Failed", "RegenerationRequested")
STAGE_OUTCOMES = ("Confirmed", "Failed")
STAGE_REQUESTS = ("Stage.ValidationRequested", "Stage.LockRequested")
SETTLED_OUTCOMES = frozenset({"processed", "no_handler"})


class InputKind(StrEnum):
    COMMAND = "command"
    CAPABILITY = "capability"
    SKIP = "skip"
    INVALID = "invalid"


class Code(StrEnum):
    """What can be wrong; each problem names the input message it concerns."""

    MESSAGE_MISSING = "message_missing"
    WRONG_KIND = "wrong_kind"
    NOT_SETTLED = "not_settled"
    INBOX_UNPROCESSED = "inbox_unprocessed"
    REPLAN_FAILED = "replan_failed"
    MISSING_FACT = "missing_fact"
    DUPLICATE_FACT = "duplicate_fact"
    UNEXPECTED_FACT = "unexpected_fact"
    FACT_ID_MISMATCH = "fact_id_mismatch"
    MISSING_CAPABILITY_MESSAGE = "missing_capability_message"
    MISSING_TASK = "missing_task"
    TASK_WITHOUT_MESSAGE = "task_without_message"
    OUTBOX_NOT_SENT = "outbox_not_sent"
    FACT_WITHOUT_OUTBOX = "fact_without_outbox"
    OUTBOX_FACT_WITHOUT_FACT = "outbox_fact_without_fact"
    ORPHAN_FACT = "orphan_fact"
    TIMEOUT_TASK_NOT_FAILED = "timeout_task_not_failed"
    DEAD_LETTER_MISSING = "dead_letter_missing"
    DEAD_LETTER_CATEGORY = "dead_letter_category"
    DEAD_LETTER_NOT_PUBLISHED = "dead_letter_not_published"
    SKIPPED_MESSAGE_RECORDED = "skipped_message_recorded"
    REQUESTED_FACT_MISSING = "requested_fact_missing"


@dataclass(frozen=True, slots=True)
class ExpectedInput:
    """One input the caller sent, and what it should have become.

    `message_id` is the envelope's `event_id` / `id`; an invalid input may be named by its raw
    message instead (dead letters of unparseable input carry no message id). `fact_types` (full
    names, e.g. `Genesis.Session.Character.Requested`) overrides the re-planned expectation;
    `category` is the dead-letter category an invalid input must have.
    """

    kind: InputKind
    message_id: str | None = None
    topic: str | None = None
    fact_types: frozenset[str] | None = None
    category: str | None = None
    raw: RawMessage | None = None

    @classmethod
    def command(
        cls, message_id: str, fact_types: Iterable[str] | None = None, topic: str | None = None
    ) -> ExpectedInput:
        types = frozenset(fact_types) if fact_types is not None else None
        return cls(InputKind.COMMAND, message_id, topic, types)

    @classmethod
    def capability(
        cls, message_id: str, fact_types: Iterable[str] | None = None, topic: str | None = None
    ) -> ExpectedInput:
        types = frozenset(fact_types) if fact_types is not None else None
        return cls(InputKind.CAPABILITY, message_id, topic, types)

    @classmethod
    def skipped(cls, message_id: str, topic: str | None = None) -> ExpectedInput:
        return cls(InputKind.SKIP, message_id, topic)

    @classmethod
    def invalid(
        cls,
        raw: RawMessage | None = None,
        category: str | Category | None = None,
        message_id: str | None = None,
    ) -> ExpectedInput:
        if raw is None and message_id is None:
            raise ValueError("an invalid input is named by its raw message or its message id")
        cat = category.value if isinstance(category, Category) else category
        topic = raw.topic if raw is not None else None
        return cls(InputKind.INVALID, message_id, topic, None, cat, raw)

    @property
    def label(self) -> str:
        if self.message_id:
            return self.message_id
        if self.raw is not None:
            return raw_dead_letter_id(self.raw)
        return "?"


@dataclass(frozen=True, slots=True)
class Problem:
    code: Code
    message_id: str | None
    detail: str
    session_id: str | None = None
    correlation_id: str | None = None

    def __str__(self) -> str:
        where = f" (session {self.session_id})" if self.session_id else ""
        return f"message {self.message_id or '-'}{where}: {self.code.value}: {self.detail}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "code": self.code.value,
            "message_id": self.message_id,
            "session_id": self.session_id,
            "correlation_id": self.correlation_id,
            "detail": self.detail,
        }


@dataclass(frozen=True, slots=True)
class Counts:
    messages: int = 0
    facts: int = 0
    tasks: int = 0
    dead_letters: int = 0
    outbox: int = 0
    problems: int = 0

    def as_dict(self) -> dict[str, int]:
        return {
            "messages": self.messages,
            "facts": self.facts,
            "tasks": self.tasks,
            "dead_letters": self.dead_letters,
            "outbox": self.outbox,
            "problems": self.problems,
        }


@dataclass(frozen=True, slots=True)
class Report:
    problems: tuple[Problem, ...]
    counts: Counts
    session_id: str | None = None
    pruned: bool = False

    @property
    def ok(self) -> bool:
        return not self.problems

    def about(self, message_id: str) -> list[Problem]:
        return [p for p in self.problems if p.message_id == message_id]

    def codes(self) -> Counter[str]:
        return Counter(p.code.value for p in self.problems)

    def by_message(self) -> dict[str, list[Problem]]:
        grouped: dict[str, list[Problem]] = defaultdict(list)
        for p in self.problems:
            grouped[p.message_id or "-"].append(p)
        return dict(grouped)

    def summary(self) -> str:
        c = self.counts
        scope = f" in session {self.session_id}" if self.session_id else ""
        verdict = "all invariants hold" if self.ok else f"{c.problems} problem(s)"
        return (
            f"verify{scope}: {c.messages} message(s), {c.facts} fact(s), {c.tasks} task(s),"
            f" {c.dead_letters} dead letter(s), {c.outbox} outbox row(s): {verdict}"
        )

    def text(self) -> str:
        lines = [self.summary()]
        for message_id, problems in self.by_message().items():
            session = next((p.session_id for p in problems if p.session_id), None)
            where = f" (session {session})" if session else ""
            lines.append(f"message {message_id}{where}:")
            lines.extend(f"  {p.code.value}: {p.detail}" for p in problems)
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "session_id": self.session_id,
            "retention_pruned": self.pruned,
            "counts": self.counts.as_dict(),
            "problems": [p.as_dict() for p in self.problems],
        }

    def __str__(self) -> str:
        return self.text()


# -- what the database holds ------------------------------------------------------------------

# Every statement is a constant with bound parameters; `:session` NULL means every session.
SQL = {
    "inbox": (
        "SELECT id, topic, message_id, kind, message_type, session_id, correlation_id, key,"
        ' value, headers, partition, "offset", processed_at IS NOT NULL AS processed, outcome'
        " FROM inbox WHERE (CAST(:session AS text) IS NULL OR session_id = :session)"
        " ORDER BY id"
    ),
    "facts": (
        "SELECT event_id, event_type, session_id, correlation_id, causation_id, created_at"
        " FROM domain_events WHERE (CAST(:session AS text) IS NULL OR session_id = :session)"
        " ORDER BY created_at, event_id"
    ),
    "outbox": (
        "SELECT id, kind, message_type, topic, session_id, correlation_id, status, last_error,"
        " headers FROM event_outbox"
        " WHERE (CAST(:session AS text) IS NULL OR session_id = :session) ORDER BY seq"
    ),
    "tasks": (
        "SELECT id, task_type, correlation_id, session_id, causation_id, status, error"
        " FROM async_tasks WHERE (CAST(:session AS text) IS NULL OR session_id = :session)"
        " ORDER BY created_at, id"
    ),
    "dead_letters": (
        "SELECT id, category, reason, source_topic, key, value, session_id, message_id, status"
        " FROM dead_letters WHERE (CAST(:session AS text) IS NULL OR session_id = :session)"
        " ORDER BY created_at, id"
    ),
}


def _bytes(value: Any) -> bytes | None:
    return bytes(value) if value is not None else None


@dataclass(frozen=True, slots=True)
class _Inbox:
    id: int
    topic: str
    message_id: str
    kind: str
    message_type: str
    session_id: str
    correlation_id: str | None
    raw: RawMessage
    processed: bool
    outcome: str | None


@dataclass(frozen=True, slots=True)
class _Fact:
    event_id: str
    event_type: str
    session_id: str
    correlation_id: str | None
    causation_id: str


@dataclass(frozen=True, slots=True)
class _Outbox:
    id: str
    kind: str
    message_type: str
    topic: str
    session_id: str | None
    correlation_id: str | None
    status: str
    last_error: str | None
    causation_id: str | None


@dataclass(frozen=True, slots=True)
class _Task:
    id: str
    task_type: str
    correlation_id: str | None
    session_id: str
    causation_id: str
    status: str
    error: str | None


@dataclass(frozen=True, slots=True)
class _DeadLetter:
    id: str
    category: str
    reason: str
    source_topic: str
    key: bytes | None
    value: bytes | None
    session_id: str | None
    message_id: str | None


@dataclass
class _State:
    inbox: list[_Inbox]
    facts: list[_Fact]
    outbox: list[_Outbox]
    tasks: list[_Task]
    dead_letters: list[_DeadLetter]
    inbox_by_id: dict[str, list[_Inbox]] = field(default_factory=dict)
    order: dict[str, int] = field(default_factory=dict)
    facts_by_cause: dict[str, list[_Fact]] = field(default_factory=dict)
    facts_by_corr: dict[str, list[_Fact]] = field(default_factory=dict)
    fact_ids: set[str] = field(default_factory=set)
    outbox_by_id: dict[str, _Outbox] = field(default_factory=dict)
    tasks_by_id: dict[str, _Task] = field(default_factory=dict)
    dead_by_message: dict[str, list[_DeadLetter]] = field(default_factory=dict)
    dead_by_id: dict[str, _DeadLetter] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for row in self.inbox:
            self.inbox_by_id.setdefault(row.message_id, []).append(row)
            self.order.setdefault(row.message_id, row.id)
        for f in self.facts:
            self.facts_by_cause.setdefault(f.causation_id, []).append(f)
            if f.correlation_id:
                self.facts_by_corr.setdefault(f.correlation_id, []).append(f)
            self.fact_ids.add(f.event_id)
        self.outbox_by_id = {o.id: o for o in self.outbox}
        self.tasks_by_id = {t.id: t for t in self.tasks}
        for d in self.dead_letters:
            self.dead_by_id[d.id] = d
            if d.message_id:
                self.dead_by_message.setdefault(d.message_id, []).append(d)

    def dispatch_failed(self, message_id: str) -> bool:
        return any(
            d.category == Category.CAPABILITY_DISPATCH_FAILED.value
            for d in self.dead_by_message.get(message_id, [])
        )


def _header(headers: Any, name: str) -> str | None:
    for n, v in decode_headers(headers):
        if n == name and v is not None:
            return v.decode("utf-8", "replace")
    return None


def _load(engine: Engine, session: str | None) -> _State:
    params = {"session": session}
    # One snapshot for every table, so a pipeline still writing cannot tear the picture.
    with (
        engine.connect() as plain,
        plain.execution_options(isolation_level="REPEATABLE READ").begin() as tx,
    ):
        conn = tx.connection
        inbox = [
            _Inbox(
                r.id,
                r.topic,
                r.message_id,
                r.kind,
                r.message_type,
                r.session_id,
                r.correlation_id,
                RawMessage(
                    r.topic,
                    _bytes(r.value),
                    _bytes(r.key),
                    decode_headers(r.headers),
                    r.partition,
                    r.offset,
                ),
                r.processed,
                r.outcome,
            )
            for r in conn.execute(text(SQL["inbox"]), params)
        ]
        facts = [
            _Fact(r.event_id, r.event_type, r.session_id, r.correlation_id, r.causation_id)
            for r in conn.execute(text(SQL["facts"]), params)
        ]
        outbox = [
            _Outbox(
                r.id,
                r.kind,
                r.message_type,
                r.topic,
                r.session_id,
                r.correlation_id,
                r.status,
                r.last_error,
                _header(r.headers, "causation_id"),
            )
            for r in conn.execute(text(SQL["outbox"]), params)
        ]
        tasks = [
            _Task(
                r.id, r.task_type, r.correlation_id, r.session_id, r.causation_id, r.status, r.error
            )
            for r in conn.execute(text(SQL["tasks"]), params)
        ]
        dead = [
            _DeadLetter(
                r.id,
                r.category,
                r.reason,
                r.source_topic,
                _bytes(r.key),
                _bytes(r.value),
                r.session_id,
                r.message_id,
            )
            for r in conn.execute(text(SQL["dead_letters"]), params)
        ]
    return _State(inbox, facts, outbox, tasks, dead)


# -- the checks -------------------------------------------------------------------------------


class _Checker:
    def __init__(
        self,
        state: _State,
        commands: CommandStrategyRegistry,
        handlers: EventHandlerRegistry,
        mapping: Mapping[str, str],
        pruned: bool,
    ) -> None:
        self.s = state
        self.commands = commands
        self.handlers = handlers
        self.mapping = mapping
        self.pruned = pruned
        self.problems: list[Problem] = []
        self._seen: set[tuple[Code, str | None, str]] = set()

    def add(
        self,
        code: Code,
        message_id: str | None,
        detail: str,
        session_id: str | None = None,
        correlation_id: str | None = None,
    ) -> None:
        key = (code, message_id, detail)
        if key not in self._seen:
            self._seen.add(key)
            self.problems.append(Problem(code, message_id, detail, session_id, correlation_id))

    # -- per input message ---------------------------------------------------------------------

    def check_expected(self, expected: ExpectedInput) -> None:
        if expected.kind is InputKind.INVALID:
            self.check_invalid(expected)
            return
        mid = expected.message_id
        if mid is None:
            raise ValueError(f"a {expected.kind.value} input needs its message id")
        rows = [
            r
            for r in self.s.inbox_by_id.get(mid, [])
            if expected.topic is None or r.topic == expected.topic
        ]
        if expected.kind is InputKind.SKIP:
            for r in rows:
                self.add(
                    Code.SKIPPED_MESSAGE_RECORDED,
                    mid,
                    f"a skipped {r.message_type} has an inbox row ({r.topic})",
                    r.session_id,
                )
            if mid in self.s.dead_by_message:
                self.add(Code.SKIPPED_MESSAGE_RECORDED, mid, "a skipped message was dead-lettered")
            return
        if not rows:
            if not self.pruned:
                self.add(
                    Code.MESSAGE_MISSING,
                    mid,
                    f"the {expected.kind.value} is neither in the inbox nor a dead letter"
                    if mid not in self.s.dead_by_message
                    else f"the {expected.kind.value} was dead-lettered: "
                    + "; ".join(d.category for d in self.s.dead_by_message[mid]),
                )
            if expected.fact_types is not None:
                self.check_fact_types(mid, None, expected.fact_types)
            return
        for row in rows:
            if row.kind != expected.kind.value:
                self.add(
                    Code.WRONG_KIND,
                    mid,
                    f"recorded as {row.kind}, expected {expected.kind.value}",
                    row.session_id,
                )
            elif row.processed and row.outcome not in SETTLED_OUTCOMES:
                self.add(
                    Code.NOT_SETTLED,
                    mid,
                    f"the {expected.kind.value} {row.message_type} ended {row.outcome}",
                    row.session_id,
                )
        self.check_message(rows, expected.fact_types)

    def check_invalid(self, expected: ExpectedInput) -> None:
        found: list[_DeadLetter] = []
        if expected.raw is not None:
            d = self.s.dead_by_id.get(raw_dead_letter_id(expected.raw))
            if d is not None:
                found.append(d)
            else:
                raw = expected.raw
                found.extend(
                    d
                    for d in self.s.dead_letters
                    if d.source_topic == raw.topic
                    and (d.key or b"") == (raw.key or b"")
                    and (d.value or b"") == (raw.value or b"")
                )
        if not found and expected.message_id is not None:
            found.extend(
                d
                for d in self.s.dead_by_message.get(expected.message_id, [])
                if expected.topic is None or d.source_topic == expected.topic
            )
        if not found:
            self.add(
                Code.DEAD_LETTER_MISSING, expected.label, "the invalid input is no dead letter"
            )
            return
        if expected.category and all(d.category != expected.category for d in found):
            got = ", ".join(sorted({d.category for d in found}))
            self.add(
                Code.DEAD_LETTER_CATEGORY,
                expected.label,
                f"dead-lettered as {got}, expected {expected.category}",
                found[0].session_id,
            )

    def check_message(
        self, rows: Sequence[_Inbox], fact_types: frozenset[str] | None = None
    ) -> None:
        """One message id's inbox rows (one, unless two topics carry the same id): each row
        processed, and together exactly the effects their plans ask for."""
        mid, session = rows[0].message_id, rows[0].session_id
        planned: list[list[Plan]] = []
        settled = True
        for row in rows:
            if not row.processed:
                settled = False
                self.add(
                    Code.INBOX_UNPROCESSED,
                    mid,
                    f"{row.kind} {row.message_type} ({row.topic}) is not processed",
                    row.session_id,
                    row.correlation_id,
                )
            elif row.outcome == "dead_lettered":
                if mid not in self.s.dead_by_message:
                    self.add(
                        Code.DEAD_LETTER_MISSING,
                        mid,
                        f"inbox row of {row.message_type} is dead_lettered but no dead letter"
                        " exists",
                        row.session_id,
                    )
            else:
                try:
                    planned.append(self.replan(row))
                except InvalidInput as exc:
                    settled = False
                    self.add(
                        Code.REPLAN_FAILED,
                        mid,
                        f"processed as {row.outcome} but planning it now fails: {exc}",
                        row.session_id,
                    )
        if not settled:
            return  # what it wrote (or not) cannot be judged
        actual = Counter(f.event_type for f in self.s.facts_by_cause.get(mid, []))
        chosen = [next((p for p in plans if _within(p, actual)), plans[0]) for plans in planned]
        facts = [f for p in chosen for f in p.facts]
        expected = fact_types if fact_types is not None else frozenset(f.event_type for f in facts)
        self.check_fact_types(mid, session, expected, facts)
        for m in (m for p in chosen for m in p.messages):
            if m.message_id in self.s.outbox_by_id or self.pruned or self.s.dispatch_failed(mid):
                continue
            self.add(
                Code.MISSING_CAPABILITY_MESSAGE,
                mid,
                f"no outbox row for its {m.message_type} message {m.message_id}",
                session,
                m.correlation_id,
            )

    def replan(self, row: _Inbox) -> list[Plan]:
        """The row's plan; for a quality review, the plan with the review count it saw first,
        then the plans with every other count (a replayed review may have seen another)."""
        c = classify(row.raw, self.commands, sys.maxsize, self.mapping)
        if c.kind is Kind.COMMAND:
            assert c.command is not None
            return [plan_command(c.command, self.commands, self.mapping, PLAN_TIME)]
        if c.kind is Kind.SKIP:
            raise InvalidInput(Category.UNKNOWN_SHAPE, "the message is a skipped domain event")
        evt = c.envelope
        assert isinstance(evt, CapabilityEvent)
        if evt.type not in QUALITY_REVIEW_TYPES or not evt.correlation_id:
            return [plan_capability(evt, self.handlers, 0, PLAN_TIME)]
        types = {fact_type("Genesis", a) for a in review_outcome_actions(target_type_of(evt.data))}
        reviews = [
            f
            for f in self.s.facts_by_corr.get(evt.correlation_id, [])
            if f.event_type in types and f.causation_id != evt.id
        ]
        before = sum(1 for f in reviews if self.s.order.get(f.causation_id, -1) < row.id)
        counts = [before, *(n for n in range(len(reviews) + 1) if n != before)]
        return [plan_capability(evt, self.handlers, n, PLAN_TIME) for n in counts]

    def check_fact_types(
        self,
        message_id: str,
        session_id: str | None,
        expected: frozenset[str],
        planned: Sequence[FactRow] = (),
    ) -> None:
        actual = self.s.facts_by_cause.get(message_id, [])
        by_type: dict[str, list[_Fact]] = defaultdict(list)
        for f in actual:
            by_type[f.event_type].append(f)
        for t in sorted(expected):
            got = by_type.get(t, [])
            if not got:  # more than one is reported by check_facts, for every cause
                self.add(Code.MISSING_FACT, message_id, f"no {t} fact", session_id)
        for t, got in sorted(by_type.items()):
            if t not in expected:
                for f in got:
                    self.add(
                        Code.UNEXPECTED_FACT,
                        message_id,
                        f"unexpected {t} fact {f.event_id}",
                        f.session_id,
                        f.correlation_id,
                    )
        for pf in planned:
            for f in by_type.get(pf.event_type, []):
                if f.event_id != pf.event_id:
                    self.add(
                        Code.FACT_ID_MISMATCH,
                        message_id,
                        f"{pf.event_type} fact {f.event_id} should have id {pf.event_id}",
                        f.session_id,
                    )

    # -- whole-database invariants -------------------------------------------------------------

    def check_outbox(self) -> None:
        for o in self.s.outbox:
            cause = o.causation_id or o.id
            what = f"{o.kind} {o.message_type} outbox row {o.id} ({o.topic})"
            if o.status != "SENT":
                error = f": {o.last_error}" if o.last_error else ""
                self.add(
                    Code.OUTBOX_NOT_SENT,
                    cause,
                    f"{what} is {o.status}{error}",
                    o.session_id,
                    o.correlation_id,
                )
            if o.kind == "fact" and o.id not in self.s.fact_ids:
                self.add(
                    Code.OUTBOX_FACT_WITHOUT_FACT,
                    cause,
                    f"{what} has no domain_events row",
                    o.session_id,
                    o.correlation_id,
                )
            if o.kind == "capability" and o.id not in self.s.tasks_by_id:
                if self.s.dispatch_failed(cause) or self._absorbed(o):
                    continue
                self.add(
                    Code.MISSING_TASK,
                    cause,
                    f"{what} has no AsyncTask",
                    o.session_id,
                    o.correlation_id,
                )

    def _absorbed(self, o: _Outbox) -> bool:
        """The source design creates no second AsyncTask while one with the same correlation and
        type is active: the message still goes out and its result completes the older task,
        whose cause arrived first."""
        if o.correlation_id is None or o.causation_id not in self.s.order:
            return False
        mine = self.s.order[o.causation_id]
        return any(
            t.correlation_id == o.correlation_id
            and t.task_type == o.message_type
            and self.s.order.get(t.causation_id, mine) < mine
            for t in self.s.tasks
        )

    def check_tasks(self) -> None:
        if self.pruned:
            return
        for t in self.s.tasks:
            if t.id not in self.s.outbox_by_id:
                self.add(
                    Code.TASK_WITHOUT_MESSAGE,
                    t.causation_id,
                    f"AsyncTask {t.id} ({t.task_type}, {t.status}) has no outbox row",
                    t.session_id,
                    t.correlation_id,
                )

    def check_facts(self) -> None:
        same: dict[tuple[str, str], list[_Fact]] = defaultdict(list)
        for f in self.s.facts:
            same[(f.causation_id, f.event_type)].append(f)
        for (cause, event_type), group in sorted(same.items()):
            if len(group) > 1:
                ids = ", ".join(f.event_id for f in group)
                self.add(
                    Code.DUPLICATE_FACT,
                    cause,
                    f"{len(group)} {event_type} facts: {ids}",
                    group[0].session_id,
                    group[0].correlation_id,
                )
        timeout_suffix = "." + TIMEOUT_ACTION
        for f in self.s.facts:
            task = self.s.tasks_by_id.get(f.causation_id)
            if f.event_type.endswith(timeout_suffix):
                if task is None and not self.pruned:
                    self.add(
                        Code.ORPHAN_FACT,
                        f.causation_id,
                        f"{f.event_type} fact {f.event_id} names no AsyncTask",
                        f.session_id,
                        f.correlation_id,
                    )
                elif task is not None and task.status != "FAILED":
                    self.add(
                        Code.TIMEOUT_TASK_NOT_FAILED,
                        f.causation_id,
                        f"{f.event_type} fact {f.event_id} but AsyncTask is {task.status}",
                        f.session_id,
                        f.correlation_id,
                    )
            elif not self.pruned and f.causation_id not in self.s.inbox_by_id and task is None:
                self.add(
                    Code.ORPHAN_FACT,
                    f.causation_id,
                    f"{f.event_type} fact {f.event_id}: its causing message is neither in the"
                    " inbox nor an AsyncTask",
                    f.session_id,
                    f.correlation_id,
                )
            if not self.pruned and f.event_id not in self.s.outbox_by_id:
                self.add(
                    Code.FACT_WITHOUT_OUTBOX,
                    f.causation_id,
                    f"{f.event_type} fact {f.event_id} has no outbox row",
                    f.session_id,
                    f.correlation_id,
                )

    def check_dead_letters(self) -> None:
        if self.pruned:
            return
        for d in self.s.dead_letters:
            if d.id not in self.s.outbox_by_id:
                self.add(
                    Code.DEAD_LETTER_NOT_PUBLISHED,
                    d.message_id or d.id,
                    f"{d.category} dead letter {d.id} has no DLQ outbox row",
                    d.session_id,
                )

    def check_sessions(self) -> None:
        """Every correlation that reached a target's outcome has the target's request fact."""
        mapped = {a for a in self.mapping.values()}
        for corr, facts in self.s.facts_by_corr.items():
            types = {f.event_type for f in facts}
            reported: set[str] = set()
            for f in facts:
                prefix, _, rest = f.event_type.partition(".Session.")
                target, _, outcome = rest.rpartition(".")
                if target in reported:
                    continue
                needed: tuple[str, ...]
                if target in TASK_TARGETS and outcome in TARGET_OUTCOMES:
                    needed = (f"{target}.Requested",)
                elif target == "Stage" and outcome in STAGE_OUTCOMES:
                    needed = STAGE_REQUESTS
                else:
                    continue
                wanted = {fact_type(prefix, a) for a in (*needed, *mapped)}
                if types & wanted:
                    continue
                reported.add(target)
                self.add(
                    Code.REQUESTED_FACT_MISSING,
                    f.causation_id,
                    f"correlation {corr} reached {f.event_type} without"
                    f" {' or '.join(fact_type(prefix, a) for a in needed)}",
                    f.session_id,
                    corr,
                )


def _within(plan: Plan, actual: Counter[str]) -> bool:
    """The plan's facts are among the facts written (a review's plan depends on a count)."""
    need = Counter(f.event_type for f in plan.facts)
    return all(actual[t] >= n for t, n in need.items())


def verify(
    engine: Engine,
    inputs: Sequence[ExpectedInput] | None = None,
    *,
    session: str | None = None,
    sessions: bool = True,
    pruned: bool | None = None,
    commands: CommandStrategyRegistry = command_registry,
    handlers: EventHandlerRegistry = event_handler_registry,
    mapping: Mapping[str, str] | None = None,
) -> Report:
    """Check the invariants; `inputs=None` checks every inbox row and dead letter.

    `session` limits every table to one session. `sessions=False` skips the Genesis session
    invariants (for inputs that are not Genesis flows, e.g. results no command asked for).
    `pruned` says whether retention deleted inbox / outbox rows (default: guessed).
    `commands`, `handlers` and `mapping` must be what the workers ran with.
    """
    state = _load(engine, session)
    if pruned is None:
        pruned = not state.inbox and bool(state.facts)
    checker = _Checker(state, commands, handlers, dict(mapping or {}), pruned)
    if inputs is None:
        for rows in state.inbox_by_id.values():
            checker.check_message(rows)
    else:
        for expected in inputs:
            checker.check_expected(expected)
        for row in state.inbox:
            if not row.processed:
                checker.check_message([row])
    checker.check_outbox()
    checker.check_tasks()
    checker.check_facts()
    checker.check_dead_letters()
    if sessions:
        checker.check_sessions()
    problems = tuple(checker.problems)
    recorded = {(r.topic, r.message_id) for r in state.inbox}
    never_recorded = sum(
        1 for d in state.dead_letters if (d.source_topic, d.message_id) not in recorded
    )
    counts = Counts(
        messages=len(state.inbox) + never_recorded if inputs is None else len(inputs),
        facts=len(state.facts),
        tasks=len(state.tasks),
        dead_letters=len(state.dead_letters),
        outbox=len(state.outbox),
        problems=len(problems),
    )
    return Report(problems, counts, session, pruned)
