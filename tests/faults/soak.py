"""Load held: a steady stream of commands for minutes, no fault.

Every few seconds the resident memory (RSS) of every process is sampled (the orchestrator's
processes, each Celery pool child on its own, and the servers), and the monitor records the
outbox lag (age of the oldest unsent row) and the inbox backlog (unprocessed rows). The soak
passes when nothing is lost (the same checks as a fault run), memory stays flat after a warm-up
(end <= start x 1.2 + 20 MB for each orchestrator process) and the lag and backlog stay bounded
(their maxima in the last third of the load no higher than in the first two thirds, plus slack).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

from orchestrator.devtools.memory import Children, Key, MemorySampler, Watched
from tests.faults.runner import Options, Run, RunResult
from tests.faults.scenarios import Scenario

GROWTH_FACTOR = 1.2
GROWTH_SLACK_MB = 20.0
# Lag and backlog are "bounded" when the last third never exceeds the first two thirds by more
# than this factor and slack.
BOUND_FACTOR = 2.0
LAG_SLACK_S = 2.0
BACKLOG_SLACK = 100


class Steady(Scenario):
    name = "soak"
    description = "a steady stream of commands, no fault"
    continuous = True

    def inject(self, run: Run) -> None:
        run.mode = "steady"


@dataclass
class Memory:
    process: str
    start_mb: float
    end_mb: float
    max_mb: float
    judged: bool

    @property
    def flat(self) -> bool:
        return self.end_mb <= self.start_mb * GROWTH_FACTOR + GROWTH_SLACK_MB


@dataclass
class SoakResult:
    seconds: float
    rate: float
    commands: int
    run: RunResult
    memory: list[Memory]
    warmup_s: float
    max_outbox_lag_s: float
    max_inbox_backlog: int
    lag_bounded: bool
    backlog_bounded: bool
    samples: int
    series: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    # (seconds since the load began, outbox lag s, inbox backlog), one point per sample_s.
    pipeline: list[tuple[float, float, int]] = field(default_factory=list)

    @property
    def memory_flat(self) -> bool:
        return all(m.flat for m in self.memory if m.judged)

    @property
    def passed(self) -> bool:
        return self.run.passed and self.memory_flat and self.lag_bounded and self.backlog_bounded

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["run"] = self.run.as_dict()
        d["passed"] = self.passed
        d["memory_flat"] = self.memory_flat
        d["memory"] = [asdict(m) | {"flat": m.flat} for m in self.memory]
        return d

    def lines(self) -> list[str]:
        verdict = "PASS" if self.passed else "FAIL"
        out = [
            f"{verdict} soak: {self.seconds:.0f}s at {self.rate:g} commands/s ({self.commands}"
            f" commands, {self.run.messages} messages): lost {self.run.lost}, duplicated effects"
            f" {self.run.duplicated_effects}, max outbox lag {self.max_outbox_lag_s:.2f}s,"
            f" max inbox backlog {self.max_inbox_backlog}",
        ]
        gaps = self.run.notes.get("consumer_gaps")
        if gaps:
            out.append(f"  fetches that skipped offsets, read again: {gaps}")
        unreadable = self.run.notes.get("unreadable_offsets")
        if unreadable:
            out.append(
                f"  offsets the broker stopped serving (read on after them): {list(unreadable)}"
            )
        for m in self.memory:
            mark = ("ok" if m.flat else "GROWS") if m.judged else "info"
            out.append(
                f"  {m.process:<28} start {m.start_mb:7.1f} MB  end {m.end_mb:7.1f} MB"
                f"  max {m.max_mb:7.1f} MB  {mark}"
            )
        return out


# The servers' memory is shown, not judged: it is not the orchestrator's.
KAFKA = "kafka (Tansu, memory storage)"
REDIS = "redis"
POSTGRES = "postgres (server + backends)"
SERVERS = frozenset({KAFKA, REDIS, POSTGRES})


def watched(run: Run) -> list[Watched]:
    """Each orchestrator process (its pool children apart) and each server of the run."""
    out = [
        Watched(role.name, role.proc.pid)
        for role in list(run.supervisor.roles.values())
        if role.proc is not None
    ]
    for name, pid, children in (
        (KAFKA, run.kafka.pid, Children.NONE),
        (REDIS, run.redis.pid, Children.NONE),
        (POSTGRES, run.postgres.pid, Children.SUMMED),
    ):
        if pid is not None:
            out.append(Watched(name, pid, children))
    return out


def process_name(key: Key) -> str:
    return f"{key.name} pool child {key.child}" if key.child else key.name


class SoakRun(Run):
    """A run without a fault whose memory is sampled from the start of the load to its end."""

    def __init__(self, seed: int, opts: Options, sample_s: float) -> None:
        super().__init__(Steady(), seed, opts)
        self.sample_s = sample_s
        self.sampler = MemorySampler(lambda: watched(self), sample_s)
        self.monitor_interval_s = 1.0
        self.load_window: tuple[float, float] | None = None

    def _fault(self) -> None:
        self.mode = "steady"
        self.sampler.start()
        assert self.load is not None
        while not self.load.done():
            time.sleep(0.2)
        self.sampler.sample()
        self.sampler.stop()
        self.load_window = (self.load.started_at or 0.0, self.load.finished_at or time.monotonic())


def _bounded(values: list[tuple[float, float]], begin: float, end: float, slack: float) -> bool:
    cut = begin + (end - begin) * 2 / 3
    early = [v for t, v in values if begin <= t < cut]
    late = [v for t, v in values if cut <= t <= end]
    if not early or not late:
        return True
    return max(late) <= max(early) * BOUND_FACTOR + slack


def _thin(
    samples: list[tuple[float, int, int, int, int, float, float]], begin: float, every_s: float
) -> list[tuple[float, float, int]]:
    """The worst lag and backlog of each `every_s` window."""
    windows: dict[int, tuple[float, int]] = {}
    for t, unprocessed, _unsent, _active, _inbox, lag, _age in samples:
        k = int((t - begin) // every_s)
        old = windows.get(k, (0.0, 0))
        windows[k] = (max(old[0], lag), max(old[1], unprocessed))
    return [(k * every_s, round(v[0], 2), v[1]) for k, v in sorted(windows.items())]


def run_soak(
    seconds: float, rate: float, seed: int, opts: Options, sample_s: float = 5.0
) -> SoakResult:
    commands = max(1, round(seconds * rate))
    soak_opts = Options(
        commands=commands,
        rate=rate,
        sessions=opts.sessions,
        settle_timeout_s=opts.settle_timeout_s,
        scores=opts.scores,
        worker_concurrency=opts.worker_concurrency,
        keep_logs=opts.keep_logs,
        out_dir=opts.out_dir,
    )
    run = SoakRun(seed, soak_opts, sample_s)
    result = run.execute()
    begin, end = run.load_window or (run.t0, time.monotonic())
    warmup = min(60.0, (end - begin) * 0.2)
    memory: list[Memory] = []
    series = {process_name(k): (k, s) for k, s in run.sampler.series.items()}
    for name, (key, points) in sorted(series.items()):
        after = [mb for t, mb in points if t >= begin + warmup]
        if not after:
            continue
        memory.append(
            Memory(
                process=name,
                start_mb=round(after[0], 1),
                end_mb=round(after[-1], 1),
                max_mb=round(max(mb for _, mb in points), 1),
                judged=key.name not in SERVERS,
            )
        )
    lag = [(s[0], s[5]) for s in run.samples]
    backlog = [(s[0], float(s[1])) for s in run.samples]
    return SoakResult(
        seconds=end - begin,
        rate=rate,
        commands=commands,
        run=result,
        memory=memory,
        warmup_s=warmup,
        max_outbox_lag_s=round(max((v for _, v in lag), default=0.0), 2),
        max_inbox_backlog=int(max((v for _, v in backlog), default=0)),
        lag_bounded=_bounded(lag, begin, end, LAG_SLACK_S),
        backlog_bounded=_bounded(backlog, begin, end, BACKLOG_SLACK),
        samples=len(run.samples),
        pipeline=_thin(run.samples, begin, sample_s),
        series={
            name: [(round(t - begin, 1), round(v, 1)) for t, v in points]
            for name, (_, points) in series.items()
        },
    )
