"""What the invariant checker finds: problem codes, problems, counts and the report.

Every problem names the input message it concerns, so a report reads message by message.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


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


class Findings:
    """The problems found so far, each once: several checks may meet the same break."""

    def __init__(self) -> None:
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
