"""Named crash points for fault-injection tests.

`ORCHESTRATOR_CRASH_AT=<point>` (optionally `<point>:<n>` for the n-th time the point is
reached) makes the process SIGKILL itself there, so tests can prove that a crash at exactly that
moment loses nothing. Unset in production: then `crash_point` is a dictionary lookup.
"""

from __future__ import annotations

import os
import signal

from orchestrator.observability.logs import get_logger

_SPEC = os.environ.get("ORCHESTRATOR_CRASH_AT", "")
_POINT, _, _NTH = _SPEC.partition(":")
_counts: dict[str, int] = {}

POINTS = (
    "ingest.before_commit",  # batch written, transaction not yet committed
    "ingest.after_commit",  # inbox committed, offsets not yet stored
    "ingest.after_offsets",  # offsets stored, Celery triggers not yet sent
    "drain.before_commit",  # a row's effects written, transaction not yet committed
    "relay.after_publish",  # delivered to Kafka, rows not yet marked SENT
)


def crash_point(name: str) -> None:
    if not _POINT or name != _POINT:
        return
    _counts[name] = _counts.get(name, 0) + 1
    if _counts[name] >= int(_NTH or 1):
        # Said first, so a test that missed the exit still knows the fault happened.
        get_logger("orchestrator.faults").warning(
            "orchestrator_crash_point", point=name, reached=_counts[name], pid=os.getpid()
        )
        os.kill(os.getpid(), signal.SIGKILL)
