"""Settings: defaults, one-line errors naming the variable, the YAML file, Kafka secrets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from orchestrator.core.errors import ConfigurationError
from orchestrator.settings import Settings, load_settings

_OWN_PREFIXES = ("ORCHESTRATOR_", "KAFKA_")
_OWN_NAMES = ("DATABASE_URL", "REDIS_URL")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test starts from an environment with none of the orchestrator's variables."""
    for name in list(os.environ):
        if name.upper().startswith(_OWN_PREFIXES) or name.upper() in _OWN_NAMES:
            monkeypatch.delenv(name)


def config_error(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> str:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError) as info:
        load_settings()
    return str(info.value)


def test_defaults() -> None:
    settings = load_settings()
    assert settings.database_url == "postgresql+psycopg2://postgres@127.0.0.1:5432/orchestrator"
    assert settings.redis_url == "redis://127.0.0.1:6379/0"
    assert settings.kafka_bootstrap_servers == "127.0.0.1:9092"
    assert settings.domain_topic == "genesis.domain.events"
    assert settings.capability_topic == "genesis.capability.events"
    assert settings.dlq_topic == "genesis.orchestrator.dlq"
    assert settings.topics_to_consume() == ["genesis.domain.events", "genesis.capability.events"]
    assert settings.produce_topics == []
    assert settings.command_mapping == {}
    assert settings.config_file is None
    assert settings.log_level == "INFO"
    assert settings.max_attempts == 5
    assert settings.max_message_bytes == 983_040  # under the producer's limit: test_dlq_records
    assert settings.kafka_fetch_wait_max_ms == 10
    assert settings.kafka_session_timeout_ms == 6000
    assert settings.kafka_heartbeat_interval_ms == 1000
    assert settings.kafka_sasl_password is None
    assert settings.task_timeout_s == 900.0
    assert settings.kafka_common() == {
        "bootstrap.servers": "127.0.0.1:9092",
        "security.protocol": "PLAINTEXT",
    }


def test_environment_values_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://app@db.internal:5432/genesis")
    monkeypatch.setenv("REDIS_URL", "rediss://cache.internal:6380/2")
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "k1:9092,k2:9092")
    monkeypatch.setenv("ORCHESTRATOR_MAX_ATTEMPTS", "8")
    monkeypatch.setenv("ORCHESTRATOR_LOG_LEVEL", "debug")
    settings = load_settings()
    assert settings.database_url == "postgresql://app@db.internal:5432/genesis"
    assert settings.redis_url == "rediss://cache.internal:6380/2"
    assert settings.kafka_bootstrap_servers == "k1:9092,k2:9092"
    assert settings.max_attempts == 8
    assert settings.log_level == "DEBUG"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DATABASE_URL", "mysql://root@127.0.0.1/orchestrator"),
        ("DATABASE_URL", "sqlite:///tmp/x.db"),
        ("REDIS_URL", "http://127.0.0.1:6379/0"),
        ("REDIS_URL", "127.0.0.1:6379"),
        ("ORCHESTRATOR_MAX_ATTEMPTS", "three"),
        ("ORCHESTRATOR_MAX_ATTEMPTS", "0"),
        ("ORCHESTRATOR_LOG_LEVEL", "VERBOSE"),
        ("ORCHESTRATOR_MAX_MESSAGE_BYTES", "-1"),
        ("KAFKA_SESSION_TIMEOUT_MS", "soon"),
    ],
)
def test_invalid_setting_is_one_line_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    message = config_error(monkeypatch, name, value)
    assert message.startswith(f"invalid setting {name}: ")
    assert "\n" not in message
    assert len(message) > len(f"invalid setting {name}: ")


def test_invalid_database_url_does_not_echo_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    message = config_error(monkeypatch, "DATABASE_URL", "mysql://root:hunter2@db/orchestrator")
    assert message.startswith("invalid setting DATABASE_URL: ")
    assert "hunter2" not in message


SOURCE_YAML = """\
orchestrator:
  consume_topics: [genesis.domain.events, genesis.capability.events, genesis.extra.events]
  produce_topics: [genesis.character.events, genesis.plot.events, genesis.quality.events]
  command_mapping:
    Legacy.Request: Legacy.Requested
"""


