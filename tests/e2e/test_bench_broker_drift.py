"""`python -m bench.broker_drift` still drives traffic through a broker and reports its CPU: a
short run against the embedded broker sends and consumes messages in every interval. The CPU
figures themselves are not asserted (docs/reliability.md, open problem 2)."""

from __future__ import annotations

import re

import pytest

from bench import broker_drift

LINE = re.compile(r"broker CPU +([0-9.]+) s in .* sent +(\d+) +consumed +(\d+)")


@pytest.mark.timeout(120)
def test_short_run_sends_and_consumes_in_every_interval(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert broker_drift.main(["--seconds", "4", "--interval", "1", "--rate", "40"]) == 0
    out = capsys.readouterr().out
    rows = [(float(c), int(s), int(n)) for c, s, n in LINE.findall(out)]
    assert len(rows) >= 4, out
    sent = [s for _, s, _ in rows]
    assert sent == sorted(sent) and sent[0] > 0 and sent[-1] > sent[0], out
    # The consumer groups keep up: by the last interval they have read what was sent before.
    assert rows[-1][2] >= rows[-2][1] > 0, out
    assert all(cpu >= 0 for cpu, _, _ in rows), out
    assert "broker CPU per message sent" in out
