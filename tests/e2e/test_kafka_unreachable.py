"""A Kafka broker that does not answer: every command says once which bootstrap address did not
answer, retries quietly for a bounded time, exits 1, and stops at once on Ctrl-C; `send` to a
topic that does not exist says to run `orchestrator topics create`; a failed replay prints its
error once.

The commands run as real processes against a closed loopback port (bound, then closed: nothing
listens there), with `ORCHESTRATOR_KAFKA_CONNECT_TIMEOUT_S` small. Before this, `topics create`
printed ~290 raw librdkafka lines over 16 s and ignored Ctrl-C, `ingest` and `simulate` ~18 a
second forever, and `send` "Message timed out".
"""

from __future__ import annotations

import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from orchestrator.devtools.supervisor import BIN
from orchestrator.service.operator_views import ReplayResult
from tests.support.env import clean_env, process_env
from tests.support.helpers import wait_for

BOUND_S = 1.5
# Start-up (~1 s of imports on a loaded machine, more), the bound, and leaving.
EXIT_DEADLINE_S = 20.0
SIGINT_DEADLINE_S = 3.0
MAX_LINES = 5


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def dead_bootstrap() -> str:
    return f"127.0.0.1:{closed_port()}"


def env_for(bootstrap: str, tmp_path: Path, **extra: str) -> dict[str, str]:
    """Nothing else reachable either: a command that touched PostgreSQL or Redis would say so."""
    s = uuid.uuid4().hex[:8]
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "DATABASE_URL": f"postgresql+psycopg2://postgres@127.0.0.1:{closed_port()}/orch_test_x",
        "REDIS_URL": f"redis://127.0.0.1:{closed_port()}/15",
        "ORCHESTRATOR_KAFKA_CONNECT_TIMEOUT_S": str(BOUND_S),
        "ORCHESTRATOR_DOMAIN_TOPIC": f"genesis.domain.events.{s}",
        "ORCHESTRATOR_CAPABILITY_TOPIC": f"genesis.capability.events.{s}",
        "ORCHESTRATOR_DLQ_TOPIC": f"genesis.orchestrator.dlq.{s}",
        "ORCHESTRATOR_TASK_TOPIC_PREFIX": f"t{s}.",
        "ORCHESTRATOR_CONSUMER_GROUP": f"orch-{s}",
    }
    return process_env(**{**env, **extra})


COMMANDS = {
    "topics create": ["topics", "create"],
    "send": [
        "send",
        "Character.Request",
        "--session",
        "s-1",
        "--payload",
        "{}",
        "--timeout",
        "1.5",
    ],
    "ingest": ["ingest"],
    "simulate": ["simulate", "--group", "sim-unreachable"],
}


@pytest.mark.parametrize("name", list(COMMANDS))
def test_an_unreachable_broker_is_named_once_and_the_command_exits(
    name: str, dead_bootstrap: str, tmp_path: Path
) -> None:
    began = time.monotonic()
    done = subprocess.run(
        [str(BIN / "orchestrator"), *COMMANDS[name]],
        cwd=tmp_path,
        env=env_for(dead_bootstrap, tmp_path),
        capture_output=True,
        text=True,
        timeout=EXIT_DEADLINE_S + 10,
        check=False,
    )
    took = time.monotonic() - began
    output = done.stdout + done.stderr
    lines = output.strip().splitlines()
    assert done.returncode == 1, output
    assert took < EXIT_DEADLINE_S, (took, output)
    assert took >= BOUND_S, "it gave up before the bound"
    assert output.count(dead_bootstrap) == 1, output
    assert not [line for line in lines if line.startswith("%")], output  # raw librdkafka
    assert len(lines) <= MAX_LINES, output
    assert lines[-1].startswith(f"orchestrator: {name}: kafka unreachable:"), lines[-1]
    assert dead_bootstrap in lines[-1] and "Connection refused" in lines[-1]


@pytest.fixture
def started(tmp_path: Path) -> Iterator[list[subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []
    try:
        yield procs
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(10)


@pytest.mark.parametrize(("name", "code"), [("ingest", 0), ("simulate", 0), ("topics create", 130)])
def test_ctrl_c_stops_the_wait_for_the_broker_at_once(
    name: str,
    code: int,
    dead_bootstrap: str,
    tmp_path: Path,
    started: list[subprocess.Popen[str]],
) -> None:
    log = tmp_path / "out.log"
    with log.open("w") as handle:
        proc = subprocess.Popen(
            [str(BIN / "orchestrator"), *COMMANDS[name]],
            cwd=tmp_path,
            env=env_for(dead_bootstrap, tmp_path, ORCHESTRATOR_KAFKA_CONNECT_TIMEOUT_S="120"),
            stdout=handle,
            stderr=subprocess.STDOUT,
            text=True,
        )
    started.append(proc)
    if name == "topics create":  # quiet: nothing to wait for but its Python being up
        wait_for(lambda: _has_python_up(proc.pid), timeout=EXIT_DEADLINE_S, message="start-up")
    else:  # it is in its wait for the broker once it said so
        wait_for(
            lambda: "orchestrator_kafka_unreachable" in log.read_text() or proc.poll() is not None,
            timeout=EXIT_DEADLINE_S,
            message="the first unreachable line",
        )
    assert proc.poll() is None, log.read_text()
    proc.send_signal(signal.SIGINT)
    sent = time.monotonic()
    proc.wait(SIGINT_DEADLINE_S + 5)
    took = time.monotonic() - sent
    output = log.read_text()
    assert took < SIGINT_DEADLINE_S, (took, output)
    assert proc.returncode == code, output
    assert "Traceback" not in output
    assert not [line for line in output.splitlines() if line.startswith("%")], output


def _has_python_up(pid: int) -> bool:
    """The CLI's modules are loaded once the process has librdkafka mapped (its first client)."""
    try:
        return "librdkafka" in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


def test_send_before_the_topics_exist_says_to_create_them(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    done = subprocess.run(
        [str(BIN / "orchestrator"), *COMMANDS["send"]],
        cwd=tmp_path,
        env=env_for(kafka_bootstrap, tmp_path),
        capture_output=True,
        text=True,
        timeout=EXIT_DEADLINE_S,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "does not exist: run `orchestrator topics create`" in lines[0], lines[0]
    assert "timed out" not in lines[0]


def test_a_failed_replay_prints_its_error_once(
    monkeypatch: pytest.MonkeyPatch, dead_bootstrap: str, tmp_path: Path
) -> None:
    """It was printed on stdout, then again as the error line on stderr."""
    from orchestrator.cli import dead_letters
    from orchestrator.cli.main import app

    clean_env(monkeypatch, KAFKA_BOOTSTRAP_SERVERS=dead_bootstrap)
    still = ReplayResult(
        dead_letter_id="dl-1",
        replayed=False,
        status="OPEN",
        outcome="dead_lettered",
        category="unknown_command",
        reason="no handler for Sonnet.Request",
        fact_ids=[],
        task_ids=[],
        dead_letter_ids=["dl-1"],
        resolution=None,
    )
    monkeypatch.setattr(dead_letters, "_replay", lambda *_a: [still])
    result = CliRunner().invoke(app, ["dead-letters", "replay", "dl-1"])
    assert result.exit_code == 1
    both = result.stdout + result.stderr
    assert both.count("no handler for Sonnet.Request") == 1, both
    assert result.stderr.startswith("orchestrator: dead-letters replay: still a dead letter dl-1")