def test_yaml_file_in_the_source_shape(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "orchestrator.yaml"
    path.write_text(SOURCE_YAML, encoding="utf-8")
    monkeypatch.setenv("ORCHESTRATOR_CONFIG_FILE", str(path))

    settings = load_settings()

    assert settings.config_file == path
    assert settings.consume_topics == [
        "genesis.domain.events",
        "genesis.capability.events",
        "genesis.extra.events",
    ]
    assert settings.topics_to_consume() == settings.consume_topics
    assert settings.produce_topics == [
        "genesis.character.events",
        "genesis.plot.events",
        "genesis.quality.events",
    ]
    assert settings.command_mapping == {"Legacy.Request": "Legacy.Requested"}


def test_yaml_file_keeps_environment_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = tmp_path / "orchestrator.yaml"
    path.write_text(SOURCE_YAML, encoding="utf-8")
    monkeypatch.setenv("ORCHESTRATOR_CONFIG_FILE", str(path))
    monkeypatch.setenv("DATABASE_URL", "postgresql://app@db.internal:5432/genesis")
    monkeypatch.setenv("KAFKA_SASL_PASSWORD", "yaml-merge-secret")
    monkeypatch.setenv("ORCHESTRATOR_MAX_ATTEMPTS", "9")

    settings = load_settings()

    assert settings.produce_topics[0] == "genesis.character.events"
    assert settings.database_url == "postgresql://app@db.internal:5432/genesis"
    assert settings.max_attempts == 9
    assert settings.kafka_sasl_password is not None
    assert settings.kafka_sasl_password.get_secret_value() == "yaml-merge-secret"


def test_yaml_file_without_orchestrator_section_changes_nothing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = tmp_path / "other.yaml"
    path.write_text("something_else: {a: 1}\n", encoding="utf-8")
    monkeypatch.setenv("ORCHESTRATOR_CONFIG_FILE", str(path))
    settings = load_settings()
    assert settings.consume_topics == []
    assert settings.topics_to_consume() == ["genesis.domain.events", "genesis.capability.events"]


@pytest.mark.parametrize(
    "content",
    [
        pytest.param("orchestrator: [genesis.domain.events\n", id="malformed"),
        pytest.param("orchestrator:\n  consume_topics: {a: [\n", id="unclosed"),
        pytest.param("- just\n- a list\n", id="list-document"),
        pytest.param("orchestrator: 42\n", id="scalar-section"),
        pytest.param("orchestrator:\n  consume_topics: 7\n", id="wrong-topic-type"),
        pytest.param("orchestrator:\n  command_mapping: [a, b]\n", id="wrong-mapping-type"),
    ],
)
def test_bad_yaml_names_the_config_file_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, content: str
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(content, encoding="utf-8")
    message = config_error(monkeypatch, "ORCHESTRATOR_CONFIG_FILE", str(path))
    assert message.startswith("invalid setting ORCHESTRATOR_CONFIG_FILE: ")


def test_malformed_yaml_error_is_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("orchestrator: [genesis.domain.events\n", encoding="utf-8")
    message = config_error(monkeypatch, "ORCHESTRATOR_CONFIG_FILE", str(path))
    assert "\n" not in message


def test_unreadable_yaml_names_the_config_file_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    missing = tmp_path / "does-not-exist.yaml"
    message = config_error(monkeypatch, "ORCHESTRATOR_CONFIG_FILE", str(missing))
    assert message.startswith("invalid setting ORCHESTRATOR_CONFIG_FILE: ")
    assert str(missing) in message
    assert "\n" not in message

    not_a_file = tmp_path / "a-directory"
    not_a_file.mkdir()
    message = config_error(monkeypatch, "ORCHESTRATOR_CONFIG_FILE", str(not_a_file))
    assert message.startswith("invalid setting ORCHESTRATOR_CONFIG_FILE: ")


def test_kafka_common_with_sasl(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "broker.internal:9094")
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("KAFKA_SASL_USERNAME", "orchestrator")
    monkeypatch.setenv("KAFKA_SASL_PASSWORD", "s3cr3t-Pa55")
    monkeypatch.setenv("KAFKA_SSL_CA_LOCATION", "/etc/kafka/ca.pem")

    settings = load_settings()

    assert settings.kafka_common() == {
        "bootstrap.servers": "broker.internal:9094",
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "orchestrator",
        "sasl.password": "s3cr3t-Pa55",
        "ssl.ca.location": "/etc/kafka/ca.pem",
    }


def test_kafka_extra_properties(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_EXTRA_PROPERTIES", '{"client.id": "orch-1", "acks": "all"}')
    conf = load_settings().kafka_common()
    assert conf["client.id"] == "orch-1"
    assert conf["acks"] == "all"


def test_password_is_not_in_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_SASL_USERNAME", "orchestrator")
    monkeypatch.setenv("KAFKA_SASL_PASSWORD", "s3cr3t-Pa55")
    settings = load_settings()
    assert "s3cr3t-Pa55" not in repr(settings)
    assert "s3cr3t-Pa55" not in str(settings)
    assert "kafka_sasl_password" in repr(settings)
    assert settings.kafka_sasl_password is not None
    assert settings.kafka_sasl_password.get_secret_value() == "s3cr3t-Pa55"


def test_settings_are_frozen() -> None:
    settings = load_settings()
    with pytest.raises(Exception, match="frozen"):
        settings.max_attempts = 2  # type: ignore[misc]


def test_timeout_for_longest_prefix_wins() -> None:
    settings = Settings(
        task_timeout_s=100.0,
        task_timeouts={
            "Character": 10.0,
            "Character.Design": 20.0,
            "Character.Design.GenerationRequested": 30.0,
            "Review": 40.0,
        },
    )
    assert settings.timeout_for("Character.Design.GenerationRequested") == 30.0
    assert settings.timeout_for("Character.Design.Other") == 20.0
    assert settings.timeout_for("Character.Generated") == 10.0
    assert settings.timeout_for("Review.Quality.EvaluationRequested") == 40.0
    assert settings.timeout_for("Outliner.Theme.GenerationRequested") == 100.0
    assert settings.timeout_for("character.design") == 100.0


def test_timeout_for_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCHESTRATOR_TASK_TIMEOUT_S", "50")
    monkeypatch.setenv("ORCHESTRATOR_TASK_TIMEOUTS", '{"Writer": 5, "Writer.Content": 7}')
    settings = load_settings()
    assert settings.timeout_for("Writer.Content.GenerationRequested") == 7.0
    assert settings.timeout_for("Writer.Other") == 5.0
    assert settings.timeout_for("Plot.Structure.GenerationRequested") == 50.0


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, {"enable.idempotence": False, "max.in.flight.requests.per.connection": 1}),
        ("false", {"enable.idempotence": False, "max.in.flight.requests.per.connection": 1}),
        ("true", {"enable.idempotence": True}),
    ],
)
def test_relay_producer_keeps_order_with_or_without_idempotence(
    monkeypatch: pytest.MonkeyPatch, value: str | None, expected: dict[str, object]
) -> None:
    from orchestrator.adapters.kafka.clients import producer_config

    if value is not None:
        monkeypatch.setenv("ORCHESTRATOR_RELAY_IDEMPOTENCE", value)
    conf = producer_config(load_settings())
    assert expected.items() <= conf.items()
    assert conf["acks"] == "all"
    assert conf["allow.auto.create.topics"] is False
    # Idempotence keeps order itself with up to five requests in flight (librdkafka's default).
    assert ("max.in.flight.requests.per.connection" in conf) is (value != "true")


