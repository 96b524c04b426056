"""The whole-database invariants: every row has its counterpart, nothing is stuck or orphaned.

They hold whatever inputs were sent, so they run over every row of the snapshot. Checks that
need rows retention may delete (inbox, sent outbox rows) are skipped when it pruned them.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping

from orchestrator.core.catalogue import GENERATION_KINDS
from orchestrator.core.plan import TIMEOUT_ACTION
from orchestrator.core.wire import fact_type
from orchestrator.devtools.verify.report import Code, Findings
from orchestrator.devtools.verify.state import DomainEventRow, OutboxRow, State

TASK_TARGETS = frozenset(k.target for k in GENERATION_KINDS)
TARGET_OUTCOMES = ("Proposed", "Confirmed", "Failed", "RegenerationRequested")
STAGE_OUTCOMES = ("Confirmed", "Failed")
STAGE_REQUESTS = ("Stage.ValidationRequested", "Stage.LockRequested")


class DatabaseChecks:
    def __init__(
        self, state: State, findings: Findings, mapping: Mapping[str, str], pruned: bool
    ) -> None:
        self.s = state
        self.add = findings.add
        self.mapping = mapping
        self.pruned = pruned

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

    def _absorbed(self, o: OutboxRow) -> bool:
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
        self._check_duplicate_facts()
        for f in self.s.facts:
            if f.event_type.endswith("." + TIMEOUT_ACTION):
                self._check_timeout_fact(f)
            elif not self.pruned and not self._caused_by_a_row(f):
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

    def _caused_by_a_row(self, f: DomainEventRow) -> bool:
        return f.causation_id in self.s.inbox_by_id or f.causation_id in self.s.tasks_by_id

    def _check_duplicate_facts(self) -> None:
        same: dict[tuple[str, str], list[DomainEventRow]] = defaultdict(list)
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

    def _check_timeout_fact(self, f: DomainEventRow) -> None:
        """A timeout is caused by the AsyncTask it failed, which must say so."""
        task = self.s.tasks_by_id.get(f.causation_id)
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
        mapped = set(self.mapping.values())
        for corr, facts in self.s.facts_by_corr.items():
            types = {f.event_type for f in facts}
            reported: set[str] = set()
            for f in facts:
                prefix, _, rest = f.event_type.partition(".Session.")
                target, _, outcome = rest.rpartition(".")
                needed = _requests_needed(target, outcome)
                if target in reported or not needed:
                    continue
                if types & {fact_type(prefix, a) for a in (*needed, *mapped)}:
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


def _requests_needed(target: str, outcome: str) -> tuple[str, ...]:
    """The request facts one of which must precede this outcome (none: no requirement)."""
    if target in TASK_TARGETS and outcome in TARGET_OUTCOMES:
        return (f"{target}.Requested",)
    if target == "Stage" and outcome in STAGE_OUTCOMES:
        return STAGE_REQUESTS
    return ()
