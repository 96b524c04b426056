"""`orchestrator demo` as a newcomer runs it: the real command, a clean environment, real
processes; it must finish its sessions, say so, and leave no process behind."""

from __future__ import annotations

import json
import os
import queue
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import psutil
import pytest
import redis
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from orchestrator.devtools.demo import (
    DemoTopics,
    Event,
    SessionPlan,
    Story,
    parse_scores,
    plain_event_line,
)
from orchestrator.devtools.redis_claim import redis_db_of, with_redis_db
from tests.support.helpers import wait_for

ORCHESTRATOR = str(Path(sys.executable).parent / "orchestrator")
DEMO_TIMEOUT_S = 240.0
LINE = re.compile(
    r"^\+\s*(?P<ms>\d+) ms  session (?P<session>[0-9a-f-]+)  "
    r"(?P<kind>command|fact|task|result|dead letter)\s+(?P<name>\S+)"
)
CHARACTER_FACTS = [
    "Genesis.Session.Character.Requested",
    "Genesis.Session.Character.Proposed",
    "Genesis.Session.Character.RegenerationRequested",
    "Genesis.Session.Character.Proposed",
    "Genesis.Session.Character.Confirmed",
]
STAGE_FACTS = ["Genesis.Session.Stage.ValidationRequested", "Genesis.Session.Stage.Confirmed"]


@dataclass
class DemoRun:
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path / "demo-work"


def clean_env(home: Path, **extra: str) -> dict[str, str]:
    """Nothing but PATH and HOME (plus what a test adds): a fresh machine's shell."""
    return {"PATH": os.environ["PATH"], "HOME": str(home), **extra}


def run_demo(env: dict[str, str], *args: str) -> DemoRun:
    began = time.monotonic()
    done = subprocess.run(
        [ORCHESTRATOR, "demo", *args],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=DEMO_TIMEOUT_S,
        check=False,
    )
    return DemoRun(done.returncode, done.stdout, done.stderr, time.monotonic() - began)


def started_pids(output: str) -> set[int]:
    """Every PID the demo says it started (embedded servers and processes)."""
    return {int(pid) for pid in re.findall(r"\bpid (\d+)", output)}


def leftovers(home: Path, workdir: Path, pids: set[int], since: float) -> list[str]:
    """Live processes the demo started: a PID it printed, or a process created since the
    demo started whose HOME is the demo's (its children and their pools) or that runs in or
    names its work directory."""
    found: list[str] = []
    for proc in psutil.process_iter(["pid", "cmdline", "cwd", "create_time", "status"]):
        try:
            info = proc.info
            if info["status"] == psutil.STATUS_ZOMBIE or info["create_time"] < since - 1.0:
                continue
            command = " ".join(info["cmdline"] or [])
            cwd = info["cwd"] or ""
            try:
                child_home = proc.environ().get("HOME")
            except psutil.AccessDenied:
                child_home = None
            if (
                info["pid"] in pids
                or child_home == str(home)
                or cwd.startswith(str(workdir))
                or str(workdir) in command
            ):
                found.append(f"{info['pid']} {command}")
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def assert_nothing_left(
    home: Path, workdir: Path, output: str, since: float, seen: set[int] | None = None
) -> None:
    """Nothing the demo started runs any more: no PID it printed or `seen` among its
    descendants, no process with its HOME, none in or naming its work directory."""
    pids = started_pids(output) | (seen or set())
    assert pids, f"the demo named no PID it started:\n{output}"
    left: list[str] = []

    def clean() -> bool:
        left[:] = leftovers(home, workdir, pids, since)
        return not left

    wait_for(clean, timeout=5.0, message=lambda: f"no process left behind; left: {left}")


def story_lines(output: str) -> list[re.Match[str]]:
    return [m for m in map(LINE.match, output.splitlines()) if m is not None]


def submitted_sessions(output: str) -> list[str]:
    line = next(x for x in output.splitlines() if x.startswith("submitted "))
    return re.findall(r"session ([0-9a-f]{8})", line)


