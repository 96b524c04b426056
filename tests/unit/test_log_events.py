"""The log events table of docs/operations.md against the code, and the step events at work.

The table is the contract operators debug by (the source design's 48 names, then ours). The
source's names are listed here too, so the check needs nothing outside this repository: every
tabled name is emitted in `orchestrator/` at the level the table gives, every `orchestrator_*`
event the code emits is tabled, and the 48 are all there. Emit sites are found with `ast`: a
call of `.debug/.info/.warning/.error/.exception/.critical` (or a conditional choice of two such
methods) whose first argument is a string literal or a module constant.
"""

from __future__ import annotations

import ast
import io
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import structlog

from orchestrator.observability.logs import configure_logging
from orchestrator.service import apply_plan, process_message, step_logs
from orchestrator.service.process_message import MessageProcessor
from tests.support.db import FIXED_NOW, Wire
from tests.support.memory_store import MemoryStore

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs" / "operations.md"
BEGIN, END = "<!-- log events:", "<!-- end of log events -->"
ADDED_HEADING = "The events we added"
LEVELS = {"debug", "info", "warning", "error", "exception", "critical"}
ROW = re.compile(r"^\| `(orchestrator_[a-z_]+)` \| ([A-Z /]+) \| (.+) \|$")
# Pass-throughs that log an event named by their caller (whose call is the one checked).
PASS_THROUGH = {("orchestrator/service/step_logs.py", "debug")}

# The source design's event names, in its order (../shared/seed-design.md, "Observability").
SOURCE_EVENTS = (
    "orchestrator_message_received",
    "orchestrator_processing_domain_event",
    "orchestrator_processing_capability_event",
    "orchestrator_ignored_message",
    "orchestrator_domain_event_details",
    "orchestrator_domain_event_ignored",
    "orchestrator_domain_event_missing_command_type",
    "orchestrator_processing_command",
    "orchestrator_command_mapped",
    "orchestrator_command_mapping_failed",
    "orchestrator_domain_event_persisted",
    "orchestrator_domain_event_persist_failed",
    "orchestrator_domain_event_processed",
    "orchestrator_capability_event_details",
    "orchestrator_trying_handler",
    "orchestrator_handler_matched",
    "orchestrator_no_handler_matched",
    "orchestrator_executing_event_action",
    "orchestrator_persisting_domain_event",
    "orchestrator_completing_async_task",
    "orchestrator_returning_capability_message",
    "orchestrator_creating_async_task",
    "orchestrator_async_task_skipped",
    "orchestrator_async_task_correlation_parsed",
    "orchestrator_async_task_correlation_parse_failed",
    "orchestrator_checking_existing_task",
    "orchestrator_async_task_already_exists",
    "orchestrator_creating_new_async_task",
    "orchestrator_async_task_created_success",
    "orchestrator_async_task_complete_skipped",
    "orchestrator_async_task_complete_correlation_parsed",
    "orchestrator_async_task_complete_correlation_parse_failed",
    "orchestrator_searching_async_task_to_complete",
    "orchestrator_async_task_not_found_for_completion",
    "orchestrator_async_task_found_for_completion",
    "orchestrator_async_task_completed_success",
    "orchestrator_checking_existing_domain_event",
    "orchestrator_domain_event_already_exists",
    "orchestrator_no_existing_domain_event_found",
    "orchestrator_existing_domain_event_check_failed",
    "orchestrator_creating_new_domain_event",
    "orchestrator_domain_event_created",
    "orchestrator_using_existing_domain_event",
    "orchestrator_checking_outbox_entry",
    "orchestrator_creating_outbox_entry",
    "orchestrator_outbox_entry_created",
    "orchestrator_outbox_entry_already_exists",
    "orchestrator_domain_event_persist_completed",
)


# -- the table -------------------------------------------------------------------------------


def tables() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """(source events, added events), each name -> its levels (lower case)."""
    text = DOCS.read_text()
    assert BEGIN in text and END in text, "the log events section lost its markers"
    section = text.split(BEGIN, 1)[1].split(END, 1)[0]
    assert ADDED_HEADING in section
    source_part, added_part = section.split(ADDED_HEADING, 1)
    return _rows(source_part), _rows(added_part)


