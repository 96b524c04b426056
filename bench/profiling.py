"""Writing a pyinstrument profile of one process (used by `--profile`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

# Created in the profile directory when the measurement is over: pool processes then write
# their profiles after their next task (bench.profiled_worker).
DUMP_FLAG = "dump"


def write_profile(profiler: Any, name: str) -> None:
    out = Path(os.environ.get("BENCH_PROFILE_DIR", "."))
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.txt").write_text(profiler.output_text(unicode=False, color=False))
    (out / f"{name}.flat.txt").write_text(
        profiler.output_text(unicode=False, color=False, flat=True)
    )
    (out / f"{name}.html").write_text(profiler.output_html())
