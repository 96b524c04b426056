"""Security settings: Kafka SASL/SSL and Redis AUTH/TLS reach every client, a bad setting names
its variable without the secret, SQL only through bound parameters, Celery accepts JSON only,
Flower's credential in the compose file is a placeholder."""

from __future__ import annotations

import ast
import re
import ssl
import threading
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
import yaml
from kombu.transport import redis as kombu_redis

from orchestrator.adapters.celery.app import make_celery
from orchestrator.adapters.kafka import clients as kafka_adapter
from orchestrator.adapters.kafka.clients import consumer_config, producer_config
from orchestrator.adapters.redis.state import make_redis
from orchestrator.core.errors import ConfigurationError
from orchestrator.devtools.simulator import SimulatorConfig, run_simulator
from orchestrator.settings import Settings, load_settings
from tests.support.env import clean_env

ROOT = Path(__file__).resolve().parents[2]


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
    # kombu's Redis transport (orchestrator.adapters.celery.transport), TLS from the URL.
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


# -- SQL only through bound parameters --------------------------------------------------------

SQL_WORDS = re.compile(
    r"\b(SELECT|INSERT INTO|UPDATE \w+ SET|DELETE FROM|CREATE (DATABASE|TABLE|INDEX|SCHEMA)"
    r"|DROP (DATABASE|TABLE)|ALTER TABLE|TRUNCATE|WHERE|VALUES)\b"
)
# Constant-only f-strings: every interpolated name is a module constant or an identifier the
# code chose itself, never input. Keyed by file and the stripped text of the line it starts on.
ALLOWED = {
    (
        "orchestrator/adapters/postgres/store.py",
        '"find_inbox": f"SELECT {INBOX_COLUMNS} FROM inbox WHERE topic = :topic AND message_id'
        ' = :mid",  # noqa: S608',
    ),
    (
        "orchestrator/adapters/postgres/store.py",
        '"inbox_for_update": f"SELECT {INBOX_COLUMNS} FROM inbox WHERE id = :id FOR UPDATE",'
        "  # noqa: S608",
    ),
    (
        "orchestrator/adapters/postgres/store.py",
        'f"UPDATE inbox SET attempts = attempts + 1 WHERE id = ("  # noqa: S608',
    ),
    (
        "orchestrator/adapters/postgres/store.py",
        '"SELECT pg_advisory_xact_lock(hashtextextended(:sid, 7274)) AS locked,"  # noqa: S608',
    ),
    # The embedded server's own database name (a constant of the embedded defaults), quoted:
    # CREATE DATABASE takes no bound parameter.
    (
        "orchestrator/devtools/embedded/__init__.py",
        "conn.execute(text(f'CREATE DATABASE \"{self.database}\"'))",
    ),
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
