"""The capability simulator answers each request once, like a service that deduplicates."""

from __future__ import annotations

import orjson
import pytest

from orchestrator.devtools import simulator
from orchestrator.devtools.simulator import CapabilitySimulator, SimulatorConfig


def request(request_id: str, correlation: str = "c-1") -> bytes:
    return orjson.dumps(
        {
            "id": request_id,
            "type": "Review.Quality.EvaluationRequested",
            "data": {"session_id": "s-1", "correlation_id": correlation, "target_type": "theme"},
        }
    )


def answer_id(sim: CapabilitySimulator, raw: bytes) -> str | None:
    a = sim.answer(raw, b"s-1", 0.0)
    return None if a is None else str(orjson.loads(a.value)["id"])


def test_a_copy_of_an_answered_request_gets_no_second_answer() -> None:
    sim = CapabilitySimulator(SimulatorConfig(scores=[5.0, 9.0]), "results")
    first = answer_id(sim, request("r-1"))
    assert first is not None
    assert answer_id(sim, request("r-1")) is None
    assert (sim.answered, sim.duplicates, sim.received) == (1, 1, 2)
    # The copy did not count as a second review: the next request gets the next score.
    a = sim.answer(request("r-2"), b"s-1", 0.0)
    assert a is not None and orjson.loads(a.value)["data"]["score"] == 9.0


def test_answer_ids_derive_from_the_request_id() -> None:
    one = CapabilitySimulator(SimulatorConfig(), "results")
    other = CapabilitySimulator(SimulatorConfig(), "results")
    assert answer_id(one, request("r-1")) == answer_id(other, request("r-1"))
    assert answer_id(one, request("r-2")) != answer_id(other, request("r-3"))


def test_a_copy_seen_after_the_memory_moved_on_is_answered_under_the_same_id(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(simulator, "ANSWERED_MEMORY", 2)
    sim = CapabilitySimulator(SimulatorConfig(), "results")
    first = answer_id(sim, request("r-1"))
    answer_id(sim, request("r-2"))
    answer_id(sim, request("r-3"))  # r-1 is forgotten
    assert answer_id(sim, request("r-1")) == first


def test_a_request_without_an_id_is_still_answered_each_time() -> None:
    sim = CapabilitySimulator(SimulatorConfig(), "results")
    raw = orjson.dumps(
        {"type": "Review.Consistency.CheckRequested", "data": {"correlation_id": "c-1"}}
    )
    ids = {answer_id(sim, raw), answer_id(sim, raw)}
    assert None not in ids and len(ids) == 2
