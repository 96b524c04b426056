"""The process supervisor of the dev tools: what it starts, it stops, with the group of each."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import psutil
import pytest

from orchestrator.devtools.supervisor import ChildExited, CommandFailed, Supervisor
from tests.support.helpers import wait_for

# A leader that starts a grandchild in its own group; the grandchild writes `marker` when it gets
# SIGTERM and exits, the leader prints the grandchild's PID and waits.
FAMILY = textwrap.dedent(
    """
    import signal, subprocess, sys, time
    child = subprocess.Popen([sys.executable, "-c", '''
    import signal, sys, time
    def noted(*_):
        open(sys.argv[1], "w").write("term")
        sys.exit(0)
    signal.signal(signal.SIGTERM, noted)
    print("ready", flush=True)
    time.sleep(60)
    ''', sys.argv[1]], stdout=subprocess.PIPE, text=True)
    child.stdout.readline()
    print(child.pid, flush=True)
    time.sleep(60)
    """
)
IGNORES_TERM = (
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN);"
    " print('ignoring', flush=True); time.sleep(60)"
)


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def grandchild_pid(log: Path) -> int:
    return int(wait_for(lambda: log.read_text().strip(), timeout=20, message="the grandchild"))


@pytest.mark.parametrize("leaders_only", [False, True], ids=["group", "leaders-only"])
def test_stop_reaches_the_whole_group(tmp_path: Path, leaders_only: bool) -> None:
    marker = tmp_path / "terminated"
    sup = Supervisor(tmp_path, leaders_only=leaders_only, grace=3)
    child = sup.spawn("family", [sys.executable, "-c", FAMILY, str(marker)])
    grandchild = grandchild_pid(child.log)

    assert sup.stop_all() == 1
    assert child.returncode == -signal.SIGTERM
    assert gone(grandchild)
    # SIGTERM went to the group, or to the leader alone (the grandchild was then SIGKILLed).
    assert marker.exists() is not leaders_only
    assert sup.running == []


def test_a_child_that_ignores_sigterm_is_killed_after_the_grace(tmp_path: Path) -> None:
    sup = Supervisor(tmp_path, grace=0.5)
    child = sup.spawn("stubborn", [sys.executable, "-c", IGNORES_TERM])
    wait_for(lambda: "ignoring" in child.log.read_text(), timeout=10)  # the handler is set
    sup.stop_all()
    assert child.returncode == -signal.SIGKILL
    assert sup.stop_all() == 0  # nothing left to stop, and nothing signalled again


def test_run_all_names_the_command_that_failed(tmp_path: Path) -> None:
    sup = Supervisor(tmp_path)
    fails = [sys.executable, "-c", "print('no such table'); raise SystemExit(3)"]
    with pytest.raises(CommandFailed, match=r"`migrate` failed with exit code 3:\nno such table"):
        sup.run_all({"ok": [sys.executable, "-c", "pass"], "migrate": fails}, timeout=30)
    assert sup.running == []


def test_run_all_stops_a_command_that_does_not_finish(tmp_path: Path) -> None:
    sup = Supervisor(tmp_path, grace=5)
    with pytest.raises(CommandFailed, match="`slow` did not finish within 1 s") as caught:
        sup.run_all({"slow": [sys.executable, "-c", "import time; time.sleep(60)"]}, timeout=1)
    assert caught.value.timed_out
    assert gone(caught.value.child.pid)
    assert sup.running == []


def test_a_child_that_exits_on_its_own_is_reported(tmp_path: Path) -> None:
    sup = Supervisor(tmp_path)
    child = sup.spawn("short", [sys.executable, "-c", "print('bye'); raise SystemExit(2)"])
    child.popen.wait(30)
    with pytest.raises(ChildExited, match=r"short \(pid \d+\) exited with status 2:\nbye"):
        sup.check_alive()
    sup.stop_all()


def test_children_die_with_their_owner(tmp_path: Path) -> None:
    """Even an owner killed with SIGKILL leaves no child behind (parent-death signal)."""
    owner_code = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        from orchestrator.devtools.supervisor import Supervisor
        child = Supervisor(Path({str(tmp_path)!r})).spawn("sleeper", ["sleep", "60"])
        print(child.pid, flush=True)
        time.sleep(60)
        """
    )
    owner = subprocess.Popen(
        [sys.executable, "-c", owner_code], stdout=subprocess.PIPE, text=True, cwd=os.getcwd()
    )
    try:
        assert owner.stdout is not None
        child = int(owner.stdout.readline())
        assert not gone(child)
        owner.kill()
        owner.wait(10)
        wait_for(lambda: gone(child), timeout=10, message="the child to die with its owner")
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait(10)
        if owner.stdout is not None:
            owner.stdout.close()
