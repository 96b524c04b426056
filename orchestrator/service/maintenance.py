"""Beat's periodic work: inbox re-drive, AsyncTask timeouts, retention. All safe to run twice."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from orchestrator.core.clock import iso, utc_now
from orchestrator.core.outbound import fact_message
from orchestrator.core.plan import plan_timeout
from orchestrator.observability.logs import get_logger
from orchestrator.service.outcome_latency import TIMED_OUT, task_kind
from orchestrator.service.ports import MaintenanceStore

log = get_logger("orchestrator.maintenance")

# Only each session's oldest unprocessed row is re-driven (the drain processes the rest in
# order). It backs off exponentially with its attempt count, and with its own re-drives: a row
# waits at least as long as it had waited when last triggered (capped at 2**REDRIVE_GROWTH_CAP
# times `after`), so it is re-driven at about 1, 2, 4, 8... times `after` from its arrival. A
# row not yet processed because the workers are behind is then not re-triggered every `after`
# seconds, which would queue ever more drain tasks for sessions already queued and feed the
# backlog it is waiting in.
REDRIVE_GROWTH_CAP = 3


@dataclass
class Maintenance:
    store: MaintenanceStore
    domain_topic: str
    trigger: Callable[[str, str], None]
    queue_for_topic: Callable[[str], str]
    redrive_after_s: float
    retention_s: float
    # (kind, outcome, seconds): a timed-out task's command, arrival -> its TimedOut fact
    on_latency: Callable[[str, str, float], None] = lambda _k, _o, _s: None

    def redrive(self) -> int:
        after = self.redrive_after_s
        rows = self.store.redrive(after, after * 2**REDRIVE_GROWTH_CAP)
        for session_id, topic in rows:
            log.warning("orchestrator_inbox_redrive", session_id=session_id, topic=topic)
            self.trigger(session_id, self.queue_for_topic(topic))
        return len(rows)

    def expire_tasks(self, limit: int = 500) -> int:
        """Time out AsyncTasks past their deadline and emit a fact saying so, atomically."""
        now = iso(utc_now())
        latencies: list[tuple[str, str, float]] = []
        with self.store.expire_tasks(limit) as (expired, tx):
            for task in expired:
                fact = plan_timeout(
                    task.task_id, task.task_type, task.session_id, task.correlation_id, now
                )
                if tx.insert_fact(fact, "GenesisSession"):
                    tx.insert_outbox(fact_message(fact, self.domain_topic, None))
                    age = (
                        tx.correlation_age_s(task.correlation_id, self.domain_topic)
                        if task.correlation_id
                        else None
                    )
                    if age is not None:
                        latencies.append((task_kind(task.task_type), TIMED_OUT, age))
                log.warning(
                    "orchestrator_async_task_timed_out",
                    task_id=task.task_id,
                    task_type=task.task_type,
                    session_id=task.session_id,
                    correlation_id=task.correlation_id,
                )
        for kind, outcome, seconds in latencies:  # committed: observed once
            self.on_latency(kind, outcome, seconds)
        return len(expired)

    def prune(self, limit: int = 5000) -> tuple[int, int]:
        """Delete sent outbox and processed inbox rows older than the retention, in slices."""
        outbox, inbox = self.store.prune(self.retention_s, limit)
        if outbox or inbox:
            log.info("orchestrator_retention_pruned", outbox=outbox, inbox=inbox)
        return outbox, inbox
