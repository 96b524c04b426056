"""Security: Kafka SASL/SSL and Redis AUTH/TLS settings reach every client; secrets never reach
a log line or a command's output; the payload size cap holds; SQL only through bound
parameters; Celery accepts JSON only (a pickled message is refused by a real worker); Flower's
credential in the compose file is a placeholder."""

from __future__ import annotations

import ast
import os
import re
import signal
import ssl
import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
import yaml
from kombu import Connection, Exchange, Producer, Queue
from kombu.transport import redis as kombu_redis
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url

from orchestrator.adapters import kafka as kafka_adapter
from orchestrator.adapters.db import make_engine
from orchestrator.adapters.kafka import consumer_config, producer_config
from orchestrator.adapters.redis_state import make_redis
from orchestrator.adapters.store import SqlStore
from orchestrator.agent import AgentConfig, OrchestratorAgent
from orchestrator.envelopes import RawMessage
from orchestrator.errors import Category, ConfigurationError
from orchestrator.records import Status
from orchestrator.runtime.celery_app import NOOP_TASK, make_celery
from orchestrator.settings import Settings, load_settings
from orchestrator.simulator import SimulatorConfig, run_simulator
from tests.e2e.conftest import stack  # noqa: F401  (the end-to-end fixture)
from tests.e2e.harness import BIN, Stack
from tests.helpers import wait_for

ROOT = Path(__file__).resolve().parents[2]
ENV_PREFIXES = ("ORCHESTRATOR_", "KAFKA_", "CELERY_")


def clean_env(monkeypatch: pytest.MonkeyPatch, **env: str) -> None:
    """Only the given settings in the environment (nothing inherited from the caller)."""
    for name in list(os.environ):
        if name.startswith(ENV_PREFIXES) or name in {"DATABASE_URL", "REDIS_URL"}:
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)


def process_env(**env: str) -> dict[str, str]:
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(ENV_PREFIXES) and k not in {"DATABASE_URL", "REDIS_URL"}
    }
    return {**base, "PYTHONUNBUFFERED": "1", **env}


# -- Kafka SASL / SSL -------------------------------------------------------------------------


SASL_PASSWORD = "S3cretSaslPw-" + uuid.uuid4().hex[:8]
EXTRA = {
    "ssl.endpoint.identification.algorithm": "https",
    "sasl.oauthbearer.client.id": "orchestrator",
    "client.rack": "rack-7",
}


@pytest.fixture
def sasl_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Settings:
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n")
    clean_env(
        monkeypatch,
        KAFKA_BOOTSTRAP_SERVERS="broker-1.example:9093,broker-2.example:9093",
        KAFKA_SECURITY_PROTOCOL="SASL_SSL",
        KAFKA_SASL_MECHANISM="SCRAM-SHA-512",
        KAFKA_SASL_USERNAME="orchestrator",
        KAFKA_SASL_PASSWORD=SASL_PASSWORD,
        KAFKA_SSL_CA_LOCATION=str(ca),
        KAFKA_EXTRA_PROPERTIES=orjson.dumps(EXTRA).decode(),
    )
    return load_settings()


def expected_security(settings: Settings) -> dict[str, Any]:
    return {
        "bootstrap.servers": "broker-1.example:9093,broker-2.example:9093",
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "orchestrator",
        "sasl.password": SASL_PASSWORD,
        "ssl.ca.location": str(settings.kafka_ssl_ca_location),
        **EXTRA,
    }


