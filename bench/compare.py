"""Before and after: the same benchmark on another revision, checked out in a scratch worktree
and measured right after this tree's run, on the same machine and the same kind of servers."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]


def forwarded(argv: list[str]) -> list[str]:
    """This run's options minus the ones that name this run's own files or the comparison."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg in ("--compare", "--out"):
            skip = True
            continue
        if arg.startswith(("--compare=", "--out=")) or arg in ("--profile", "--keep-logs"):
            continue
        out.append(arg)
    return out


def run_revision(revision: str, argv: list[str], log: Any) -> dict[str, Any]:
    """The benchmark's JSON document for `revision`; its processes import only its own code."""
    scratch = Path(tempfile.mkdtemp(prefix="orchestrator-bench-before-"))
    tree = scratch / "tree"
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), revision],
        check=True,
        capture_output=True,
    )
    try:
        out = scratch / "before.json"
        env = {**os.environ, "PYTHONPATH": str(tree)}
        log(f"before: {revision} in {tree}")
        subprocess.run(
            [sys.executable, "-m", "bench", *forwarded(argv), "--out", str(out)],
            cwd=tree,
            env=env,
            check=True,
        )
        doc: dict[str, Any] = orjson.loads(out.read_bytes())
        return doc
    finally:
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)],
            check=False,
            capture_output=True,
        )
        shutil.rmtree(scratch, ignore_errors=True)
