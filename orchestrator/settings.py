"""Settings: one typed object read from the environment, validated at start-up.

`DATABASE_URL`, `REDIS_URL` and `KAFKA_BOOTSTRAP_SERVERS` keep their conventional names; every
other variable is `ORCHESTRATOR_<FIELD>` or `KAFKA_<PROPERTY>`. An optional YAML file
(`ORCHESTRATOR_CONFIG_FILE`) in the source design's shape supplies topics and the command mapping.
A bad value stops the process with one line naming the variable (`load_settings`).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict, SettingsError

from orchestrator.core.dlq import (
    DEFAULT_MESSAGE_MAX_BYTES,
    MIN_DLQ_MAX_BYTES,
    PUBLISH_HEADROOM_BYTES,
)
from orchestrator.core.errors import ConfigurationError


class Settings(BaseSettings):
    """Everything a process of the orchestrator can be told, with developer-machine defaults."""

    model_config = SettingsConfigDict(env_prefix="ORCHESTRATOR_", extra="ignore", frozen=True)

    database_url: str = Field(
        "postgresql+psycopg2://postgres@127.0.0.1:5432/orchestrator",
        validation_alias=AliasChoices("DATABASE_URL"),
    )
    redis_url: str = Field("redis://127.0.0.1:6379/0", validation_alias=AliasChoices("REDIS_URL"))
    kafka_bootstrap_servers: str = Field(
        "127.0.0.1:9092", validation_alias=AliasChoices("KAFKA_BOOTSTRAP_SERVERS")
    )
    # Kafka client security and tuning (librdkafka property names without the prefix).
    kafka_security_protocol: str = Field(
        "PLAINTEXT", validation_alias=AliasChoices("KAFKA_SECURITY_PROTOCOL")
    )
    kafka_sasl_mechanism: str | None = Field(
        None, validation_alias=AliasChoices("KAFKA_SASL_MECHANISM")
    )
    kafka_sasl_username: str | None = Field(
        None, validation_alias=AliasChoices("KAFKA_SASL_USERNAME")
    )
    kafka_sasl_password: SecretStr | None = Field(
        None, validation_alias=AliasChoices("KAFKA_SASL_PASSWORD")
    )
    kafka_ssl_ca_location: str | None = Field(
        None, validation_alias=AliasChoices("KAFKA_SSL_CA_LOCATION")
    )
    kafka_session_timeout_ms: int = Field(
        6000, ge=1000, validation_alias=AliasChoices("KAFKA_SESSION_TIMEOUT_MS")
    )
    kafka_heartbeat_interval_ms: int = Field(
        1000, ge=100, validation_alias=AliasChoices("KAFKA_HEARTBEAT_INTERVAL_MS")
    )
    kafka_fetch_wait_max_ms: int = Field(
        10, ge=0, validation_alias=AliasChoices("KAFKA_FETCH_WAIT_MAX_MS")
    )
    kafka_extra: dict[str, str] = Field(
        default_factory=dict, validation_alias=AliasChoices("KAFKA_EXTRA_PROPERTIES")
    )
    kafka_message_max_bytes: int = Field(
        DEFAULT_MESSAGE_MAX_BYTES,
        ge=65_536,
        le=1_000_000_000,
        validation_alias=AliasChoices("KAFKA_MESSAGE_MAX_BYTES"),
        description="the relay producer's `message.max.bytes`: its largest message (keep it"
        " at or below the broker's and the topics' limit)",
    )
    kafka_connect_timeout_s: float = Field(
        15.0,
        gt=0,
        description="how long a command or process waits for a first answer from"
        " `KAFKA_BOOTSTRAP_SERVERS` before it stops with one line naming them",
    )

    config_file: Path | None = None
    domain_topic: str = "genesis.domain.events"
    capability_topic: str = "genesis.capability.events"
    dlq_topic: str = "genesis.orchestrator.dlq"
    consume_topics: list[str] = Field(default_factory=list)
    produce_topics: list[str] = Field(default_factory=list)
    consumer_group: str = "genesis-orchestrator"
    topic_partitions: int = Field(1, ge=1)
    task_topic_prefix: str = ""
    command_mapping: dict[str, str] = Field(default_factory=dict)

    log_level: str = "INFO"
    # 960 KiB, not 1 MiB: an input's fact and capability message carry its data plus an
    # envelope, and must fit the producer's 1,000,000-byte default (`check_limits`). The cap
    # is lowered rather than the producer's limit raised, since brokers default to ~1 MB too.
    max_message_bytes: int = Field(
        983_040,
        gt=0,
        description="larger input values are dead letters (`too_large`); must leave"
        f" {PUBLISH_HEADROOM_BYTES} bytes under `KAFKA_MESSAGE_MAX_BYTES`",
    )
    dlq_max_bytes: int | None = Field(
        None,
        ge=MIN_DLQ_MAX_BYTES,
        description="largest DLQ record (key, value and headers); a larger dead letter's"
        " value is truncated on the topic, whole in the database (default:"
        " `KAFKA_MESSAGE_MAX_BYTES`)",
    )
    max_attempts: int = Field(5, ge=1)
    redis_prefix: str = "orch"
    lock_ttl_s: float = Field(30.0, gt=0)
    done_marker_ttl_s: int = Field(3600, gt=0)

    ingest_batch_size: int = Field(500, ge=1)
    ingest_poll_timeout_s: float = Field(0.05, gt=0)
    ingest_max_queue_length: int = Field(20_000, ge=1)
    # Reads again from a skipped offset this many times before accepting the hole (0: never).
    ingest_gap_rechecks: int = Field(3, ge=0)

    # One drain pass holds up to this many sessions and processes up to this many of their rows
    # in one transaction (`orchestrator.service.batch_drain`).
    drain_batch_sessions: int = Field(100, ge=1)
    drain_batch_rows: int = Field(500, ge=1)

    relay_interval_s: float = Field(1.0, gt=0)
    relay_batch_size: int = Field(1000, ge=1)
    relay_lease_s: float = Field(30.0, gt=0)
    relay_message_timeout_ms: int = Field(15_000, ge=1000)
    relay_linger_ms: int = Field(2, ge=0)
    # Off by default: see `orchestrator.adapters.kafka.clients.producer_config`.
    relay_idempotence: bool = False
    relay_backoff_base_s: float = Field(0.5, gt=0)
    relay_backoff_max_s: float = Field(30.0, gt=0)

    redrive_after_s: float = Field(60.0, gt=0)
    redrive_interval_s: float = Field(15.0, gt=0)
    task_timeout_s: float = Field(900.0, gt=0)
    task_timeouts: dict[str, float] = Field(default_factory=dict)
    timeout_sweep_interval_s: float = Field(5.0, gt=0)
    retention_s: float = Field(7 * 24 * 3600.0, gt=0)
    retention_interval_s: float = Field(3600.0, gt=0)

    celery_visibility_timeout_s: int = Field(600, ge=30)
    celery_task_time_limit_s: int = Field(120, ge=5)
    celery_retry_max_s: float = Field(30.0, gt=0)
    celery_prefetch_multiplier: int = Field(4, ge=1)

    metrics_port: int = Field(0, ge=0, le=65535)
    # Modules imported at start-up by every process (comma-separated): where custom command
    # strategies and result handlers register themselves (`orchestrator.startup.load_plugins`).
    plugins: Annotated[list[str], NoDecode] = Field(default_factory=list)

    @field_validator("kafka_bootstrap_servers")
    @classmethod
    def _some_broker(cls, value: str) -> str:
        if not [part for part in value.split(",") if part.strip()]:
            raise ValueError("must name at least one broker (host:port), got an empty value")
        return value.strip()

    @field_validator("plugins", mode="before")
    @classmethod
    def _module_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("database_url")
    @classmethod
    def _postgres_only(cls, value: str) -> str:
        if not value.startswith(("postgresql://", "postgresql+psycopg2://")):
            raise ValueError("must be a postgresql:// or postgresql+psycopg2:// URL")
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_only(cls, value: str) -> str:
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must be a redis://, rediss:// or unix:// URL")
        return value

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        level = value.upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
        return level

    def dlq_limit(self) -> int:
        """The largest DLQ record: `ORCHESTRATOR_DLQ_MAX_BYTES`, else the producer's limit."""
        return self.dlq_max_bytes or self.kafka_message_max_bytes

    def topics_to_consume(self) -> list[str]:
        return self.consume_topics or [self.domain_topic, self.capability_topic]

    def timeout_for(self, task_type: str) -> float:
        """The timeout of an AsyncTask type: the longest configured prefix wins."""
        best = ""
        for prefix in self.task_timeouts:
            if task_type.startswith(prefix) and len(prefix) > len(best):
                best = prefix
        return self.task_timeouts[best] if best else self.task_timeout_s

    def kafka_common(self) -> dict[str, Any]:
        """librdkafka properties shared by every client (never logged: holds secrets)."""
        conf: dict[str, Any] = {
            "bootstrap.servers": self.kafka_bootstrap_servers,
            "security.protocol": self.kafka_security_protocol,
        }
        if self.kafka_sasl_mechanism:
            conf["sasl.mechanism"] = self.kafka_sasl_mechanism
        if self.kafka_sasl_username:
            conf["sasl.username"] = self.kafka_sasl_username
        if self.kafka_sasl_password is not None:
            conf["sasl.password"] = self.kafka_sasl_password.get_secret_value()
        if self.kafka_ssl_ca_location:
            conf["ssl.ca.location"] = self.kafka_ssl_ca_location
        conf.update(self.kafka_extra)
        return conf


