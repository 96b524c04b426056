"""Invariant checker: does the database hold exactly what the inputs should have produced?

`verify(engine, inputs)` reads the inbox, the facts, the outbox, the AsyncTasks and the dead
letters (`load`), re-plans every recorded input with the same pure code the workers run
(`expected`: every id the orchestrator writes derives from its cause, so the expected rows are
known exactly) and reports, message by message, what is missing, unexpected or stuck:

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

The per-input checks are in `messages`, the whole-database ones in `invariants`. Checks that
need rows retention may delete (inbox, sent outbox rows) are skipped when retention pruned
them: assumed when the inbox is empty while facts exist, or forced with `pruned=True`.
Read-only; every statement uses bound parameters.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from sqlalchemy import Engine

from orchestrator.core.command_strategies import CommandStrategyRegistry, command_registry
from orchestrator.core.result_handlers import EventHandlerRegistry, event_handler_registry
from orchestrator.devtools.verify.expected import ExpectedInput, InputKind, Replanner
from orchestrator.devtools.verify.invariants import DatabaseChecks
from orchestrator.devtools.verify.load import load
from orchestrator.devtools.verify.messages import MessageChecks
from orchestrator.devtools.verify.report import Code, Counts, Findings, Problem, Report
from orchestrator.devtools.verify.state import State

__all__ = ["Code", "Counts", "ExpectedInput", "InputKind", "Problem", "Report", "verify"]


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
    state = load(engine, session)
    if pruned is None:
        pruned = not state.inbox and bool(state.facts)
    mapping = dict(mapping or {})
    findings = Findings()
    per_message = MessageChecks(
        state, Replanner(state, commands, handlers, mapping), findings, pruned
    )
    if inputs is None:
        for rows in state.inbox_by_id.values():
            per_message.check_message(rows)
    else:
        for expected in inputs:
            per_message.check_expected(expected)
        for row in state.inbox:
            if not row.processed:
                per_message.check_message([row])
    database = DatabaseChecks(state, findings, mapping, pruned)
    database.check_outbox()
    database.check_tasks()
    database.check_facts()
    database.check_dead_letters()
    if sessions:
        database.check_sessions()
    problems = tuple(findings.problems)
    return Report(problems, _counts(state, inputs, len(problems)), session, pruned)


def _counts(state: State, inputs: Sequence[ExpectedInput] | None, problems: int) -> Counts:
    """Without inputs, the messages are the inbox rows and the dead letters never recorded."""
    recorded = {(r.topic, r.message_id) for r in state.inbox}
    never_recorded = sum(
        1 for d in state.dead_letters if (d.source_topic, d.message_id) not in recorded
    )
    return Counts(
        messages=len(state.inbox) + never_recorded if inputs is None else len(inputs),
        facts=len(state.facts),
        tasks=len(state.tasks),
        dead_letters=len(state.dead_letters),
        outbox=len(state.outbox),
        problems=problems,
    )
