"""Capability event handlers: generation results, quality reviews, consistency checks, registry."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

import orchestrator.core.result_handlers as event_handlers_module
from orchestrator.core.errors import Category, InvalidInput
from orchestrator.core.inbound import CapabilityEvent, RawMessage, parse
from orchestrator.core.plan import Completion, plan_capability
from orchestrator.core.result_handlers import (
    EventAction,
    EventHandlerRegistry,
    default_handler_registry,
    handle_consistency_check_result,
    handle_generation_completed,
    handle_quality_review_result,
)

SESSION = "5a7c0e1d-2b3f-4c6d-8e9f-a0b1c2d3e4f5"
CORR = "corr-42"
NOW = "2024-05-01T12:00:00Z"

# seed-design.md: target_type -> result types, fact target, task prefix, request type, topic,
# prompt_adjust.
KINDS: dict[str, tuple[tuple[str, str], str, str, str, str, str]] = {
    "character": (
        ("Character.Design.Generated", "Character.Generated"),
        "Character",
        "Character.Design.Generation",
        "Character.Design.GenerationRequested",
        "genesis.character.tasks",
        "structured",
    ),
    "theme": (
        ("Outliner.Theme.Generated", "Theme.Generated"),
        "Theme",
        "Outliner.Theme.Generation",
        "Outliner.Theme.GenerationRequested",
        "genesis.outline.tasks",
        "detailed",
    ),
    "seed": (
        ("Outliner.Concept.Generated", "Seed.Generated"),
        "Seed",
        "Outliner.Concept.Generation",
        "Outliner.Concept.GenerationRequested",
        "genesis.outline.tasks",
        "refined",
    ),
    "world": (
        ("Worldbuilder.World.Generated", "World.Generated"),
        "World",
        "Worldbuilder.World.Generation",
        "Worldbuilder.World.GenerationRequested",
        "genesis.world.tasks",
        "refined",
    ),
    "plot": (
        ("Plot.Structure.Generated", "Plot.Generated"),
        "Plot",
        "Plot.Structure.Generation",
        "Plot.Structure.GenerationRequested",
        "genesis.plot.tasks",
        "refined",
    ),
    "details": (
        ("Writer.Content.Generated", "Details.Generated"),
        "Details",
        "Writer.Content.Generation",
        "Writer.Content.GenerationRequested",
        "genesis.writer.tasks",
        "refined",
    ),
}

GENERATION_CASES = [
    pytest.param(target_type, result_type, target, prefix, id=result_type)
    for target_type, ((first, second), target, prefix, *_rest) in KINDS.items()
    for result_type in (first, second)
]
KIND_CASES = [
    pytest.param(target_type, target, request_type, topic, adjust, id=target_type)
    for target_type, (_, target, _prefix, request_type, topic, adjust) in KINDS.items()
]
QUALITY_TYPES = ["Review.Quality.Evaluated", "Review.Quality.Result"]
CONSISTENCY_TYPES = ["Review.Consistency.Checked", "Consistency.Checked"]


def fact(action: str, payload: dict[str, Any], correlation: str | None = CORR) -> dict[str, Any]:
    return {
        "scope_type": "GENESIS",
        "session_id": SESSION,
        "event_action": action,
        "payload": payload,
        "correlation_id": correlation,
    }


def completion(data: dict[str, Any], prefix: str) -> dict[str, Any]:
    return {
        "correlation_id": data.get("correlation_id"),
        "expect_task_prefix": prefix,
        "result_data": data,
    }


# --- generation completed ----------------------------------------------------------------


@pytest.mark.parametrize(("target_type", "result_type", "target", "prefix"), GENERATION_CASES)
def test_generation_completed(target_type: str, result_type: str, target: str, prefix: str) -> None:
    data = {
        "session_id": SESSION,
        "correlation_id": CORR,
        "aggregate_id": SESSION,
        "causation_id": "cause-1",
        "name": "Lin Feng",
        "sheet": {"traits": ["brave"], "age": 17},
    }
    content = {"name": "Lin Feng", "sheet": {"traits": ["brave"], "age": 17}}

    action = handle_generation_completed(result_type, SESSION, data)

    assert action is not None
    assert action.domain_event == fact(
        f"{target}.Proposed", {"session_id": SESSION, "content": content}
    )
    assert action.task_completion == completion(data, prefix)
    assert action.capability_message == {
        "type": "Review.Quality.EvaluationRequested",
        "session_id": SESSION,
        "target_type": target_type,
        "input": {"content": content},
        "_topic": "genesis.review.tasks",
        "_key": SESSION,
    }


def test_generation_completed_with_only_routing_fields_has_empty_content() -> None:
    data = {"session_id": SESSION, "correlation_id": CORR}
    action = handle_generation_completed("Character.Generated", SESSION, data)
    assert action is not None
    assert action.domain_event is not None
    assert action.domain_event["payload"] == {"session_id": SESSION, "content": {}}
    assert action.capability_message is not None
    assert action.capability_message["input"] == {"content": {}}


def test_generation_completed_does_not_mutate_data() -> None:
    data = {"session_id": SESSION, "correlation_id": CORR, "text": "x"}
    before = dict(data)
    handle_generation_completed("Theme.Generated", SESSION, data)
    assert data == before


@pytest.mark.parametrize(
    "msg_type",
    ["Character.Design.GenerationRequested", "Review.Quality.Evaluated", "Character", "Other"],
)
def test_generation_handler_ignores_other_types(msg_type: str) -> None:
    assert handle_generation_completed(msg_type, SESSION, {"correlation_id": CORR}) is None


# --- quality review ------------------------------------------------------------------------


def review(**fields: Any) -> dict[str, Any]:
    return {"session_id": SESSION, "correlation_id": CORR, **fields}


@pytest.mark.parametrize("msg_type", QUALITY_TYPES)
@pytest.mark.parametrize(("target_type", "target", "request_type", "topic", "adjust"), KIND_CASES)
def test_quality_score_equal_to_threshold_confirms(
    msg_type: str, target_type: str, target: str, request_type: str, topic: str, adjust: str
) -> None:
    data = review(score=8.0, threshold=8.0, target_type=target_type)
    action = handle_quality_review_result(msg_type, SESSION, data)
    assert action == EventAction(
        domain_event=fact(f"{target}.Confirmed", {"session_id": SESSION, "score": 8.0}),
        task_completion=completion(data, "Review.Quality.Evaluation"),
        capability_message=None,
    )


@pytest.mark.parametrize(("target_type", "target", "request_type", "topic", "adjust"), KIND_CASES)
def test_quality_score_just_below_threshold_at_last_attempt_fails(
    target_type: str, target: str, request_type: str, topic: str, adjust: str
) -> None:
    data = review(score=7.99, threshold=8.0, attempts=2, max_attempts=3, target_type=target_type)
    action = handle_quality_review_result("Review.Quality.Evaluated", SESSION, data)
    assert action == EventAction(
        domain_event=fact(
            f"{target}.Failed", {"session_id": SESSION, "score": 7.99, "attempts": 3}
        ),
        task_completion=completion(data, "Review.Quality.Evaluation"),
        capability_message=None,
    )


@pytest.mark.parametrize("msg_type", QUALITY_TYPES)
@pytest.mark.parametrize(("target_type", "target", "request_type", "topic", "adjust"), KIND_CASES)
def test_quality_below_threshold_before_last_attempt_regenerates(
    msg_type: str, target_type: str, target: str, request_type: str, topic: str, adjust: str
) -> None:
    data = review(score=5, threshold=8, attempts=1, max_attempts=3, target_type=target_type)
    action = handle_quality_review_result(msg_type, SESSION, data)
    assert action == EventAction(
        domain_event=fact(
            f"{target}.RegenerationRequested",
            {"session_id": SESSION, "score": 5.0, "attempts": 2},
        ),
        task_completion=completion(data, "Review.Quality.Evaluation"),
        capability_message={
            "type": request_type,
            "session_id": SESSION,
            "input": {"prompt_adjust": adjust, "attempt": 2},
            "_topic": topic,
            "_key": SESSION,
        },
    )


def test_quality_defaults_attempts_zero_max_three_threshold_seven_and_a_half() -> None:
    # attempts 0 + 1 < 3: regenerate, asking for attempt 1.
    below = handle_quality_review_result(
        "Review.Quality.Evaluated", SESSION, review(score=7.49, target_type="character")
    )
    assert below is not None
    assert below.domain_event is not None
    assert below.domain_event["event_action"] == "Character.RegenerationRequested"
    assert below.domain_event["payload"] == {"session_id": SESSION, "score": 7.49, "attempts": 1}
    assert below.capability_message is not None
    assert below.capability_message["input"] == {"prompt_adjust": "structured", "attempt": 1}

    at = handle_quality_review_result(
        "Review.Quality.Evaluated", SESSION, review(score=7.5, target_type="character")
    )
    assert at is not None
    assert at.domain_event is not None
    assert at.domain_event["event_action"] == "Character.Confirmed"


@pytest.mark.parametrize(
    ("attempts", "expected_action", "next_attempt"),
    [
        (0, "Theme.RegenerationRequested", 1),
        (1, "Theme.RegenerationRequested", 2),
        (2, "Theme.Failed", None),
        (5, "Theme.Failed", None),
    ],
)
def test_quality_default_max_attempts_is_three(
    attempts: int, expected_action: str, next_attempt: int | None
) -> None:
    data = review(score=1, attempts=attempts, target_type="theme")
    action = handle_quality_review_result("Review.Quality.Result", SESSION, data)
    assert action is not None
    assert action.domain_event is not None
    assert action.domain_event["event_action"] == expected_action
    assert action.domain_event["payload"]["attempts"] == attempts + 1
    if next_attempt is None:
        assert action.capability_message is None
    else:
        assert action.capability_message is not None
        assert action.capability_message["input"] == {
            "prompt_adjust": "detailed",
            "attempt": next_attempt,
        }


def test_quality_max_attempts_one_fails_the_first_review() -> None:
    data = review(score=2, max_attempts=1, target_type="seed")
    action = handle_quality_review_result("Review.Quality.Evaluated", SESSION, data)
    assert action is not None
    assert action.domain_event is not None
    assert action.domain_event["event_action"] == "Seed.Failed"
    assert action.domain_event["payload"] == {"session_id": SESSION, "score": 2.0, "attempts": 1}
    assert action.capability_message is None


def test_quality_score_alias() -> None:
    data = review(quality_score=9.1, target_type="world")
    action = handle_quality_review_result("Review.Quality.Evaluated", SESSION, data)
    assert action is not None
    assert action.domain_event == fact("World.Confirmed", {"session_id": SESSION, "score": 9.1})


def test_score_takes_precedence_over_quality_score() -> None:
    data = review(score=3.0, quality_score=9.0, target_type="world")
    action = handle_quality_review_result("Review.Quality.Evaluated", SESSION, data)
    assert action is not None
    assert action.domain_event is not None
    assert action.domain_event["event_action"] == "World.RegenerationRequested"
    assert action.domain_event["payload"]["score"] == 3.0


def test_quality_target_type_from_entity() -> None:
    data = review(score=9, entity="plot")
    action = handle_quality_review_result("Review.Quality.Evaluated", SESSION, data)
    assert action is not None
    assert action.domain_event is not None
    assert action.domain_event["event_action"] == "Plot.Confirmed"


def test_quality_target_type_beats_entity() -> None:
    data = review(score=9, target_type="details", entity="plot")
    action = handle_quality_review_result("Review.Quality.Evaluated", SESSION, data)
    assert action is not None
    assert action.domain_event is not None
    assert action.domain_event["event_action"] == "Details.Confirmed"


@pytest.mark.parametrize(
    "extra",
    [
        pytest.param({}, id="default-content"),
        pytest.param({"target_type": "chapter"}, id="unknown-target"),
        pytest.param({"entity": "scene"}, id="unknown-entity"),
    ],
)
@pytest.mark.parametrize(
    ("score", "attempts", "outcome"),
    [(9.0, 0, "Confirmed"), (1.0, 0, "RegenerationRequested"), (1.0, 2, "Failed")],
)
def test_quality_unknown_target_uses_stage_and_never_regenerates(
    extra: dict[str, Any], score: float, attempts: int, outcome: str
) -> None:
    data = review(score=score, attempts=attempts, **extra)
    action = handle_quality_review_result("Review.Quality.Evaluated", SESSION, data)
    assert action is not None
    assert action.domain_event is not None
    assert action.domain_event["event_action"] == f"Stage.{outcome}"
    assert action.capability_message is None
    assert action.task_completion == completion(data, "Review.Quality.Evaluation")


def test_handled_reviews_wins_when_larger_than_reported_attempts() -> None:
    # The reviewer omits `attempts`; the orchestrator has already handled one review.
    data = review(score=1, target_type="character")
    action = handle_quality_review_result("Review.Quality.Evaluated", SESSION, data, 1)
    assert action is not None
    assert action.domain_event is not None
    assert action.domain_event["event_action"] == "Character.RegenerationRequested"
    assert action.domain_event["payload"]["attempts"] == 2
    assert action.capability_message is not None
    assert action.capability_message["input"] == {"prompt_adjust": "structured", "attempt": 2}

    # Two handled reviews: this third one is the last attempt.
    final = handle_quality_review_result("Review.Quality.Evaluated", SESSION, data, 2)
    assert final is not None
    assert final.domain_event is not None
    assert final.domain_event["event_action"] == "Character.Failed"
    assert final.domain_event["payload"] == {"session_id": SESSION, "score": 1.0, "attempts": 3}
    assert final.capability_message is None


def test_reported_attempts_win_when_larger_than_handled_reviews() -> None:
    data = review(score=1, attempts=2, target_type="character")
    action = handle_quality_review_result("Review.Quality.Evaluated", SESSION, data, 1)
    assert action is not None
    assert action.domain_event is not None
    assert action.domain_event["event_action"] == "Character.Failed"
    assert action.domain_event["payload"]["attempts"] == 3


def test_quality_missing_score_is_invalid_input() -> None:
    with pytest.raises(InvalidInput) as info:
        handle_quality_review_result("Review.Quality.Evaluated", SESSION, review(target_type="x"))
    assert info.value.category is Category.MISSING_FIELD


@pytest.mark.parametrize(
    "fields",
    [
        {"score": "8.0"},
        {"score": True},
        {"score": [8]},
        {"quality_score": "high"},
        {"score": 8, "attempts": "1"},
        {"score": 8, "max_attempts": "3"},
        {"score": 8, "threshold": None, "attempts": False},
        {"score": 8, "threshold": "7"},
    ],
)
def test_quality_non_numeric_fields_are_wrong_type(fields: dict[str, Any]) -> None:
    with pytest.raises(InvalidInput) as info:
        handle_quality_review_result("Review.Quality.Evaluated", SESSION, review(**fields))
    assert info.value.category is Category.WRONG_TYPE


def test_quality_handler_ignores_other_types() -> None:
    assert handle_quality_review_result("Review.Quality.Requested", SESSION, review()) is None


# --- consistency check ---------------------------------------------------------------------


@pytest.mark.parametrize("msg_type", CONSISTENCY_TYPES)
@pytest.mark.parametrize(
    ("fields", "passed"),
    [
        pytest.param({"ok": True}, True, id="ok"),
        pytest.param({"passed": True}, True, id="passed"),
        pytest.param({"ok": False, "passed": True}, True, id="passed-not-ok"),
        pytest.param({"score": 1.0}, True, id="score-equals-default-threshold"),
        pytest.param({"score": 0.99}, False, id="score-below-default-threshold"),
        pytest.param({"score": 0.5, "threshold": 0.5}, True, id="score-equals-threshold"),
        pytest.param({"score": 0.49, "threshold": 0.5}, False, id="score-below-threshold"),
        pytest.param({}, False, id="neither"),
        pytest.param({"ok": False}, False, id="ok-false"),
        pytest.param({"ok": "yes"}, False, id="ok-not-bool"),
    ],
)
def test_consistency_check(msg_type: str, fields: dict[str, Any], passed: bool) -> None:
    data = {"session_id": SESSION, "correlation_id": CORR, "notes": ["n1"], **fields}
    result = {"notes": ["n1"], **fields}

    action = handle_consistency_check_result(msg_type, SESSION, data)

    assert action == EventAction(
        domain_event=fact(
            "Stage.Confirmed" if passed else "Stage.Failed",
            {"session_id": SESSION, "passed": passed, "result": result},
        ),
        task_completion=completion(data, "Review.Consistency.Check"),
        capability_message=None,
    )


def test_consistency_non_numeric_score_is_wrong_type() -> None:
    with pytest.raises(InvalidInput) as info:
        handle_consistency_check_result(
            "Consistency.Checked", SESSION, {"session_id": SESSION, "score": "1"}
        )
    assert info.value.category is Category.WRONG_TYPE


def test_consistency_handler_ignores_other_types() -> None:
    assert handle_consistency_check_result("Review.Consistency.CheckRequested", SESSION, {}) is None


# --- registry ------------------------------------------------------------------------------


def test_default_registry_order() -> None:
    assert default_handler_registry().handlers() == [
        handle_generation_completed,
        handle_quality_review_result,
        handle_consistency_check_result,
    ]


def test_registry_dispatches_each_builtin() -> None:
    registry = default_handler_registry()
    name, action = registry.handle("Plot.Generated", SESSION, {"correlation_id": CORR})
    assert name == "handle_generation_completed"
    assert action is not None
    assert action.domain_event is not None
    assert action.domain_event["event_action"] == "Plot.Proposed"

    name, action = registry.handle(
        "Review.Quality.Result", SESSION, review(score=9, target_type="plot")
    )
    assert name == "handle_quality_review_result"
    assert action is not None
    assert action.domain_event is not None
    assert action.domain_event["event_action"] == "Plot.Confirmed"

    name, action = registry.handle("Consistency.Checked", SESSION, {"ok": True})
    assert name == "handle_consistency_check_result"
    assert action is not None
    assert action.domain_event is not None
    assert action.domain_event["event_action"] == "Stage.Confirmed"


def test_registry_passes_handled_reviews_to_the_quality_handler() -> None:
    registry = default_handler_registry()
    data = review(score=1, target_type="seed")
    _, action = registry.handle("Review.Quality.Evaluated", SESSION, data, 2)
    assert action is not None
    assert action.domain_event is not None
    assert action.domain_event["event_action"] == "Seed.Failed"
    _, action = registry.handle("Review.Quality.Evaluated", SESSION, data)
    assert action is not None
    assert action.domain_event is not None
    assert action.domain_event["event_action"] == "Seed.RegenerationRequested"


def test_registry_no_match() -> None:
    registry = default_handler_registry()
    assert registry.handle("Unknown.Thing.Happened", SESSION, {"x": 1}) == (None, None)
    assert EventHandlerRegistry().handle("Character.Generated", SESSION, {}) == (None, None)


def test_registry_first_match_wins_and_order_is_kept() -> None:
    registry = EventHandlerRegistry()
    calls: list[str] = []

    def declines(msg_type: str, session_id: str, data: dict[str, Any]) -> EventAction | None:
        calls.append("declines")
        return None

    def first(msg_type: str, session_id: str, data: dict[str, Any]) -> EventAction | None:
        calls.append("first")
        return EventAction(domain_event={"event_action": "First.Done"})

    def second(msg_type: str, session_id: str, data: dict[str, Any]) -> EventAction | None:
        calls.append("second")
        return EventAction(domain_event={"event_action": "Second.Done"})

    assert registry.register(declines) is declines
    registry.register(first)
    registry.register(second)

    name, action = registry.handle("Any.Type", SESSION, {})
    assert name is not None
    assert name.endswith("first")
    assert action == EventAction(domain_event={"event_action": "First.Done"})
    assert calls == ["declines", "first"]
    assert registry.handlers() == [declines, first, second]


def test_custom_handler_registered_after_builtins_does_not_shadow_them() -> None:
    registry = default_handler_registry()

    def catch_all(msg_type: str, session_id: str, data: dict[str, Any]) -> EventAction | None:
        return EventAction(domain_event={"event_action": "Caught"})

    registry.register(catch_all)
    name, _ = registry.handle("Character.Generated", SESSION, {})
    assert name == "handle_generation_completed"
    name, action = registry.handle("Something.Else", SESSION, {})
    assert name is not None
    assert name.endswith("catch_all")
    assert action == EventAction(domain_event={"event_action": "Caught"})


@pytest.fixture
def fresh_global_handlers(monkeypatch: pytest.MonkeyPatch) -> EventHandlerRegistry:
    fresh = default_handler_registry()
    monkeypatch.setattr(event_handlers_module, "event_handler_registry", fresh)
    return fresh


def _register_source_example() -> None:
    """The custom-handler example of the source design, as written there."""
    from orchestrator.core.result_handlers import EventAction, event_handler_registry

    class CustomEventHandler:
        @staticmethod
        def handle_custom_event(
            msg_type: str, session_id: str, data: dict[str, Any]
        ) -> EventAction | None:
            if msg_type == "Custom.Process.Completed":
                return EventAction(
                    domain_event={
                        "scope_type": "GENESIS",
                        "session_id": session_id,
                        "event_action": "Custom.Completed",
                        "payload": data,
                    },
                    task_completion={
                        "correlation_id": data.get("correlation_id"),
                        "expect_task_prefix": "Custom.Process",
                        "result_data": data,
                    },
                )
            return None

    event_handler_registry.register(CustomEventHandler.handle_custom_event)


def test_source_custom_handler_example(fresh_global_handlers: EventHandlerRegistry) -> None:
    _register_source_example()
    assert len(fresh_global_handlers.handlers()) == 4
    assert len(default_handler_registry().handlers()) == 3

    data = {"session_id": SESSION, "correlation_id": CORR, "result": "done"}
    name, action = fresh_global_handlers.handle("Custom.Process.Completed", SESSION, data)
    assert name is not None
    assert name.endswith("CustomEventHandler.handle_custom_event")
    assert action == EventAction(
        domain_event={
            "scope_type": "GENESIS",
            "session_id": SESSION,
            "event_action": "Custom.Completed",
            "payload": data,
        },
        task_completion={
            "correlation_id": CORR,
            "expect_task_prefix": "Custom.Process",
            "result_data": data,
        },
    )
    assert fresh_global_handlers.handle("Custom.Process.Started", SESSION, data) == (None, None)


def test_source_custom_handler_plans_a_genesis_fact(
    fresh_global_handlers: EventHandlerRegistry,
) -> None:
    _register_source_example()
    body = {
        "id": "cap-custom-1",
        "ts": "2024-05-01T11:59:59Z",
        "type": "Custom.Process.Completed",
        "data": {"session_id": SESSION, "correlation_id": CORR, "result": "done"},
    }
    evt = parse(RawMessage("genesis.capability.events", orjson.dumps(body)), 1_048_576)
    assert isinstance(evt, CapabilityEvent)

    plan = plan_capability(evt, fresh_global_handlers, 0, NOW)

    assert plan.handler is not None
    assert plan.handler.endswith("CustomEventHandler.handle_custom_event")
    assert len(plan.facts) == 1
    row = plan.facts[0]
    assert row.event_type == "Genesis.Session.Custom.Completed"
    assert row.session_id == SESSION
    assert row.correlation_id == CORR
    assert row.causation_id == "cap-custom-1"
    assert row.payload == body["data"]
    assert row.envelope["aggregate_type"] == "GenesisSession"
    assert plan.messages == ()
    assert plan.completions == (Completion(CORR, "Custom.Process", body["data"]),)
