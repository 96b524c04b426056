"""Capability event handlers: a capability result -> an `EventAction` (fact, completion, request).

Pure functions in the source's shape: `handler(msg_type, session_id, data) -> EventAction | None`.
The registry tries handlers in order and the first that returns an action wins; a custom
handler is one function registered with `event_handler_registry.register(fn)`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from orchestrator.core.catalogue import (
    CONSISTENCY_TYPES,
    KIND_BY_RESULT,
    KIND_BY_TARGET,
    QUALITY_REVIEW_TYPES,
    SCOPE_PREFIX,
    SCOPE_TYPE,
    task_topic,
)
from orchestrator.core.errors import Category, InvalidInput
from orchestrator.core.wire import (
    capability_request,
    result_content,
    review_request,
)


@dataclass(frozen=True, slots=True)
class EventAction:
    """What a handler asks for; each part a plain dict or None (source shape).

    domain_event: {scope_type, session_id, event_action, payload, correlation_id?, causation_id?}
    task_completion: {correlation_id, expect_task_prefix, result_data}
    capability_message: as a strategy's (type, session_id, ..., _topic, _key)
    """

    domain_event: dict[str, Any] | None = None
    task_completion: dict[str, Any] | None = None
    capability_message: dict[str, Any] | None = None


DEFAULT_THRESHOLD = 7.5
DEFAULT_MAX_ATTEMPTS = 3
DEFAULT_CONSISTENCY_THRESHOLD = 1.0

Handler = Callable[[str, str, dict[str, Any]], "EventAction | None"]


def _number(data: dict[str, Any], *names: str, default: float | None = None) -> float:
    for name in names:
        value = data.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidInput(Category.WRONG_TYPE, f"field 'data.{name}' must be a number")
        return float(value)
    if default is None:
        raise InvalidInput(Category.MISSING_FIELD, f"missing field 'data.{names[0]}'")
    return default


def _fact(
    session_id: str, action: str, payload: dict[str, Any], data: dict[str, Any]
) -> dict[str, Any]:
    return {
        "scope_type": SCOPE_TYPE,
        "session_id": session_id,
        "event_action": action,
        "payload": payload,
        "correlation_id": data.get("correlation_id"),
    }


def _completion(data: dict[str, Any], prefix: str) -> dict[str, Any]:
    return {
        "correlation_id": data.get("correlation_id"),
        "expect_task_prefix": prefix,
        "result_data": data,
    }


def handle_generation_completed(
    msg_type: str, session_id: str, data: dict[str, Any]
) -> EventAction | None:
    """Generated content -> `<Target>.Proposed`, complete the task, ask for a quality review."""
    kind = KIND_BY_RESULT.get(msg_type)
    if kind is None:
        return None
    content = result_content(data)
    return EventAction(
        domain_event=_fact(
            session_id,
            f"{kind.target}.Proposed",
            {"session_id": session_id, "content": content},
            data,
        ),
        task_completion=_completion(data, kind.task_prefix),
        capability_message=review_request(session_id, kind.target_type, content, SCOPE_PREFIX),
    )


def review_attempts(reported: float, handled_reviews: int) -> int:
    """Attempts so far: the larger of the reviewer's count and the reviews we already handled."""
    return max(int(reported), handled_reviews)


