"""Security through real processes: secrets never reach a log line or a command's output, and a
real Celery worker refuses a pickled message."""

from __future__ import annotations

import os
import signal
import subprocess
import uuid
from pathlib import Path

import orjson
import redis
from kombu import Connection, Exchange, Producer, Queue
from sqlalchemy.engine import make_url

from orchestrator.adapters.celery.app import NOOP_TASK, make_celery
from orchestrator.settings import Settings
from tests.support.env import process_env
from tests.support.harness import BIN, Stack
from tests.support.helpers import wait_for

CONFIG_SECRET = "S3cretCfg" + uuid.uuid4().hex[:6]


def run_cli(*args: str, timeout: float = 60, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "orchestrator"), *args],
        env=process_env(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_cli_configuration_error_is_one_line_without_the_secret() -> None:
    done = run_cli("db", "upgrade", DATABASE_URL=f"mysql://u:{CONFIG_SECRET}@h/db")
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "orchestrator: invalid setting DATABASE_URL: must be a postgresql:// or"
        " postgresql+psycopg2:// URL"
    ]
    assert CONFIG_SECRET not in done.stdout + done.stderr


def test_malformed_json_setting_is_one_line_without_the_secret() -> None:
    value = '{"sasl.password": ' + CONFIG_SECRET + "}"
    done = run_cli("db", "upgrade", KAFKA_EXTRA_PROPERTIES=value)
    assert CONFIG_SECRET not in done.stdout + done.stderr
    assert done.returncode == 2
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "orchestrator: invalid setting KAFKA_EXTRA_PROPERTIES: "
    ), done.stderr[-500:]


UNREACHABLE_SECRET = "S3cretUnreach" + uuid.uuid4().hex[:6]


def test_unreachable_database_error_is_one_line_without_the_password() -> None:
    url = f"postgresql+psycopg2://postgres:{UNREACHABLE_SECRET}@127.0.0.1:1/orchestrator"
    done = run_cli("db", "upgrade", DATABASE_URL=url)
    assert done.returncode == 1
    assert done.stderr.startswith("orchestrator: db upgrade: database error: ")
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert UNREACHABLE_SECRET not in done.stdout + done.stderr


# -- secrets never in any log line or command output of a real run ----------------------------


DB_SECRET = "S3cretDbPw" + uuid.uuid4().hex[:8]
KAFKA_SECRET = "S3cretSasl" + uuid.uuid4().hex[:8]
EXTRA_SECRET = "S3cretExtra" + uuid.uuid4().hex[:8]
SECRETS = (DB_SECRET, KAFKA_SECRET, EXTRA_SECRET)


def with_password(url: str, password: str) -> str:
    return make_url(url).set(password=password).render_as_string(hide_password=False)