@pytest.mark.parametrize("value", ["", "   ", " , "])
def test_empty_kafka_bootstrap_servers_are_refused(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    message = config_error(monkeypatch, "KAFKA_BOOTSTRAP_SERVERS", value)
    assert message.startswith("invalid setting KAFKA_BOOTSTRAP_SERVERS: must name at least one")


def test_plugins_are_a_comma_separated_list(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().plugins == []
    monkeypatch.setenv("ORCHESTRATOR_PLUGINS", " acme.strategies, acme.handlers ,")
    assert load_settings().plugins == ["acme.strategies", "acme.handlers"]


def test_unknown_orchestrator_variables_name_the_closest_setting() -> None:
    from orchestrator.settings import unknown_variables

    environ = {
        "ORCHESTRATOR_MAX_ATTEMPT": "3",  # a typo
        "orchestrator_relay_interval": "2",  # a typo, in lower case
        "ORCHESTRATOR_WHATEVER_THIS_IS": "x",  # nothing close
        "ORCHESTRATOR_MAX_ATTEMPTS": "3",  # settings, in any case, are not reported
        "orchestrator_log_level": "INFO",
        "ORCHESTRATOR_CRASH_AT": "before_commit",  # read by the fault injection
        "DATABASE_URL": "postgresql://x@y/z",
        "KAFKA_SOMETHING": "x",
    }
    assert unknown_variables(environ) == [
        ("ORCHESTRATOR_MAX_ATTEMPT", "ORCHESTRATOR_MAX_ATTEMPTS"),
        ("ORCHESTRATOR_WHATEVER_THIS_IS", None),
        ("orchestrator_relay_interval", "ORCHESTRATOR_RELAY_INTERVAL_S"),
    ]
