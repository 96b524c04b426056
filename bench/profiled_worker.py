"""`celery -A bench.profiled_worker worker ...`: the product's `tasks` app, unchanged, with each
pool process under pyinstrument (`--profile`).

A pool process writes its profile to `$BENCH_PROFILE_DIR/worker-<pid>.txt` (a call tree; also
`.flat.txt` and `.html`) after the first task it runs once `$BENCH_PROFILE_DIR/dump` exists (the
benchmark creates it when the measurement is over and then sends a few noop tasks), or else when
it shuts down.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from celery import signals

from bench.profiling import DUMP_FLAG, write_profile
from tasks import app

__all__ = ["app"]

_profiler: Any = None


def _start(**_: Any) -> None:
    global _profiler
    from pyinstrument import Profiler

    _profiler = Profiler(interval=0.001)
    _profiler.start()


def _dump(**_: Any) -> None:
    global _profiler
    profiler, _profiler = _profiler, None
    if profiler is None:
        return
    profiler.stop()
    write_profile(profiler, f"worker-{os.getpid()}")


def _after_task(**_: Any) -> None:
    if _profiler is not None and (Path(os.environ["BENCH_PROFILE_DIR"]) / DUMP_FLAG).exists():
        _dump()


signals.worker_process_init.connect(_start, weak=False)
signals.task_postrun.connect(_after_task, weak=False)
signals.worker_process_shutdown.connect(_dump, weak=False)