def _env_name(field: str) -> str:
    if field not in Settings.model_fields:
        return field  # already the alias, e.g. DATABASE_URL
    info = Settings.model_fields.get(field)
    alias = info.validation_alias if info else None
    if isinstance(alias, AliasChoices):
        first = alias.choices[0]
        return first if isinstance(first, str) else field
    return f"ORCHESTRATOR_{field.upper()}"


# `ORCHESTRATOR_*` variables read outside `Settings` (fault injection, tests): no typo warning.
NON_SETTING_VARIABLES = frozenset({"ORCHESTRATOR_CRASH_AT"})


def setting_variables() -> dict[str, str]:
    """The environment variable of every setting, by field name, in declaration order."""
    return {field: _env_name(field) for field in Settings.model_fields}


def unknown_variables(environ: Mapping[str, str]) -> list[tuple[str, str | None]]:
    """`ORCHESTRATOR_*` variables that are no setting (a typo such as
    `ORCHESTRATOR_MAX_ATTEMPT`), each with the closest setting's variable (or None)."""
    known = {name.upper() for name in setting_variables().values()} | NON_SETTING_VARIABLES
    prefix = "ORCHESTRATOR_"
    suffixes = sorted(k.removeprefix(prefix) for k in known if k.startswith(prefix))
    found: list[tuple[str, str | None]] = []
    for name in sorted(environ):
        upper = name.upper()
        if upper.startswith(prefix) and upper not in known:
            close = difflib.get_close_matches(upper.removeprefix(prefix), suffixes, 1, 0.7)
            found.append((name, prefix + close[0] if close else None))
    return found


