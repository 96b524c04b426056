"""The checks of one input message: recorded as what it is, settled, and exactly its effects.

An input is judged against its re-planned effects (or the caller's stated fact types); an
invalid input must be a dead letter, and a skipped one must have left no trace.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence

from orchestrator.core.errors import InvalidInput
from orchestrator.core.outbound import raw_dead_letter_id
from orchestrator.core.plan import FactRow, MessageRow, Plan
from orchestrator.devtools.verify.expected import ExpectedInput, InputKind, Replanner, within
from orchestrator.devtools.verify.report import Code, Findings
from orchestrator.devtools.verify.state import DeadLetterRow, DomainEventRow, InboxRow, State

SETTLED_OUTCOMES = frozenset({"processed", "no_handler"})


class MessageChecks:
    def __init__(
        self, state: State, replanner: Replanner, findings: Findings, pruned: bool
    ) -> None:
        self.s = state
        self.replanner = replanner
        self.add = findings.add
        self.pruned = pruned

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
            self._check_skipped(mid, rows)
        elif not rows:
            self._check_unrecorded(expected, mid)
        else:
            self._check_kind(expected, rows)
            self.check_message(rows, expected.fact_types)

    def _check_skipped(self, mid: str, rows: Sequence[InboxRow]) -> None:
        for r in rows:
            self.add(
                Code.SKIPPED_MESSAGE_RECORDED,
                mid,
                f"a skipped {r.message_type} has an inbox row ({r.topic})",
                r.session_id,
            )
        if mid in self.s.dead_by_message:
            self.add(Code.SKIPPED_MESSAGE_RECORDED, mid, "a skipped message was dead-lettered")

    def _check_unrecorded(self, expected: ExpectedInput, mid: str) -> None:
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

    def _check_kind(self, expected: ExpectedInput, rows: Sequence[InboxRow]) -> None:
        for row in rows:
            if row.kind != expected.kind.value:
                self.add(
                    Code.WRONG_KIND,
                    row.message_id,
                    f"recorded as {row.kind}, expected {expected.kind.value}",
                    row.session_id,
                )
            elif row.processed and row.outcome not in SETTLED_OUTCOMES:
                self.add(
                    Code.NOT_SETTLED,
                    row.message_id,
                    f"the {expected.kind.value} {row.message_type} ended {row.outcome}",
                    row.session_id,
                )

    def check_invalid(self, expected: ExpectedInput) -> None:
        found = self._dead_letters_of(expected)
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

    def _dead_letters_of(self, expected: ExpectedInput) -> list[DeadLetterRow]:
        """By the raw message's dead-letter id, else by its bytes, else by its message id."""
        found: list[DeadLetterRow] = []
        raw = expected.raw
        if raw is not None:
            d = self.s.dead_by_id.get(raw_dead_letter_id(raw))
            if d is not None:
                found.append(d)
            else:
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
        return found

    def check_message(
        self, rows: Sequence[InboxRow], fact_types: frozenset[str] | None = None
    ) -> None:
        """One message id's inbox rows (one, unless two topics carry the same id): each row
        processed, and together exactly the effects their plans ask for."""
        mid, session = rows[0].message_id, rows[0].session_id
        planned = self._settled_plans(rows)
        if planned is None:
            return  # what it wrote (or not) cannot be judged
        actual = Counter(f.event_type for f in self.s.facts_by_cause.get(mid, []))
        chosen = [next((p for p in plans if within(p, actual)), plans[0]) for plans in planned]
        facts = [f for p in chosen for f in p.facts]
        expected = fact_types if fact_types is not None else frozenset(f.event_type for f in facts)
        self.check_fact_types(mid, session, expected, facts)
        for m in (m for p in chosen for m in p.messages):
            if m.message_id in self.s.outbox_by_id or self.pruned or self.s.dispatch_failed(mid):
                continue
            if self._held_back(m, rows):
                continue
            self.add(
                Code.MISSING_CAPABILITY_MESSAGE,
                mid,
                f"no outbox row for its {m.message_type} message {m.message_id}",
                session,
                m.correlation_id,
            )

    def _held_back(self, m: MessageRow, rows: Sequence[InboxRow]) -> bool:
        """A second message of one correlation and type is not sent while the first one's task
        is active (architecture.md, "One task per correlation"): some other task of the pair was
        created before the row was processed and not completed before it."""
        times = [r.processed_at for r in rows if r.processed_at is not None]
        if m.correlation_id is None or not times:
            return False
        at = min(times)
        return any(
            t.id != m.message_id
            and t.correlation_id == m.correlation_id
            and t.task_type == m.message_type
            and t.created_at is not None
            and t.created_at <= at
            and (t.completed_at is None or t.completed_at >= at)
            for t in self.s.tasks
        )

    def _settled_plans(self, rows: Sequence[InboxRow]) -> list[list[Plan]] | None:
        """Each processed row's candidate plans; None when a row is unprocessed or no longer
        plans (reported)."""
        planned: list[list[Plan]] = []
        settled = True
        for row in rows:
            mid = row.message_id
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
                    planned.append(self.replanner.plans(row))
                except InvalidInput as exc:
                    settled = False
                    self.add(
                        Code.REPLAN_FAILED,
                        mid,
                        f"processed as {row.outcome} but planning it now fails: {exc}",
                        row.session_id,
                    )
        return planned if settled else None

    def check_fact_types(
        self,
        message_id: str,
        session_id: str | None,
        expected: frozenset[str],
        planned: Sequence[FactRow] = (),
    ) -> None:
        by_type: dict[str, list[DomainEventRow]] = defaultdict(list)
        for f in self.s.facts_by_cause.get(message_id, []):
            by_type[f.event_type].append(f)
        for t in sorted(expected):
            if not by_type.get(t):  # more than one is reported by check_facts, for every cause
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
