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
from orchestrator.adapters.kafka import topics as kafka_adapter
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
# Functions whose result is a quoted identifier, safe in statements that take no bound
# parameter (CREATE DATABASE): the one escape from "constants only".
QUOTING_HELPERS = {"quote_identifier"}
# Calls whose first argument is statement text, SQL words or not.
STATEMENT_CALLS = {"text", "execute", "exec_driver_sql"}
SCANNED_PACKAGES = ("orchestrator", "tasks", "beat")
UNKNOWN = "\x00"  # stands in for a value the scan could not resolve


def _source_files() -> list[Path]:
    files: list[Path] = []
    for top in SCANNED_PACKAGES:
        files.extend(p for p in (ROOT / top).rglob("*.py") if "migrations/versions" not in str(p))
    return sorted(files)


def _module_file(module: str) -> Path | None:
    base = ROOT.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


class Constants:
    """A module's names bound once, at module level, to a literal string or number (resolved
    through f-strings, `+` and other such names), and those imported from project modules."""

    def __init__(self, tree: ast.Module, seen: frozenset[str] = frozenset()) -> None:
        self.values: dict[str, str] = {}
        once = {name for name, n in _binding_counts(tree).items() if n == 1}
        for node in tree.body:
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported = _imported_constants(node.module, seen)
                for alias in node.names:
                    name = alias.asname or alias.name
                    if alias.name in imported and name in once:
                        self.values[name] = imported[alias.name]
            elif isinstance(node, ast.Assign) and len(node.targets) == 1:
                self._bind(node.targets[0], node.value, once)
            elif isinstance(node, ast.AnnAssign) and node.value is not None:
                self._bind(node.target, node.value, once)

    def _bind(self, target: ast.AST, value: ast.AST, once: set[str]) -> None:
        resolved = self.literal(value)
        if isinstance(target, ast.Name) and target.id in once and resolved is not None:
            self.values[target.id] = resolved

    def literal(self, node: ast.AST) -> str | None:
        """The text of `node` when it is built from literals and constants only, else None."""
        if isinstance(node, ast.Constant) and isinstance(node.value, str | int | float):
            return str(node.value)
        if isinstance(node, ast.Name):
            return self.values.get(node.id)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            left, right = self.literal(node.left), self.literal(node.right)
            return None if left is None or right is None else left + right
        if isinstance(node, ast.JoinedStr):
            parts = [self.literal(v) for v in node.values]
            return None if None in parts else "".join(p or "" for p in parts)
        if isinstance(node, ast.FormattedValue) and node.format_spec is None:
            return self.literal(node.value)
        return None

    def text(self, node: ast.AST) -> str:
        """The text as far as it resolves, `UNKNOWN` for the rest (to look for SQL in it)."""
        if isinstance(node, ast.JoinedStr):
            return "".join(self.text(v) for v in node.values)
        if isinstance(node, ast.FormattedValue):
            return self.text(node.value)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            return self.text(node.left) + self.text(node.right)
        resolved = self.literal(node)
        return UNKNOWN if resolved is None else resolved

    def safe_interpolation(self, node: ast.JoinedStr) -> bool:
        """Every value in the f-string is a constant or a quoted identifier."""
        return all(
            self.literal(v) is not None or _is_quoting_call(v.value)
            for v in node.values
            if isinstance(v, ast.FormattedValue)
        )


def _binding_counts(tree: ast.Module) -> dict[str, int]:
    """How often each name is bound anywhere in the module (a local of the same name counts:
    the scan errs on the side of calling a name variable)."""
    counts: dict[str, int] = {}
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names = [node.id]
        elif isinstance(node, ast.alias):
            names = [(node.asname or node.name).split(".")[0]]
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names = [node.name]
        elif isinstance(node, ast.arg):
            names = [node.arg]
        elif isinstance(node, ast.Global | ast.Nonlocal):
            names = list(node.names)
        for name in names:
            counts[name] = counts.get(name, 0) + 1
    return counts


_IMPORTED: dict[str, dict[str, str]] = {}


def _imported_constants(module: str, seen: frozenset[str]) -> dict[str, str]:
    """The constants of a project module (none for third-party ones: they are not scanned)."""
    if module.split(".")[0] not in SCANNED_PACKAGES or module in seen:
        return {}
    if module not in _IMPORTED:
        path = _module_file(module)
        tree = ast.parse(path.read_text()) if path else ast.Module(body=[], type_ignores=[])
        _IMPORTED[module] = Constants(tree, seen | {module}).values
    return _IMPORTED[module]


