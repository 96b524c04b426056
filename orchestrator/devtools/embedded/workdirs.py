"""Private temporary directories of the embedded servers: who owns each, and reclaiming those
whose owner died without removing them.

An owner killed by SIGKILL runs no cleanup; its servers stop by the parent-death signal, but its
directories stay. The next start of the same kind removes them, once no process runs in them.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

OWNER_FILE = ".owner"


def claim_workdir(workdir: Path) -> None:
    """Record which process owns a temporary directory (PID and start time)."""
    import psutil

    me = psutil.Process()
    (workdir / OWNER_FILE).write_text(f"{me.pid} {me.create_time()!r}\n")


def _owner_is_gone(path: Path) -> bool:
    """True when the directory's recorded owner no longer runs. Directories of other users or
    with an unreadable record count as owned (False)."""
    import psutil

    try:
        record = path / OWNER_FILE
        if record.stat().st_uid != os.geteuid():
            return False
        pid_text, created_text = record.read_text().split()
        owner = psutil.Process(int(pid_text))
        # The same PID with another start time is a recycled PID: the owner is gone.
        started: float = owner.create_time()
        return abs(started - float(created_text)) >= 0.01
    except psutil.NoSuchProcess:
        return True
    except (OSError, ValueError, psutil.Error):
        return False


def remove_abandoned_workdirs(base: Path, prefix: str) -> None:
    """Remove our kind of temporary directories whose owner died without cleaning up (e.g. a
    SIGKILLed test run) and in which no process still runs. Directories of live owners, of
    other users, or without an owner record are left alone."""
    import psutil

    candidates = [path for path in base.glob(f"{prefix}*") if (path / OWNER_FILE).is_file()]
    abandoned = [path.resolve() for path in candidates if _owner_is_gone(path)]
    if not abandoned:
        return
    in_use: set[Path] = set()
    for proc in psutil.process_iter(["cwd"]):
        cwd = proc.info.get("cwd")
        if cwd:
            in_use.update(path for path in abandoned if Path(cwd).is_relative_to(path))
    for path in abandoned:
        if path not in in_use:
            shutil.rmtree(path, ignore_errors=True)