def _rows(part: str) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for line in part.splitlines():
        m = ROW.match(line.strip())
        if m:
            assert m[1] not in out, f"{m[1]} is tabled twice"
            out[m[1]] = {lvl.strip().lower() for lvl in m[2].split("/")}
    return out


# -- the code --------------------------------------------------------------------------------


def _levels_of(func: ast.expr) -> set[str]:
    """`log.info` -> {info}; `(log.error if x else log.warning)` -> {error, warning}."""
    if isinstance(func, ast.Attribute) and func.attr in LEVELS:
        return {func.attr}
    if isinstance(func, ast.IfExp):
        body, orelse = _levels_of(func.body), _levels_of(func.orelse)
        return body | orelse if body and orelse else set()
    return set()


def _constants(tree: ast.Module) -> dict[str, str]:
    return {
        t.id: node.value.value
        for node in tree.body
        if isinstance(node, ast.Assign)
        and isinstance(node.value, ast.Constant)
        and isinstance(node.value.value, str)
        for t in node.targets
        if isinstance(t, ast.Name)
    }


def _calls(tree: ast.Module) -> Iterator[tuple[ast.Call, str | None]]:
    """Every call with the name of the function it is in."""

    def walk(node: ast.AST, where: str | None) -> Iterator[tuple[ast.Call, str | None]]:
        for child in ast.iter_child_nodes(node):
            inner = child.name if isinstance(child, ast.FunctionDef) else where
            if isinstance(child, ast.Call):
                yield child, where
            yield from walk(child, inner)

    yield from walk(tree, None)


def emitted() -> tuple[dict[str, set[str]], list[str]]:
    """Each event name emitted in orchestrator/ -> its levels; and the log calls whose event
    name is not a literal (which the table could not be checked against)."""
    events: dict[str, set[str]] = {}
    unnamed: list[str] = []
    for path in sorted((ROOT / "orchestrator").rglob("*.py")):
        rel = str(path.relative_to(ROOT))
        tree = ast.parse(path.read_text())
        constants = _constants(tree)
        for call, where in _calls(tree):
            levels = _levels_of(call.func)
            if not levels or not call.args:
                continue
            first = call.args[0]
            name = None
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                name = first.value
            elif isinstance(first, ast.Name) and first.id in constants:
                name = constants[first.id]
            if name is None:
                if (rel, where) not in PASS_THROUGH and "log" in ast.unparse(call.func):
                    unnamed.append(f"{rel}:{call.lineno}")
                continue
            if name.startswith("orchestrator_"):
                events.setdefault(name, set()).update(levels)
    return events, unnamed


def test_the_source_designs_48_events_are_all_tabled_in_its_order() -> None:
    source, added = tables()
    assert len(SOURCE_EVENTS) == len(set(SOURCE_EVENTS)) == 48
    assert list(source) == list(SOURCE_EVENTS)
    for spot in (
        "orchestrator_trying_handler",
        "orchestrator_async_task_skipped",
        "orchestrator_domain_event_persist_completed",
    ):
        assert spot in source
    assert not set(source) & set(added), "an event is in both tables"


def test_every_tabled_event_is_emitted_at_the_level_the_table_gives() -> None:
    source, added = tables()
    code, _ = emitted()
    wrong = {
        name: (levels, code.get(name))
        for name, levels in {**source, **added}.items()
        if code.get(name) != levels
    }
    assert not wrong, f"table level(s) vs code (None: never emitted): {wrong}"


def test_every_event_the_code_emits_is_tabled() -> None:
    source, added = tables()
    code, unnamed = emitted()
    assert len(code) > 60  # the scan finds the emit sites at all
    untabled = sorted(set(code) - set(source) - set(added))
    assert not untabled, f"add these to docs/operations.md (Log events): {untabled}"
    assert not unnamed, f"log calls whose event name is not a literal: {unnamed}"


# -- the step events at work -----------------------------------------------------------------


