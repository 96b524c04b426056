"""`python -m bench.profiled_ingester`: `orchestrator ingest`, unchanged, under pyinstrument
(`--profile`); writes `$BENCH_PROFILE_DIR/ingester-<pid>.txt` (and `.html`) when it stops."""

from __future__ import annotations

import contextlib
import os
import sys

from pyinstrument import Profiler

from bench.profiling import write_profile


def main() -> None:
    profiler = Profiler(interval=0.0005)
    profiler.start()
    try:
        from orchestrator.cli.main import main as cli_main

        sys.argv = ["orchestrator", "ingest"]
        with contextlib.suppress(SystemExit):
            cli_main()
    finally:
        profiler.stop()
        write_profile(profiler, f"ingester-{os.getpid()}")


if __name__ == "__main__":
    main()
