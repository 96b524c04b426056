"""The source design's step-by-step DEBUG log events, at no cost when DEBUG is off.

A disabled `log.debug(...)` on structlog's filtering logger is a `return None`, but reaching it
through the module-level lazy proxy assembles a bound logger first (about 5 µs a call, measured
with structlog 26.1): some twenty steps a message would cost ~0.1 ms. `steps.debug` asks the
root logger first (~0.1 µs); `configure_logging` sets the root logger's level and structlog's
filter together, so both agree on whether DEBUG is on. Arguments that cost something to build
(sorted key lists, handler names) go behind `if debug_on():` at the call site, so nothing is
computed eagerly for a line nobody writes.

The event names and levels are tabled in docs/operations.md ("Log events");
tests/unit/test_log_events.py checks the table against every call in `orchestrator/`.
"""

from __future__ import annotations

import logging
from typing import Any

from orchestrator.core.inbound import CapabilityEvent, DomainEvent
from orchestrator.core.result_handlers import EventHandlerRegistry
from orchestrator.observability.logs import get_logger

log = get_logger("orchestrator.agent")
_ROOT = logging.getLogger()


def debug_on() -> bool:
    """Whether DEBUG lines are written (the root logger's level, set by `configure_logging`)."""
    return _ROOT.isEnabledFor(logging.DEBUG)


class StepLog:
    """`debug(event, **fields)`: one DEBUG line, written only when DEBUG is on."""

    __slots__ = ()

    def debug(self, event: str, **fields: Any) -> None:
        if _ROOT.isEnabledFor(logging.DEBUG):
            log.debug(event, **fields)


steps = StepLog()


def keys_of(value: Any) -> list[str] | None:
    """The sorted keys of a mapping (the source logged data keys, never values)."""
    return sorted(str(k) for k in value) if isinstance(value, dict) else None


def domain_event_steps(event: DomainEvent) -> None:
    """A domain-bus envelope taken up: `processing_domain_event` and its details (keys only)."""
    if not debug_on():
        return
    log.debug(
        "orchestrator_processing_domain_event",
        event_type=event.event_type,
        event_id=event.event_id,
    )
    log.debug(
        "orchestrator_domain_event_details",
        event_type=event.event_type,
        aggregate_type=event.aggregate_type,
        aggregate_id=event.aggregate_id,
        command_type=event.payload.get("command_type"),
        payload_keys=keys_of(event.payload),
        input_keys=keys_of(event.payload.get("payload")),
        metadata_keys=keys_of(event.metadata),
        created_at=event.created_at,
    )


def capability_event_steps(evt: CapabilityEvent) -> None:
    """A capability envelope taken up: `processing_capability_event` and its details."""
    if not debug_on():
        return
    log.debug("orchestrator_processing_capability_event", message_type=evt.type, event_id=evt.id)
    log.debug(
        "orchestrator_capability_event_details",
        message_type=evt.type,
        event_id=evt.id,
        ts=evt.ts,
        data_keys=keys_of(evt.data),
        task_correlation_id=evt.correlation_id,
    )


def trying_handlers(evt: CapabilityEvent, handlers: EventHandlerRegistry) -> None:
    """The handlers the registry is about to try, in order (the source logged one line each;
    our registry tries them inside the pure core, so one line names them all)."""
    if not debug_on():
        return
    log.debug(
        "orchestrator_trying_handler",
        message_type=evt.type,
        handlers=[getattr(h, "__qualname__", repr(h)) for h in handlers.handlers()],
    )