def test_secrets_never_reach_logs_or_cli_output(stack: Stack) -> None:
    """PLAINTEXT Kafka ignores the SASL password and the SSL key password; trust auth ignores
    the database password: the pipeline runs as usual with secrets in its configuration."""
    stack.overrides.update(
        {
            "DATABASE_URL": with_password(stack.database_url, DB_SECRET),
            "KAFKA_SASL_USERNAME": "orchestrator",
            "KAFKA_SASL_PASSWORD": KAFKA_SECRET,
            "KAFKA_EXTRA_PROPERTIES": orjson.dumps({"ssl.key.password": EXTRA_SECRET}).decode(),
            "ORCHESTRATOR_LOG_LEVEL": "DEBUG",
        }
    )
    outputs: dict[str, subprocess.CompletedProcess[str]] = {}
    for args in (("db", "upgrade"), ("topics", "create")):
        outputs[" ".join(args)] = done = stack.cli(*args)
        assert done.returncode == 0, done.stderr
    unreachable = with_password("postgresql+psycopg2://postgres@127.0.0.1:1/x", DB_SECRET)
    outputs["db upgrade (unreachable)"] = stack.cli("db", "upgrade", DATABASE_URL=unreachable)
    assert outputs["db upgrade (unreachable)"].returncode == 1
    outputs["config error"] = stack.cli(
        "db", "upgrade", DATABASE_URL=f"mysql://postgres:{DB_SECRET}@127.0.0.1/x"
    )
    assert outputs["config error"].returncode == 2

    stack.start_all("--scores", "8")
    sessions = [str(uuid.uuid4()) for _ in range(3)]
    for session in sessions:
        stack.send_command(session, "Character.Request", {"name": "Ada"})
    stack.send_result(sessions[0], "Review.Quality.Evaluated", str(uuid.uuid4()), score="high")
    stack.produce(stack.domain_topic, b"\xff not json", b"k")
    stack.flush()
    wait_for(
        lambda: (
            stack.scalar(
                "SELECT count(*) FROM domain_events"
                " WHERE event_type = 'Genesis.Session.Character.Confirmed'"
            )
            == len(sessions)
        ),
        timeout=60,
        message="every session confirmed",
    )
    wait_for(lambda: stack.scalar("SELECT count(*) FROM dead_letters") == 2, timeout=20)
    stack.wait_idle()
    for args in (("stats",), ("outbox",), ("dead-letters", "list"), ("tasks",)):
        outputs[" ".join(args)] = done = stack.cli(*args)
        assert done.returncode == 0, (args, done.stderr)
    for proc in stack.procs:
        assert proc.alive(), f"{proc.name} died:\n{proc.tail()}"
    stack.stop_all()

    logs = sorted(stack.tmp.glob("*.log"))
    assert {p.stem for p in logs} >= {"ingester", "worker", "beat", "simulator"}
    scanned = 0
    for path in logs:
        for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            scanned += 1
            for secret in SECRETS:
                assert secret not in line, f"{path.name}:{n} shows a secret: {line[:300]}"
    for what, done in outputs.items():
        for secret in SECRETS:
            assert secret not in done.stdout + done.stderr, f"`orchestrator {what}` shows it"
    assert scanned > 100, "the processes logged next to nothing: is DEBUG on?"


def test_a_real_worker_refuses_a_pickled_message(tmp_path: Path, redis_url: str) -> None:
    env = process_env(
        REDIS_URL=redis_url,
        DATABASE_URL="postgresql+psycopg2://postgres@127.0.0.1:1/unused",
        ORCHESTRATOR_LOG_LEVEL="INFO",
    )
    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        worker = subprocess.Popen(
            [
                str(BIN / "celery"),
                "-A",
                "tasks",
                "worker",
                "-Q",
                "orchestrator.domain",
                "-P",
                "solo",
                "-n",
                f"pickle-{uuid.uuid4().hex[:6]}@%h",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
                "--loglevel",
                "INFO",
            ],
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        wait_for(
            lambda: "ready" in log.read_text(errors="replace") or worker.poll() is not None,
            timeout=60,
            message="the worker to be ready",
        )
        assert worker.poll() is None, log.read_text(errors="replace")[-3000:]
        settings = Settings(redis_url=redis_url)
        app = make_celery(settings)
        pickled_id, json_id = str(uuid.uuid4()), str(uuid.uuid4())
        message = app.amqp.as_task_v2(pickled_id, NOOP_TASK, args=(), kwargs={})
        exchange = Exchange("orchestrator.domain", type="direct")
        queue = Queue("orchestrator.domain", exchange, routing_key="orchestrator.domain")
        with Connection(redis_url) as conn:
            Producer(conn.channel()).publish(
                message.body,
                exchange=exchange,
                routing_key="orchestrator.domain",
                headers=message.headers,
                serializer="pickle",
                declare=[queue],
                **message.properties,
            )
        wait_for(
            lambda: "pickle" in log.read_text(errors="replace"),
            timeout=30,
            message="the worker to report the pickled message",
        )
        # A JSON message after it runs: the worker was consuming, and is still alive.
        app.send_task(NOOP_TASK, task_id=json_id, queue="orchestrator.domain")
        wait_for(
            lambda: f"{json_id}] succeeded" in log.read_text(errors="replace"),
            timeout=30,
            message="the JSON task to run",
        )
        output = log.read_text(errors="replace")
        refused = [line for line in output.splitlines() if "pickle" in line]
        assert any("untrusted content of type pickle" in line for line in refused), refused
        assert f"{pickled_id}] received" not in output
        assert f"{pickled_id}] succeeded" not in output
        assert worker.poll() is None
        client = redis.Redis.from_url(redis_url)
        try:
            assert client.llen("orchestrator.domain") == 0  # not left to come back
        finally:
            client.close()
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGTERM)
            try:
                worker.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(worker.pid, signal.SIGKILL)
                worker.wait(10)