def handle_quality_review_result(
    msg_type: str, session_id: str, data: dict[str, Any], handled_reviews: int = 0
) -> EventAction | None:
    """Score >= threshold confirms; else fail at max attempts; else regenerate."""
    if msg_type not in QUALITY_REVIEW_TYPES:
        return None
    score = _number(data, "score", "quality_score")
    attempts = review_attempts(_number(data, "attempts", default=0), handled_reviews)
    max_attempts = _number(data, "max_attempts", default=DEFAULT_MAX_ATTEMPTS)
    threshold = _number(data, "threshold", default=DEFAULT_THRESHOLD)
    target_type = target_type_of(data)
    kind = KIND_BY_TARGET.get(target_type)
    target = kind.target if kind else "Stage"
    completion = _completion(data, "Review.Quality.Evaluation")
    if score >= threshold:
        return EventAction(
            domain_event=_fact(
                session_id, f"{target}.Confirmed", {"session_id": session_id, "score": score}, data
            ),
            task_completion=completion,
        )
    payload = {"session_id": session_id, "score": score, "attempts": attempts + 1}
    if attempts + 1 >= max_attempts:
        return EventAction(
            domain_event=_fact(session_id, f"{target}.Failed", payload, data),
            task_completion=completion,
        )
    request = None
    if kind is not None:
        request = capability_request(
            kind.request_type,
            session_id=session_id,
            topic=task_topic(SCOPE_PREFIX, kind.topic_base),
            input={"prompt_adjust": kind.prompt_adjust, "attempt": attempts + 1},
        )
    return EventAction(
        domain_event=_fact(session_id, f"{target}.RegenerationRequested", payload, data),
        task_completion=completion,
        capability_message=request,
    )


def target_type_of(data: dict[str, Any]) -> str:
    value = data.get("target_type") or data.get("entity") or "content"
    if not isinstance(value, str):
        raise InvalidInput(Category.WRONG_TYPE, "field 'data.target_type' must be a string")
    return value


def review_outcome_actions(target_type: str) -> tuple[str, ...]:
    """The fact actions that record one handled review of `target_type` (for counting)."""
    kind = KIND_BY_TARGET.get(target_type)
    target = kind.target if kind else "Stage"
    return tuple(
        f"{target}.{outcome}" for outcome in ("Confirmed", "Failed", "RegenerationRequested")
    )


def handle_consistency_check_result(
    msg_type: str, session_id: str, data: dict[str, Any]
) -> EventAction | None:
    """ok / passed, else score >= threshold (default 1.0) -> Stage.Confirmed, else Stage.Failed."""
    if msg_type not in CONSISTENCY_TYPES:
        return None
    if data.get("ok") is True or data.get("passed") is True:
        passed = True
    elif data.get("score") is not None:
        threshold = _number(data, "threshold", default=DEFAULT_CONSISTENCY_THRESHOLD)
        passed = _number(data, "score") >= threshold
    else:
        passed = False
    action = "Stage.Confirmed" if passed else "Stage.Failed"
    payload = {"session_id": session_id, "passed": passed, "result": result_content(data)}
    return EventAction(
        domain_event=_fact(session_id, action, payload, data),
        task_completion=_completion(data, "Review.Consistency.Check"),
    )


class EventHandlerRegistry:
    """Handlers tried in registration order; custom ones are appended after the built-ins."""

    def __init__(self) -> None:
        self._handlers: list[Handler] = []

    def register(self, handler: Handler) -> Handler:
        """Add a handler; usable as a decorator. Returns it unchanged."""
        self._handlers.append(handler)
        return handler

    def handlers(self) -> list[Handler]:
        return list(self._handlers)

    def handle(
        self, msg_type: str, session_id: str, data: dict[str, Any], handled_reviews: int = 0
    ) -> tuple[str | None, EventAction | None]:
        """(name of the matching handler, its action), or (None, None) when none matched."""
        for handler in self._handlers:
            if handler is handle_quality_review_result:
                action = handle_quality_review_result(msg_type, session_id, data, handled_reviews)
            else:
                action = handler(msg_type, session_id, data)
            if action is not None:
                return getattr(handler, "__qualname__", repr(handler)), action
        return None, None


def default_handler_registry() -> EventHandlerRegistry:
    registry = EventHandlerRegistry()
    registry.register(handle_generation_completed)
    registry.register(handle_quality_review_result)
    registry.register(handle_consistency_check_result)
    return registry


event_handler_registry = default_handler_registry()
"""The process-wide registry: register custom handlers here."""