def assert_sessions_told(run: DemoRun, sessions: int) -> None:
    out = run.stdout
    shorts = submitted_sessions(out)
    assert len(shorts) == sessions
    lines = story_lines(out)
    for short in shorts:
        mine = [m for m in lines if m["session"] == short]
        facts = [m["name"] for m in mine if m["kind"] == "fact"]
        assert [f for f in facts if ".Character." in f] == CHARACTER_FACTS, out
        assert [f for f in facts if ".Stage." in f] == STAGE_FACTS, out
        assert "Genesis.Session.Theme.Confirmed" in facts
        commands = [m for m in mine if m["kind"] == "command"]
        assert {m["name"] for m in commands} == {"Genesis.Session.Command.Received"}
        assert len(commands) == 3
        tasks = [m["name"] for m in mine if m["kind"] == "task"]
        assert tasks.count("Character.Design.GenerationRequested") == 2
        assert "Review.Consistency.CheckRequested" in tasks
        results = [m["name"] for m in mine if m["kind"] == "result"]
        assert results.count("Review.Quality.Evaluated") == 4
        summary = next(x for x in out.splitlines() if x.startswith(f"  session {short}"))
        assert "Character: Confirmed after 2 attempts (review scores 6, 8)" in summary
        assert "Theme: Confirmed after 2 attempts" in summary
        assert "Stage: Confirmed" in summary
    assert f"summary: {sessions} of {sessions} sessions reached their final states" in out
    assert not [m for m in lines if m["kind"] == "dead letter"]
    assert re.search(r"^stopped 4 process\(es\)", out, re.MULTILINE), out


# -- the whole demo -------------------------------------------------------------------------


def test_demo_on_a_fresh_machine(home: Path, workdir: Path) -> None:
    since = time.time()
    run = run_demo(clean_env(home), "--embedded", "--sessions", "2", "--workdir", str(workdir))
    assert run.returncode == 0, run.output
    assert "starting embedded servers (--embedded)" in run.stdout
    assert "using embedded services: Kafka (Tansu)" in run.stdout
    assert_sessions_told(run, 2)
    assert "and 3 embedded server(s)" in run.stdout
    assert (workdir / "worker.log").is_file() and f"logs: {workdir}" in run.stdout
    assert_nothing_left(home, workdir, run.output, since)
    print(f"orchestrator demo --embedded --sessions 2: {run.seconds:.1f} s")


