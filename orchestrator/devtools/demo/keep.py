"""`orchestrator demo --keep` and `orchestrator down`: the stack stays up after the story.

The kept demo stays in the foreground with every process and embedded server it started, prints
the `export ...` lines (also written to `<workdir>/env.sh`) and the sessions it ran, and records
itself in a state file under the run directory (`$XDG_RUNTIME_DIR/genesis-orchestrator`, else
`~/.local/state/genesis-orchestrator`): its own PID and those of its processes and servers,
each with its start time. Ctrl-C (or SIGTERM) stops all of it, as at the end of a plain demo.

`orchestrator down` reads those files: it sends SIGTERM to each kept demo still running (which
then stops what it started) and waits for it; a recorded child that outlived its demo gets
SIGTERM, then SIGKILL. A PID is signalled only while it still has its recorded start time, so
a recycled PID is never touched.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson

STATE_PREFIX = "demo-"
DOWN_TIMEOUT_S = 60.0
CHILD_GRACE_S = 10.0
# What an operator command needs to find the kept demo's data.
EXPORTED = (
    "DATABASE_URL",
    "REDIS_URL",
    "KAFKA_BOOTSTRAP_SERVERS",
    "ORCHESTRATOR_DOMAIN_TOPIC",
    "ORCHESTRATOR_CAPABILITY_TOPIC",
    "ORCHESTRATOR_DLQ_TOPIC",
    "ORCHESTRATOR_TASK_TOPIC_PREFIX",
    "ORCHESTRATOR_REDIS_PREFIX",
)


def run_dir(environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    runtime = env.get("XDG_RUNTIME_DIR")
    if runtime and Path(runtime).is_dir():
        return Path(runtime) / "genesis-orchestrator"
    home = Path(env.get("HOME") or Path.home())
    return home / ".local" / "state" / "genesis-orchestrator"


@dataclass(frozen=True)
class Proc:
    name: str
    pid: int
    started: float  # psutil's create_time, to tell a recycled PID apart


@dataclass
class KeptDemo:
    demo: Proc
    workdir: str
    exports: dict[str, str]
    sessions: list[str]
    children: list[Proc] = field(default_factory=list)

    def to_json(self) -> bytes:
        return orjson.dumps(asdict(self), option=orjson.OPT_INDENT_2)

    @classmethod
    def from_json(cls, raw: bytes) -> KeptDemo:
        doc: dict[str, Any] = orjson.loads(raw)
        return cls(
            demo=Proc(**doc["demo"]),
            workdir=str(doc["workdir"]),
            exports={str(k): str(v) for k, v in doc["exports"].items()},
            sessions=[str(s) for s in doc["sessions"]],
            children=[Proc(**c) for c in doc.get("children", [])],
        )


def proc_of(name: str, pid: int) -> Proc | None:
    import psutil

    try:
        return Proc(name, pid, psutil.Process(pid).create_time())
    except psutil.Error:
        return None


def alive(proc: Proc) -> bool:
    """The recorded process runs (same PID, same start time, not a zombie)."""
    import psutil

    try:
        p = psutil.Process(proc.pid)
        started: float = p.create_time()
        status: str = p.status()
    except psutil.Error:
        return False
    return abs(started - proc.started) < 0.01 and status != psutil.STATUS_ZOMBIE


def exports_of(env: Mapping[str, str]) -> dict[str, str]:
    return {name: env[name] for name in EXPORTED if name in env}


def export_lines(exports: Mapping[str, str]) -> list[str]:
    return [f"export {name}={shlex.quote(value)}" for name, value in exports.items()]


def write_state(state: KeptDemo, directory: Path | None = None) -> Path:
    directory = directory or run_dir()
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = directory / f"{STATE_PREFIX}{state.demo.pid}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(state.to_json())
    tmp.replace(path)
    return path


def write_env_file(workdir: Path, exports: Mapping[str, str]) -> Path:
    """`<workdir>/env.sh`, readable by its owner only (URLs may hold passwords)."""
    path = workdir / "env.sh"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write("\n".join(export_lines(exports)) + "\n")
    return path


def kept_demos(directory: Path | None = None) -> list[tuple[Path, KeptDemo]]:
    directory = directory or run_dir()
    found = []
    for path in sorted(directory.glob(f"{STATE_PREFIX}*.json")):
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            found.append((path, KeptDemo.from_json(path.read_bytes())))
    return found


def _signal(proc: Proc, sig: int, *, group: bool) -> None:
    if not alive(proc):
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if group and os.getpgid(proc.pid) == proc.pid:
            os.killpg(proc.pid, sig)
        else:
            os.kill(proc.pid, sig)


def _wait_gone(procs: Sequence[Proc], deadline: float) -> list[Proc]:
    while True:
        left = [p for p in procs if alive(p)]
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.05)


def stop_kept(state: KeptDemo, timeout: float = DOWN_TIMEOUT_S) -> list[Proc]:
    """Stop one kept demo and what it started; the recorded processes still running after."""
    deadline = time.monotonic() + timeout
    if alive(state.demo):
        _signal(state.demo, signal.SIGTERM, group=False)
        _wait_gone([state.demo], deadline)
    orphans = [c for c in state.children if alive(c)]
    for child in orphans:
        _signal(child, signal.SIGTERM, group=True)
    left = _wait_gone(orphans, min(deadline, time.monotonic() + CHILD_GRACE_S))
    for child in left:
        _signal(child, signal.SIGKILL, group=True)
    return _wait_gone([state.demo, *state.children], time.monotonic() + 5.0)


def down(directory: Path | None = None) -> list[str]:
    """Stop every kept demo recorded under the run directory; one line per demo."""
    lines = []
    for path, state in kept_demos(directory):
        running = alive(state.demo)
        left = stop_kept(state)
        if left:
            names = ", ".join(f"{p.name} (pid {p.pid})" for p in left)
            lines.append(f"demo pid {state.demo.pid}: still running: {names}")
            continue
        path.unlink(missing_ok=True)
        what = "stopped" if running else "cleaned up after"
        lines.append(
            f"{what} the kept demo (pid {state.demo.pid}) and its "
            f"{len(state.children)} processes and servers; logs in {state.workdir}"
        )
    return lines