def _apply_yaml(settings: Settings) -> Settings:
    """Merge the source design's YAML shape (`orchestrator.consume_topics` ...) if configured."""
    if settings.config_file is None:
        return settings
    try:
        doc = yaml.safe_load(settings.config_file.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigurationError(
            "invalid setting ORCHESTRATOR_CONFIG_FILE: cannot read "
            f"{settings.config_file}: {' '.join(str(exc).split())}"
        ) from exc
    section = doc.get("orchestrator", {}) if isinstance(doc, dict) else None
    if not isinstance(section, dict):
        raise ConfigurationError(
            "invalid setting ORCHESTRATOR_CONFIG_FILE: expected a mapping under 'orchestrator'"
        )
    update: dict[str, Any] = {}
    for key in ("consume_topics", "produce_topics", "command_mapping"):
        if key in section and not getattr(settings, key):
            update[key] = section[key]
    if not update:
        return settings
    try:
        return Settings.model_validate({**settings.model_dump(), **update})
    except ValidationError as exc:
        raise ConfigurationError(
            f"invalid setting ORCHESTRATOR_CONFIG_FILE: {_first_error(exc)}"
        ) from exc


def check_limits(settings: Settings) -> Settings:
    """The size limits hold together, else ConfigurationError naming the variables: what the
    orchestrator publishes from an input under the cap (its data plus an envelope) and every
    DLQ record fit the relay producer's `message.max.bytes`."""
    producer = settings.kafka_message_max_bytes
    room = producer - PUBLISH_HEADROOM_BYTES
    if settings.max_message_bytes > room:
        raise ConfigurationError(
            f"invalid settings: ORCHESTRATOR_MAX_MESSAGE_BYTES={settings.max_message_bytes}"
            f" leaves no room under KAFKA_MESSAGE_MAX_BYTES={producer} for the envelope of"
            f" what an input publishes ({PUBLISH_HEADROOM_BYTES} bytes): lower"
            f" ORCHESTRATOR_MAX_MESSAGE_BYTES to at most {room} or raise"
            " KAFKA_MESSAGE_MAX_BYTES (and the broker's limit)"
        )
    if settings.dlq_max_bytes is not None and settings.dlq_max_bytes > producer:
        raise ConfigurationError(
            f"invalid settings: ORCHESTRATOR_DLQ_MAX_BYTES={settings.dlq_max_bytes} is over"
            f" KAFKA_MESSAGE_MAX_BYTES={producer}: the relay could not send such a DLQ record"
        )
    if "message.max.bytes" in settings.kafka_extra:
        raise ConfigurationError(
            "invalid setting KAFKA_EXTRA_PROPERTIES: set message.max.bytes with"
            " KAFKA_MESSAGE_MAX_BYTES (the size checks use it)"
        )
    return settings


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"])
    return f"{where}: {err['msg']}"


def load_settings(**overrides: Any) -> Settings:
    """Read and validate the settings; raise ConfigurationError naming the bad variable."""
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = str(err["loc"][0]) if err["loc"] else "?"
        message = str(err["msg"]).removeprefix("Value error, ")
        raise ConfigurationError(f"invalid setting {_env_name(field)}: {message}") from exc
    except SettingsError as exc:  # a JSON-valued variable that is not JSON
        match = re.search(r'field "([^"]+)"', str(exc))
        name = _env_name(match.group(1)) if match else "?"
        raise ConfigurationError(f"invalid setting {name}: not valid JSON") from exc
    return check_limits(_apply_yaml(settings))