def test_kafka_security_reaches_producer_consumer_and_admin(
    sasl_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    wanted = expected_security(sasl_settings)
    for conf in (
        sasl_settings.kafka_common(),
        producer_config(sasl_settings),
        consumer_config(sasl_settings),
        consumer_config(sasl_settings, "another-group"),
    ):
        assert wanted.items() <= conf.items(), conf.keys()
    assert producer_config(sasl_settings)["acks"] == "all"

    seen: list[dict[str, Any]] = []

    class Refuse(Exception):
        pass

    def admin(conf: dict[str, Any]) -> Any:
        seen.append(conf)
        raise Refuse

    monkeypatch.setattr(kafka_adapter.kafka_admin, "AdminClient", admin)
    with pytest.raises(Refuse):
        kafka_adapter.create_topics(sasl_settings, ["t"])
    assert wanted.items() <= seen[-1].items()


def test_kafka_security_reaches_the_simulator(
    sasl_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    import confluent_kafka

    seen: dict[str, dict[str, Any]] = {}

    class Fake:
        def __init__(self, conf: dict[str, Any]) -> None:
            seen[type(self).__name__] = conf

        def subscribe(self, _topics: list[str], **_callbacks: Any) -> None:
            pass

        def consume(self, *_: Any) -> list[Any]:
            return []

        def poll(self, *_: Any) -> int:
            return 0

        def flush(self, *_: Any) -> int:
            return 0

        def close(self) -> None:
            pass

    monkeypatch.setattr(confluent_kafka, "Consumer", type("Consumer", (Fake,), {}))
    monkeypatch.setattr(confluent_kafka, "Producer", type("Producer", (Fake,), {}))
    stop = threading.Event()
    stop.set()
    run_simulator(sasl_settings, SimulatorConfig(scores=[8.0]), stop)
    wanted = expected_security(sasl_settings)
    assert set(seen) == {"Consumer", "Producer"}
    for conf in seen.values():
        assert wanted.items() <= conf.items()


def test_the_sasl_password_is_a_secret_in_settings(sasl_settings: Settings) -> None:
    assert SASL_PASSWORD not in repr(sasl_settings)
    assert SASL_PASSWORD not in str(sasl_settings.model_dump())


# -- Redis AUTH / TLS -------------------------------------------------------------------------


REDIS_PASSWORD = "S3cretRedisPw-" + uuid.uuid4().hex[:8]


def test_rediss_url_with_password_reaches_celery_and_redis(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = f"rediss://:{REDIS_PASSWORD}@redis.example:6380/0?ssl_cert_reqs=required"
    clean_env(monkeypatch, REDIS_URL=url)
    settings = load_settings()
    app = make_celery(settings)
    assert app.conf.broker_url == url
    conn = app.connection_for_write()
    # kombu's Redis transport (orchestrator.runtime.celery_transport), TLS from the URL.
    assert issubclass(conn.get_transport_cls(), kombu_redis.Transport)
    assert conn.password == REDIS_PASSWORD
    assert (conn.hostname, conn.port) == ("redis.example", 6380)
    assert conn.ssl == {"ssl_cert_reqs": ssl.CERT_REQUIRED}
    assert REDIS_PASSWORD not in conn.as_uri()  # what Celery prints in its banner

    client = make_redis(settings.redis_url)
    pool = client.connection_pool
    assert pool.connection_class is redis.SSLConnection
    kwargs = pool.connection_kwargs
    assert kwargs["password"] == REDIS_PASSWORD
    assert (kwargs["host"], kwargs["port"], kwargs["db"]) == ("redis.example", 6380, 0)
    assert kwargs["ssl_cert_reqs"] == "required"


def test_plain_rediss_url_is_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"rediss://:{REDIS_PASSWORD}@redis.example/0"
    clean_env(monkeypatch, REDIS_URL=url)
    settings = load_settings()
    assert make_celery(settings).conf.broker_url == url
    client = make_redis(settings.redis_url)
    assert client.connection_pool.connection_class is redis.SSLConnection
    assert client.connection_pool.connection_kwargs["password"] == REDIS_PASSWORD


def test_plain_rediss_url_verifies_the_certificate(monkeypatch: pytest.MonkeyPatch) -> None:
    clean_env(monkeypatch, REDIS_URL=f"rediss://:{REDIS_PASSWORD}@redis.example/0")
    conn = make_celery(load_settings()).connection_for_write()
    assert conn.ssl and conn.ssl.get("ssl_cert_reqs") == ssl.CERT_REQUIRED


# -- configuration errors never echo a secret -------------------------------------------------

CONFIG_SECRET = "S3cretCfg" + uuid.uuid4().hex[:6]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DATABASE_URL", f"mysql://u:{CONFIG_SECRET}@h/db"),
        ("DATABASE_URL", f"{CONFIG_SECRET}"),
        ("REDIS_URL", f"http://:{CONFIG_SECRET}@h/0"),
        ("KAFKA_SESSION_TIMEOUT_MS", CONFIG_SECRET),
        ("KAFKA_EXTRA_PROPERTIES", orjson.dumps([CONFIG_SECRET]).decode()),
        ("ORCHESTRATOR_LOG_LEVEL", CONFIG_SECRET),
    ],
    ids=["db-scheme", "db-garbage", "redis-scheme", "int", "extra-not-object", "log-level"],
)
def test_configuration_error_names_the_variable_without_the_secret(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    clean_env(monkeypatch, **{name: value})
    with pytest.raises(ConfigurationError) as info:
        load_settings()
    message = str(info.value)
    assert message.startswith(f"invalid setting {name}: ")
    assert CONFIG_SECRET not in message


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
        "orchestrator: invalid setting DATABASE_URL: Value error, must be a postgresql:// or"
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


def test_secrets_never_reach_logs_or_cli_output(stack: Stack) -> None:  # noqa: F811
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


# -- the payload size cap ---------------------------------------------------------------------


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    eng = make_engine(database_url)
    try:
        yield eng
    finally:
        eng.dispose()


def test_payload_over_the_cap_is_a_too_large_dead_letter(engine: Engine) -> None:
    cap = 2048
    agent = OrchestratorAgent(SqlStore(engine), AgentConfig(max_message_bytes=cap))
    session = str(uuid.uuid4())
    doc = {
        "event_id": str(uuid.uuid4()),
        "event_type": "Genesis.Session.Command.Received",
        "aggregate_type": "GenesisSession",
        "aggregate_id": session,
        "payload": {"command_type": "Character.Request", "payload": {"name": ""}},
        "metadata": {"correlation_id": str(uuid.uuid4())},
    }
    fits = orjson.dumps(doc)
    doc["payload"]["payload"]["name"] = "x" * (cap - len(fits))
    at_cap = orjson.dumps(doc)
    assert len(at_cap) == cap
    assert agent.process_message(RawMessage("genesis.domain.events", at_cap, b"k")).status is (
        Status.PROCESSED
    )
    doc["event_id"] = str(uuid.uuid4())
    doc["payload"]["payload"]["name"] = "x" * (cap - len(fits) + 1)
    over = RawMessage("genesis.domain.events", orjson.dumps(doc), b"k", (), 0, 9)
    outcome = agent.process_message(over)
    assert (outcome.status, outcome.category) == (Status.DEAD_LETTERED, Category.TOO_LARGE.value)
    with engine.connect() as conn:
        row = conn.execute(
            text("SELECT category, value FROM dead_letters WHERE id = :id"),
            {"id": outcome.dead_letter_id},
        ).one()
        dlq = conn.execute(
            text("SELECT topic, payload FROM event_outbox WHERE id = :id"),
            {"id": outcome.dead_letter_id},
        ).one()
        inbox = conn.execute(text("SELECT count(*) FROM inbox")).scalar_one()
    assert row.category == "too_large" and bytes(row.value) == over.value
    assert dlq.topic == "genesis.orchestrator.dlq" and bytes(dlq.payload) == over.value
    assert inbox == 1  # only the message at the cap


# -- SQL only through bound parameters --------------------------------------------------------

SQL_WORDS = re.compile(
    r"\b(SELECT|INSERT INTO|UPDATE \w+ SET|DELETE FROM|CREATE (DATABASE|TABLE|INDEX|SCHEMA)"
    r"|DROP (DATABASE|TABLE)|ALTER TABLE|TRUNCATE|WHERE|VALUES)\b"
)
# Constant-only f-strings: every interpolated name is a module constant or an identifier the
# code chose itself, never input. Keyed by file and the stripped text of the line it starts on.
ALLOWED = {
    (
        "orchestrator/adapters/store.py",
        '"find_inbox": f"SELECT {INBOX_COLUMNS} FROM inbox WHERE topic = :topic AND message_id'
        ' = :mid",  # noqa: S608',
    ),
    (
        "orchestrator/adapters/store.py",
        '"inbox_for_update": f"SELECT {INBOX_COLUMNS} FROM inbox WHERE id = :id FOR UPDATE",'
        "  # noqa: S608",
    ),
    (
        "orchestrator/adapters/store.py",
        'f"UPDATE inbox SET attempts = attempts + 1 WHERE id = ("  # noqa: S608',
    ),
    (
        "orchestrator/adapters/store.py",
        '"SELECT pg_advisory_xact_lock(hashtextextended(:sid, 7274)) AS locked,"  # noqa: S608',
    ),
    # The embedded server's own database name (a constant of the embedded defaults), quoted:
    # CREATE DATABASE takes no bound parameter.
    ("orchestrator/embedded.py", "conn.execute(text(f'CREATE DATABASE \"{self.database}\"'))"),
}
TEXT_PATTERNS = re.compile(r"(?<![\w.])text\(f[\"']|\.execute\(f[\"']|exec_driver_sql\(f[\"']")


def _source_files() -> list[Path]:
    files: list[Path] = []
    for top in ("orchestrator", "tasks", "beat"):
        files.extend(p for p in (ROOT / top).rglob("*.py") if "migrations/versions" not in str(p))
    return sorted(files)


def _constant_text(node: ast.AST) -> str:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(_constant_text(v) for v in node.values)
    return ""


def sql_built_from_values(tree: ast.AST) -> list[tuple[int, str]]:
    """SQL text built at run time: f-strings, `%` and `.format` on SQL-looking strings, and
    `+` joining an SQL-looking string with something that is not a literal."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr) and any(
            isinstance(v, ast.FormattedValue) for v in node.values
        ):
            if SQL_WORDS.search(_constant_text(node)):
                found.append((node.lineno, "f-string"))
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod):
            if SQL_WORDS.search(_constant_text(node.left)):
                found.append((node.lineno, "% formatting"))
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            sides = (node.left, node.right)
            if any(SQL_WORDS.search(_constant_text(s)) for s in sides) and not all(
                isinstance(s, ast.Constant | ast.BinOp | ast.JoinedStr) for s in sides
            ):
                found.append((node.lineno, "concatenation"))
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "format"
            and SQL_WORDS.search(_constant_text(node.func.value))
        ):
            found.append((node.lineno, ".format"))
    return found


def test_sql_is_built_from_constants_only() -> None:
    files = _source_files()
    assert len(files) > 20
    offenders: list[str] = []
    allowed_seen: set[tuple[str, str]] = set()
    for path in files:
        rel = str(path.relative_to(ROOT))
        source = path.read_text()
        lines = source.splitlines()
        hits = sql_built_from_values(ast.parse(source))
        hits += [
            (n, "text(f / execute(f")
            for n, line in enumerate(lines, 1)
            if TEXT_PATTERNS.search(line)
        ]
        for lineno, how in sorted(set(hits)):
            entry = (rel, lines[lineno - 1].strip())
            if entry in ALLOWED:
                allowed_seen.add(entry)
            else:
                offenders.append(f"{rel}:{lineno}: {how}: {entry[1]}")
    assert not offenders, "SQL built from values:\n" + "\n".join(offenders)
    assert allowed_seen == ALLOWED, f"stale allow-list entries: {ALLOWED - allowed_seen}"


def test_the_sql_scan_catches_each_form() -> None:
    sample = "\n".join(
        [
            'a = text(f"SELECT * FROM t WHERE id = {x}")',
            'b = "DELETE FROM t WHERE id = %s" % x',
            'c = "SELECT * FROM t WHERE id = {}".format(x)',
            'd = "UPDATE t SET a = 1 WHERE id = " + x',
            'e = text("SELECT * FROM t WHERE id = :id")',
            'f = f"{x} items"',
            'g = "SELECT a" " FROM t WHERE b = :b"',
        ]
    )
    assert sorted(n for n, _ in sql_built_from_values(ast.parse(sample))) == [1, 2, 3, 4]


# -- Celery accepts JSON only -----------------------------------------------------------------


def test_celery_is_configured_for_json_only(monkeypatch: pytest.MonkeyPatch) -> None:
    clean_env(monkeypatch)
    conf = make_celery(load_settings()).conf
    assert conf.accept_content == ["json"]
    assert conf.task_serializer == "json"
    assert conf.result_serializer == "json"
    assert conf.event_serializer == "json"
    assert list(conf.result_accept_content or conf.accept_content) == ["json"]


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


# -- Flower behind authentication -------------------------------------------------------------

PLACEHOLDERS = {"change-me", "changeme", "change_me", "placeholder", "set-me", "please-change"}
DEFAULT_VALUE = re.compile(r"^\$\{(?P<var>\w+)(?::?-(?P<default>[^}]*))?\}$")


def test_flower_credential_is_only_a_placeholder() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    flower = compose["services"]["flower"]
    auth = flower["environment"]["FLOWER_BASIC_AUTH"]
    match = DEFAULT_VALUE.match(auth)
    assert match, f"FLOWER_BASIC_AUTH must come from the environment, got {auth!r}"
    assert match["var"] == "FLOWER_BASIC_AUTH"
    default = match["default"]
    if default:  # a developer default may exist, but only as an obvious placeholder
        for credential in default.split(","):
            user, _, password = credential.partition(":")
            assert user and password, credential
            assert password.lower() in PLACEHOLDERS, f"real-looking default password {password!r}"
    command = " ".join(flower["command"])
    assert "basic_auth" not in command and "--auth" not in command, command
