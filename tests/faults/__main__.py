"""The long runs: every scenario several times under load, then a soak.

    python -m tests.faults [--runs N] [--commands N] [--rate R] [--scenarios a,b]
                           [--soak-seconds S] [--soak-rate R] [--seed S] [--out PATH]

Each run of a scenario gets its own seed (base seed + run number, printed), so a failing run is
reproduced with `--scenarios NAME --runs 1 --seed SEED`. Writes `results.json` (every figure of
every run) and `summary.md` (the tables of docs/reliability.md) to --out, and keeps the logs,
inputs and result of every failed run under `--out/runs/<scenario>-<seed>/`. Exit status 1 when
a run or the soak failed.
"""

from __future__ import annotations

import argparse
import platform
import random
import signal
import sys
import time
from pathlib import Path

import orjson
import psutil

from tests.faults.report import markdown
from tests.faults.runner import Options, RunResult, run_scenario
from tests.faults.scenarios import SCENARIOS
from tests.faults.soak import SoakResult, run_soak


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tests.faults", description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=3, help="runs of each scenario (3)")
    p.add_argument("--commands", type=int, default=300, help="commands per run (300)")
    p.add_argument("--rate", type=float, default=20.0, help="commands per second (20)")
    p.add_argument(
        "--scenarios", default="", help=f"comma-separated subset of: {', '.join(SCENARIOS)}"
    )
    p.add_argument(
        "--soak-seconds", type=float, default=300.0, help="soak duration; 0 skips it (300)"
    )
    # A soak holds a load the machine sustains: 20/s is the edge of a 2-core machine running
    # every server and process (docs/reliability.md, Soak).
    p.add_argument("--soak-rate", type=float, default=15.0, help="soak commands per second (15)")
    p.add_argument("--seed", type=int, default=None, help="base seed (default: random)")
    p.add_argument(
        "--settle-timeout", type=float, default=60.0, help="deadline to settle after the load (60)"
    )
    p.add_argument("--out", type=Path, default=Path("fault-results"), help="output directory")
    p.add_argument("--keep-logs", action="store_true", help="keep the logs of passing runs too")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    names = [n.strip() for n in args.scenarios.split(",") if n.strip()] or list(SCENARIOS)
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        print(f"unknown scenario(s): {', '.join(unknown)}; known: {', '.join(SCENARIOS)}")
        return 2
    base = args.seed if args.seed is not None else random.SystemRandom().randrange(1, 10**6)
    out: Path = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    opts = Options(
        commands=args.commands,
        rate=args.rate,
        settle_timeout_s=args.settle_timeout,
        keep_logs=args.keep_logs,
        out_dir=out,
    )
    header = {
        "command": "python -m tests.faults " + " ".join(sys.argv[1:] if argv is None else argv),
        "base seed": base,
        "machine": f"{platform.node()}, {psutil.cpu_count()} cores,"
        f" {psutil.virtual_memory().total / 2**30:.0f} GiB, Python {platform.python_version()}",
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    print(f"base seed {base}; output in {out}", flush=True)
    results: list[RunResult] = []
    soak: SoakResult | None = None
    began = time.monotonic()

    def save() -> None:
        header["elapsed"] = f"{time.monotonic() - began:.0f} s"
        doc = {
            "header": header,
            "runs": [r.as_dict() for r in results],
            "soak": soak.as_dict() if soak is not None else None,
        }
        (out / "results.json").write_bytes(
            orjson.dumps(doc, option=orjson.OPT_INDENT_2, default=str)
        )
        (out / "summary.md").write_text(markdown(results, soak, header))

    # Round robin: a long run interrupted early still covers every scenario.
    for i in range(args.runs):
        for name in names:
            seed = base + i
            print(f"-- {name} run {i + 1}/{args.runs} seed {seed}", flush=True)
            result = run_scenario(SCENARIOS[name], seed, opts)
            results.append(result)
            print(result.line(), flush=True)
            for problem in result.problems[:5]:
                print(f"   {problem}", flush=True)
            save()
    if args.soak_seconds > 0:
        print(f"-- soak {args.soak_seconds:.0f}s at {args.soak_rate:g}/s seed {base}", flush=True)
        soak = run_soak(args.soak_seconds, args.soak_rate, base, opts)
        for line in soak.lines():
            print(line, flush=True)
        save()
    save()
    failed = [r for r in results if not r.passed]
    print(f"\n{len(results) - len(failed)}/{len(results)} runs passed", end="")
    if soak is not None:
        print(f"; soak {'passed' if soak.passed else 'FAILED'}", end="")
    print(f"; {out / 'summary.md'}")
    return 1 if failed or (soak is not None and not soak.passed) else 0


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM stops a long run like Ctrl-C: the current run stops its processes and servers."""
    raise KeyboardInterrupt


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _interrupt)
    # Started in the background by a shell without job control, SIGINT arrives ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted; every process and server of the current run was stopped")
        sys.exit(130)
