"""The story of a demo run: every message on the watched topics classified (command, fact,
task, result, dead letter), and where each session's targets stand."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from orchestrator.devtools.demo.options import format_score
from orchestrator.devtools.demo.sessions import COMMAND_EVENT, SessionPlan
from orchestrator.devtools.demo.topics import DemoTopics

FACT_PREFIX = "Genesis.Session."
KINDS = ("command", "fact", "task", "result", "dead letter")
TARGETS = ("Character", "Theme", "Stage")
FINAL_ACTIONS = frozenset({"Confirmed", "Failed"})


@dataclass(frozen=True)
class Event:
    at_ms: float
    session: str | None
    kind: str
    name: str
    detail: str = ""


@dataclass
class TargetState:
    name: str
    state: str = "waiting"
    attempts: int = 0
    scores: list[float] = field(default_factory=list)
    done_ms: float | None = None

    @property
    def finished(self) -> bool:
        return self.state in FINAL_ACTIONS

    def describe(self) -> str:
        text = self.state
        if self.attempts > 1:
            text += f" after {self.attempts} attempts"
        elif self.attempts == 1:
            text += " after 1 attempt"
        if self.scores:
            text += f" (review scores {', '.join(format_score(s) for s in self.scores)})"
        if not self.finished:
            text += " - not finished"
        return text


@dataclass
class SessionState:
    plan: SessionPlan
    targets: dict[str, TargetState]
    counts: dict[str, int]

    @property
    def finished(self) -> bool:
        return all(t.finished for t in self.targets.values())

    @property
    def finished_ms(self) -> float | None:
        if not self.finished:
            return None
        return max((t.done_ms or 0.0) for t in self.targets.values())


def _json_object(value: bytes | None) -> dict[str, Any] | None:
    try:
        doc = orjson.loads(value or b"")
    except orjson.JSONDecodeError:
        return None
    return doc if isinstance(doc, dict) else None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


class Story:
    """What happened so far, per session, built from the messages on the watched topics."""

    def __init__(self, plans: Sequence[SessionPlan], topics: DemoTopics) -> None:
        self.topics = topics
        self.sessions: dict[str, SessionState] = {
            plan.session_id: SessionState(
                plan,
                {name: TargetState(name) for name in TARGETS},
                dict.fromkeys(KINDS, 0),
            )
            for plan in plans
        }
        self.counts = dict.fromkeys(KINDS, 0)
        self.t0_wall = time.time()
        self.t0 = time.monotonic()
        self._task_topics = frozenset(topics.tasks)

    @property
    def finished(self) -> bool:
        return all(s.finished for s in self.sessions.values())

    @property
    def finished_count(self) -> int:
        return sum(s.finished for s in self.sessions.values())

    def short(self, session_id: str | None) -> str:
        state = self.sessions.get(session_id or "")
        if state is not None:
            return state.plan.short
        return (session_id or "-")[:8]

    def elapsed_ms(self) -> float:
        return (time.monotonic() - self.t0) * 1000.0

    def record(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: Mapping[str, str],
        timestamp_ms: int | None,
    ) -> Event | None:
        """Classify one message and update the sessions; None for a message not worth a line."""
        if timestamp_ms is not None and timestamp_ms > 0:
            at_ms = max(0.0, timestamp_ms - self.t0_wall * 1000.0)
        else:
            at_ms = self.elapsed_ms()
        event = self._classify(topic, key, value, headers, at_ms)
        if event is None:
            return None
        self.counts[event.kind] += 1
        state = self.sessions.get(event.session or "")
        if state is not None:
            state.counts[event.kind] += 1
        return event

    def _classify(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: Mapping[str, str],
        at_ms: float,
    ) -> Event | None:
        if topic == self.topics.dlq:
            reason = headers.get("dlq_reason", "")
            category = headers.get("dlq_category", "?")
            session = key.decode("utf-8", "replace") if key else None
            source = headers.get("source_topic", "?")
            return Event(
                at_ms, session, "dead letter", "DeadLetter", f"{category} from {source}: {reason}"
            )
        doc = _json_object(value)
        if doc is None:
            return None
        if topic == self.topics.domain:
            return self._domain_event(doc, at_ms)
        kind = "task" if topic in self._task_topics else "result"
        if topic != self.topics.capability and kind != "task":
            return None
        data = _dict(doc.get("data"))
        session = data.get("session_id")
        name = str(doc.get("type") or headers.get("type") or "?")
        detail = self._capability_detail(name, data, kind)
        if kind == "result" and name.startswith("Review.Quality.") and "score" in data:
            target = self._target(session, str(data.get("target_type") or "").capitalize())
            if target is not None and isinstance(data["score"], int | float):
                target.scores.append(float(data["score"]))
        return Event(at_ms, session if isinstance(session, str) else None, kind, name, detail)

    def _target(self, session: Any, target: str) -> TargetState | None:
        state = self.sessions.get(session) if isinstance(session, str) else None
        return None if state is None else state.targets.get(target)

    def _domain_event(self, doc: dict[str, Any], at_ms: float) -> Event | None:
        event_type = doc.get("event_type")
        if not isinstance(event_type, str):
            return None
        session = doc.get("aggregate_id")
        session = session if isinstance(session, str) else None
        payload = _dict(doc.get("payload"))
        if event_type == COMMAND_EVENT:
            return Event(at_ms, session, "command", event_type, str(payload.get("command_type")))
        action = event_type.removeprefix(FACT_PREFIX)
        target_name, _, verb = action.partition(".")
        detail = ""
        if "score" in payload:
            detail = f"score {format_score(payload['score'])}"
        if verb == "RegenerationRequested" and "attempts" in payload:
            attempts = payload["attempts"]
            if isinstance(attempts, int):
                detail += f", regenerating (attempt {attempts + 1})"
        if "passed" in payload:
            detail = "passed" if payload["passed"] else "not passed"
        target = self._target(session, target_name)
        if target is not None and not target.finished:
            target.state = verb
            if verb == "Proposed":
                target.attempts += 1
                detail = f"attempt {target.attempts}"
            if verb in FINAL_ACTIONS:
                target.done_ms = at_ms
        return Event(at_ms, session, "fact", event_type, detail)

    @staticmethod
    def _capability_detail(name: str, data: dict[str, Any], kind: str) -> str:
        if name.startswith("Review.Quality."):
            target = str(data.get("target_type") or "")
            if kind == "result" and "score" in data:
                return f"{target} score {format_score(data['score'])}"
            return target
        if name.startswith("Review.Consistency."):
            if kind == "result":
                return "ok" if data.get("ok") or data.get("passed") else "not ok"
            return ""
        if kind == "task":
            attempt = _dict(data.get("input")).get("attempt")
            return f"attempt {int(attempt) + 1}" if isinstance(attempt, int) else "attempt 1"
        return ""