@pytest.fixture
def json_logs() -> Iterator[Any]:
    """Configure the real logging at a level; yields `setup(level) -> buffer`; restores."""
    saved = structlog.get_config()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level

    def setup(lvl: str) -> io.StringIO:
        buf = io.StringIO()
        configure_logging(lvl, stream=buf)
        return buf

    yield setup
    structlog.configure(**saved)
    root.handlers[:] = handlers
    root.setLevel(level)


def run_a_session(store: MemoryStore) -> tuple[str, str]:
    """A command, its generation result, its review result (confirmed)."""
    s, c = "session-" + Wire.new_id(), Wire.new_id()
    p = MessageProcessor(store, clock=lambda: FIXED_NOW)
    p.process_message(Wire.command("Character.Request", s, c, {"name": "Aria"}))
    p.process_message(Wire.capability("Character.Design.Generated", s, c, name="Aria"))
    p.process_message(
        Wire.capability("Review.Quality.Evaluated", s, c, target_type="character", score=9.0)
    )
    return s, c


NEW_STEP_EVENTS = {
    "orchestrator_processing_domain_event",
    "orchestrator_domain_event_details",
    "orchestrator_capability_event_details",
    "orchestrator_trying_handler",
    "orchestrator_domain_event_persisted",
    "orchestrator_no_existing_domain_event_found",
    "orchestrator_creating_new_domain_event",
    "orchestrator_checking_outbox_entry",
    "orchestrator_domain_event_persist_completed",
    "orchestrator_async_task_correlation_parsed",
    "orchestrator_checking_existing_task",
    "orchestrator_creating_new_async_task",
    "orchestrator_async_task_complete_correlation_parsed",
    "orchestrator_searching_async_task_to_complete",
    "orchestrator_async_task_found_for_completion",
}


def test_a_session_logs_the_source_steps_with_its_ids(json_logs: Any) -> None:
    buf = json_logs("DEBUG")
    s, c = run_a_session(MemoryStore())
    lines = [orjson.loads(line) for line in buf.getvalue().splitlines()]
    seen = {e["event"] for e in lines}
    assert seen >= NEW_STEP_EVENTS, sorted(NEW_STEP_EVENTS - seen)
    steps = [e for e in lines if e["event"] in NEW_STEP_EVENTS]
    assert {(e["correlation_id"], e["session_id"], e["level"]) for e in steps} == {(c, s, "debug")}
    # Every line of the session's processing carries both ids.
    assert all((e["correlation_id"], e["session_id"]) == (c, s) for e in lines), [
        e for e in lines if (e["correlation_id"], e["session_id"]) != (c, s)
    ]
    details = next(e for e in lines if e["event"] == "orchestrator_domain_event_details")
    assert (details["command_type"], details["input_keys"]) == ("Character.Request", ["name"])
    tried = next(e for e in lines if e["event"] == "orchestrator_trying_handler")
    assert tried["handlers"][0] == "handle_generation_completed"


class CountingLog:
    """Stands in for a module's logger: counts what reaches it, per level."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def __getattr__(self, level: str) -> Any:
        return lambda event, **_kw: self.calls.append((level, event))


def test_step_events_cost_no_logger_call_and_no_field_when_debug_is_off(
    json_logs: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At INFO no debug call reaches structlog (each would assemble a bound logger) and no
    detail field is computed; at DEBUG the same run does reach it."""
    counted = {mod: CountingLog() for mod in (step_logs, apply_plan, process_message)}
    for mod, fake in counted.items():
        monkeypatch.setattr(mod, "log", fake)
    computed: list[object] = []
    real_keys_of = step_logs.keys_of

    def keys_of(value: object) -> list[str] | None:
        computed.append(value)
        return real_keys_of(value)

    monkeypatch.setattr(step_logs, "keys_of", keys_of)

    json_logs("INFO")
    run_a_session(MemoryStore())
    debug_calls = [e for f in counted.values() for lvl, e in f.calls if lvl == "debug"]
    assert debug_calls == [] and computed == []
    assert any(
        e == "orchestrator_domain_event_processed" for f in counted.values() for _, e in f.calls
    )

    json_logs("DEBUG")
    run_a_session(MemoryStore())
    debug_calls = [e for f in counted.values() for lvl, e in f.calls if lvl == "debug"]
    assert "orchestrator_trying_handler" in debug_calls and computed
