"""W3C trace context (`traceparent`) carried from input to every message produced.

A message we produce is a child span of the input that caused it: same trace id, a span id
derived from the produced message's id (so a re-run yields the same header). An input without
a valid `traceparent` starts a trace whose id derives from the input's message id.
"""

from __future__ import annotations

import hashlib
import re

_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16


def parse(traceparent: str | None) -> tuple[str, str, str] | None:
    """(trace id, parent span id, flags) of a valid version-00 header, else None."""
    if not traceparent:
        return None
    m = _TRACEPARENT.match(traceparent.strip().lower())
    if m is None or m.group(1) == _ZERO_TRACE or m.group(2) == _ZERO_SPAN:
        return None
    return m.group(1), m.group(2), m.group(3)


def _hex(seed: str, length: int) -> str:
    return hashlib.sha256(seed.encode()).hexdigest()[:length]


def child(traceparent: str | None, seed: str, root_seed: str | None = None) -> str:
    """The `traceparent` of a message with id `seed` caused by an input carrying `traceparent`."""
    parsed = parse(traceparent)
    if parsed is not None:
        trace_id, _, flags = parsed
    else:
        trace_id, flags = _hex(f"trace:{root_seed or seed}", 32), "01"
    return f"00-{trace_id}-{_hex(f'span:{seed}', 16)}-{flags}"