def _call_name(node: ast.Call) -> str | None:
    func = node.func
    return func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)


def _is_quoting_call(node: ast.AST) -> bool:
    return isinstance(node, ast.Call) and _call_name(node) in QUOTING_HELPERS


def _unsafe_call(node: ast.Call, consts: Constants) -> str | None:
    """`.format` on SQL, or statement text given as an f-string with a value in it."""
    name = _call_name(node)
    if isinstance(node.func, ast.Attribute) and name == "format":
        return ".format" if SQL_WORDS.search(consts.text(node.func.value)) else None
    if name in STATEMENT_CALLS and node.args and isinstance(node.args[0], ast.JoinedStr):
        return None if consts.safe_interpolation(node.args[0]) else "statement f-string"
    return None


def sql_built_from_values(tree: ast.Module) -> list[tuple[int, str]]:
    """SQL text built at run time from anything but constants: f-strings interpolating a value
    that is neither a literal module constant nor a quoted identifier, any `%` or `.format` on
    SQL-looking text, `+` joining SQL with a value, and statement text given to `text()`,
    `execute()` or `exec_driver_sql()` as such an f-string."""
    consts = Constants(tree)
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        how = None
        if isinstance(node, ast.JoinedStr):
            if not consts.safe_interpolation(node) and SQL_WORDS.search(consts.text(node)):
                how = "f-string"
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod):
            how = "% formatting" if SQL_WORDS.search(consts.text(node.left)) else None
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            sql = SQL_WORDS.search(consts.text(node))
            how = "concatenation" if sql and consts.literal(node) is None else None
        elif isinstance(node, ast.Call):
            how = _unsafe_call(node, consts)
        if how and isinstance(node, ast.expr):
            found.append((node.lineno, how))
    return found


def test_sql_is_built_from_constants_only() -> None:
    files = _source_files()
    assert len(files) > 20
    offenders = []
    for path in files:
        source = path.read_text()
        lines = source.splitlines()
        for lineno, how in sorted(set(sql_built_from_values(ast.parse(source)))):
            offenders.append(f"{path.relative_to(ROOT)}:{lineno}: {how}: {lines[lineno - 1]}")
    assert not offenders, "SQL built from values:\n" + "\n".join(offenders)


def test_the_sql_scan_catches_each_form() -> None:
    sample = "\n".join(
        [
            'a = text(f"SELECT * FROM t WHERE id = {x}")',
            'b = "DELETE FROM t WHERE id = %s" % x',
            'c = "SELECT * FROM t WHERE id = {}".format(x)',
            'd = "UPDATE t SET a = 1 WHERE id = " + x',
            'e = text(f"{x}")',
            'f = f"SELECT {columns} FROM t"',  # a value, not a constant
            'g = f"SELECT {COMPUTED} FROM t"',  # a constant, but not a literal
            'h = f"SELECT {TWICE} FROM t"',  # bound twice
            'i = f"SELECT {self.columns} FROM t"',
            'j = f"SELECT {COLUMNS:>{x}} FROM t"',  # a value in the format spec
            "k = WHERE + x",
            # From here on, each line is safe.
            'COLUMNS = "a, b"',
            'WHERE = f" FROM t WHERE {COLUMNS} = :v"',
            "COMPUTED = make_columns()",
            'TWICE = "a"',
            'TWICE = "b"',
            'ok1 = text("SELECT * FROM t WHERE id = :id")',
            'ok2 = f"{x} items"',
            'ok3 = "SELECT a" " FROM t WHERE b = :b"',
            'ok4 = text(f"SELECT {COLUMNS} FROM t WHERE id = :id")',
            'ok5 = f"SELECT {COLUMNS}" + WHERE',
            'ok6 = text(f"CREATE DATABASE {quote_identifier(name)}")',
            'ok7 = execute(f"SELECT 1 {WHERE}")',
        ]
    )
    found = sql_built_from_values(ast.parse(sample))
    assert sorted({n for n, _ in found}) == list(range(1, 12)), found


def test_the_sql_scan_resolves_constants_imported_from_project_modules() -> None:
    sample = "\n".join(
        [
            "from orchestrator.adapters.postgres.sql import INBOX_COLUMNS, insert_inbox",
            'a = f"SELECT {INBOX_COLUMNS} FROM inbox"',
            'b = f"SELECT {insert_inbox} FROM inbox"',  # imported, but a function
        ]
    )
    assert [n for n, _ in sql_built_from_values(ast.parse(sample))] == [3]


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