def test_demo_uses_the_configured_services(
    home: Path, workdir: Path, database_url: str, redis_url: str, kafka_bootstrap: str
) -> None:
    since = time.time()
    env = clean_env(
        home,
        DATABASE_URL=database_url,
        REDIS_URL=redis_url,
        KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap,
    )
    run = run_demo(env, "--sessions", "1", "--workdir", str(workdir))
    assert run.returncode == 0, run.output
    assert "using the configured services" in run.stdout
    assert "starting embedded servers" not in run.stdout
    assert "embedded server(s)" not in run.stdout
    assert_sessions_told(run, 1)
    # The facts went through the configured database ...
    engine = create_engine(database_url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            facts = conn.execute(
                text("SELECT count(*) FROM domain_events WHERE session_id LIKE :s"),
                {"s": submitted_sessions(run.stdout)[0] + "%"},
            ).scalar()
    finally:
        engine.dispose()
    assert facts == 12
    # ... and the borrowed Redis database was emptied again.
    client = redis.Redis.from_url(redis_url)
    try:
        assert client.dbsize() == 0
    finally:
        client.close()
    assert_nothing_left(home, workdir, run.output, since)


# -- interruptions and failures --------------------------------------------------------------


class LineReader:
    """Reads a child's stdout on a thread, so the test can wait for a line with a deadline."""

    def __init__(self, stream: IO[str]) -> None:
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self._thread.start()

    def _pump(self, stream: IO[str]) -> None:
        try:
            for line in iter(stream.readline, ""):
                self._queue.put(line)
        except (OSError, ValueError):  # closed by the fixture after a failed test
            pass
        finally:
            self._queue.put(None)

    def wait_for(self, pattern: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self._queue.get(timeout=0.1)
            except queue.Empty:
                continue
            if line is None:
                break
            self.lines.append(line)
            if re.search(pattern, line):
                return line
        raise AssertionError(f"no line matching {pattern!r}; got:\n{''.join(self.lines)}")

    def rest(self, timeout: float = 10.0) -> str:
        self._thread.join(timeout)
        while True:
            try:
                line = self._queue.get_nowait()
            except queue.Empty:
                break
            if line is not None:
                self.lines.append(line)
        return "".join(self.lines)


@pytest.fixture
def spawn_demo(home: Path, workdir: Path) -> Iterator[list[subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:  # only if the test failed before its demo ended
            proc.kill()
            proc.wait(30)
        if proc.stdout is not None:
            proc.stdout.close()


def descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def running(pid: int, needle: str) -> bool:
    """A descendant of `pid` whose command line contains `needle` is running."""
    for child in descendants(pid):
        try:
            if needle in " ".join(child.cmdline()) and child.status() != psutil.STATUS_ZOMBIE:
                return True
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return False


@dataclass(frozen=True)
class Phase:
    """Where the signal lands: the demo printed `line` and runs a process matching `process`;
    then it must print `stopped` and none of the lines of the phases after it (`not_reached`)."""

    line: str
    process: str
    stopped: str
    not_reached: tuple[str, ...]


STARTING_SERVERS = Phase(
    line=r"^starting embedded servers \(--embedded\)",
    process="",  # any process: the first embedded server is starting
    # The servers started so far are stopped by the stack itself: nothing is left to count.
    stopped=r"^stopped 0 process\(es\) in ",
    not_reached=("using embedded services", "migrations applied", "submitted "),
)
SETTING_UP = Phase(
    line=r"^using embedded services: ",
    process="db upgrade",
    # The processes started beside the set-up (the worker, then the ingester and simulator
    # that wait for the topics: how many depends on how far it got); the set-up commands are
    # stopped on the way out.
    stopped=r"^stopped [1-3] process\(es\) and 3 embedded server\(s\) in ",
    not_reached=("migrations applied", "submitted "),
)
SESSIONS_RUNNING = Phase(
    line=r"^\+\s*\d+ ms  session \w+  fact ",
    process="ingest",
    stopped=r"^stopped 4 process\(es\) and 3 embedded server\(s\) in ",
    not_reached=("summary: ",),
)


@pytest.mark.parametrize(
    ("sig", "phase", "code"),
    [
        (signal.SIGINT, STARTING_SERVERS, 130),
        (signal.SIGTERM, SETTING_UP, 143),
        (signal.SIGTERM, SESSIONS_RUNNING, 143),
    ],
    ids=["sigint-while-starting-servers", "sigterm-during-set-up", "sigterm-while-sessions-run"],
)
def test_a_signal_stops_everything(
    home: Path,
    workdir: Path,
    spawn_demo: list[subprocess.Popen[str]],
    sig: signal.Signals,
    phase: Phase,
    code: int,
) -> None:
    since = time.time()
    proc = subprocess.Popen(
        [ORCHESTRATOR, "demo", "--embedded", "--sessions", "3", "--workdir", str(workdir)],
        env=clean_env(home),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    spawn_demo.append(proc)
    assert proc.stdout is not None
    reader = LineReader(proc.stdout)
    reader.wait_for(phase.line, timeout=120)
    wait_for(
        lambda: running(proc.pid, phase.process),
        timeout=60,
        message=f"a process of the demo matching {phase.process!r}",
    )
    seen = {child.pid for child in descendants(proc.pid)}
    sent = time.monotonic()
    proc.send_signal(sig)
    assert proc.wait(60) == code
    stopped_in = time.monotonic() - sent
    output = reader.rest()
    assert f"{sig.name} received, stopping everything" in output, output
    assert re.search(phase.stopped, output, re.MULTILINE), output
    for later in phase.not_reached:
        assert later not in output, f"the signal landed after {later!r}:\n{output}"
    assert stopped_in < 30, f"took {stopped_in:.1f} s to stop"
    assert_nothing_left(home, workdir, output, since, seen)


def test_sessions_that_do_not_finish_in_time_fail_clearly(home: Path, workdir: Path) -> None:
    since = time.time()
    run = run_demo(clean_env(home), "--embedded", "--timeout", "1", "--workdir", str(workdir))
    assert run.returncode == 1, run.output
    assert "orchestrator demo: sessions did not finish within 1 s" in run.stderr
    assert "---- ingester" in run.stderr  # the last lines of each log
    assert "summary: 0 of 2 sessions reached their final states" in run.stdout
    assert_nothing_left(home, workdir, run.output, since)


# -- pieces ----------------------------------------------------------------------------------


def test_redis_database_urls() -> None:
    assert redis_db_of("redis://h:6379") == 0
    assert redis_db_of("redis://h:6379/7") == 7
    assert redis_db_of("unix:///tmp/r.sock?db=3") == 3
    assert with_redis_db("redis://:pw@h:6379/0?ssl_cert_reqs=none", 15) == (
        "redis://:pw@h:6379/15?ssl_cert_reqs=none"
    )
    assert with_redis_db("unix:///tmp/r.sock?db=3", 4) == "unix:///tmp/r.sock?db=4"


def test_scores_are_parsed() -> None:
    assert parse_scores("6,8") == (6.0, 8.0)
    assert parse_scores(" 7.5 ") == (7.5,)
    for bad in ("", "six", "6;8"):
        with pytest.raises(ValueError, match="--scores"):
            parse_scores(bad)


def test_plain_lines_name_events_in_full() -> None:
    plan = SessionPlan("3f2a1b2c-0000-4000-8000-000000000000", "Ada", "a theme")
    story = Story([plan], DemoTopics.defaults())
    event = Event(812.0, plan.session_id, "fact", "Genesis.Session.Character.Proposed", "x")
    assert plain_event_line(event, story) == (
        "+   812 ms  session 3f2a1b2c  fact         Genesis.Session.Character.Proposed  x"
    )


# -- --keep, orchestrator down, and settings that stop the demo -----------------------------

KEPT = r"stop it with Ctrl-C here, or `orchestrator down`"
EXPORT = re.compile(r"^\s*export (?P<name>[A-Z_]+)=(?P<value>\S+)$")


def start_kept_demo(home: Path, workdir: Path) -> tuple[subprocess.Popen[str], LineReader]:
    argv = [ORCHESTRATOR, "demo", "--embedded", "--keep", "--sessions", "1"]
    proc = subprocess.Popen(
        [*argv, "--workdir", str(workdir)],
        env=clean_env(home),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    reader = LineReader(proc.stdout)
    reader.wait_for(KEPT, timeout=180)
    return proc, reader


def exports_and_session(output: str) -> tuple[dict[str, str], str]:
    exports = {}
    for line in output.splitlines():
        match = EXPORT.match(line)
        if match:
            exports[match["name"]] = shlex.split(match["value"])[0]
    (sessions,) = [line for line in output.splitlines() if line.startswith("sessions: ")]
    return exports, sessions.removeprefix("sessions: ").split()[0]


def cli(home: Path, exports: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [ORCHESTRATOR, *args],
        env=clean_env(home, **exports),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_kept_demo_answers_operator_commands_until_orchestrator_down(
    home: Path, workdir: Path, spawn_demo: list[subprocess.Popen[str]]
) -> None:
    since = time.time()
    proc, reader = start_kept_demo(home, workdir)
    spawn_demo.append(proc)
    output = "".join(reader.lines)
    exports, session = exports_and_session(output)
    assert set(exports) >= {"DATABASE_URL", "REDIS_URL", "KAFKA_BOOTSTRAP_SERVERS"}, output
    assert str(uuid.UUID(session)) == session
    assert (workdir / "env.sh").read_text().count("export ") == len(exports)
    seen = {child.pid for child in descendants(proc.pid)}

    # The story is over, the stack is still there: the sessions it printed can be traced ...
    traced = cli(home, exports, "trace", session, "--json")
    assert traced.returncode == 0, traced.stderr
    facts = [e["type"] for e in json.loads(traced.stdout) if e["kind"] == "fact"]
    assert "Genesis.Session.Character.Confirmed" in facts
    listed = cli(home, exports, "tasks", "--session", session, "--json")
    assert listed.returncode == 0 and len(json.loads(listed.stdout)) == 9, listed.stderr

    # ... and a new command is processed by the kept processes.
    fresh = str(uuid.uuid4())
    payload = '{"name": "Grace"}'
    sent = cli(home, exports, "send", "Character.Request", "--session", fresh, "--payload", payload)
    assert sent.returncode == 0, sent.stderr

    def confirmed() -> bool:
        done = cli(home, exports, "trace", fresh, "--json")
        return done.returncode == 0 and "Genesis.Session.Character.Confirmed" in done.stdout

    wait_for(confirmed, timeout=60, message="the sent command's session confirmed")
    assert proc.poll() is None, "the kept demo ended on its own"

    down = subprocess.run(
        [ORCHESTRATOR, "down"],
        env=clean_env(home),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert down.returncode == 0, down.stdout + down.stderr
    assert f"stopped the kept demo (pid {proc.pid})" in down.stdout
    assert proc.wait(30) == 0
    rest = reader.rest()
    assert re.search(r"^stopped 4 process\(es\) and 3 embedded server\(s\)", rest, re.M), rest
    assert_nothing_left(home, workdir, rest, since, seen)
    again = subprocess.run(
        [ORCHESTRATOR, "down"], env=clean_env(home), capture_output=True, text=True, timeout=60
    )
    assert again.returncode == 0 and "no kept demo found" in again.stdout


def test_ctrl_c_stops_a_kept_demo(
    home: Path, workdir: Path, spawn_demo: list[subprocess.Popen[str]]
) -> None:
    since = time.time()
    proc, reader = start_kept_demo(home, workdir)
    spawn_demo.append(proc)
    seen = {child.pid for child in descendants(proc.pid)}
    state_dir = home / ".local" / "state" / "genesis-orchestrator"
    assert [p.name for p in state_dir.iterdir()] == [f"demo-{proc.pid}.json"]
    proc.send_signal(signal.SIGINT)
    assert proc.wait(60) == 0  # the normal way to end a kept demo
    output = reader.rest()
    assert "SIGINT received, stopping everything" in output
    assert not list(state_dir.iterdir()), "the state file outlived the demo"
    assert_nothing_left(home, workdir, output, since, seen)


def test_invalid_setting_stops_the_demo_before_it_starts_anything(
    home: Path, workdir: Path
) -> None:
    for name, value in (("ORCHESTRATOR_MAX_ATTEMPTS", "-1"), ("KAFKA_BOOTSTRAP_SERVERS", "")):
        began = time.monotonic()
        run = run_demo(clean_env(home, **{name: value}), "--embedded", "--workdir", str(workdir))
        assert run.returncode == 2, run.output
        lines = run.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"orchestrator: invalid setting {name}: ")
        assert "pid" not in run.output and not workdir.exists(), run.output
        assert time.monotonic() - began < 20


def test_a_typo_in_a_setting_name_is_named_with_the_closest_setting(home: Path) -> None:
    done = subprocess.run(
        [ORCHESTRATOR, "config", "--json"],
        env=clean_env(home, ORCHESTRATOR_MAX_ATTEMPT="3"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == (
        "orchestrator: warning: ORCHESTRATOR_MAX_ATTEMPT is not a setting"
        " (did you mean ORCHESTRATOR_MAX_ATTEMPTS?); it is ignored"
    )
