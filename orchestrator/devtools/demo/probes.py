"""Do the configured services answer? One probe per service, each saying why not."""

from __future__ import annotations

import socket
from collections.abc import Mapping
from typing import Any

PROBE_TIMEOUT_S = 3.0


def first_line(exc: BaseException) -> str:
    """The first line of an error (the driver's own when wrapped), secrets redacted."""
    from orchestrator.observability.logs import redact_text

    text = str(getattr(exc, "orig", None) or exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    return redact_text(line)


def probe_postgres(url: str, timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """None when PostgreSQL at `url` accepts a connection, else why not."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.pool import NullPool

    try:
        engine = create_engine(
            url, poolclass=NullPool, connect_args={"connect_timeout": max(1, int(timeout))}
        )
        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        finally:
            engine.dispose()
    except Exception as exc:
        return first_line(exc)
    return None


def probe_redis(url: str, timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """None when Redis at `url` answers PING, else why not."""
    import redis

    try:
        client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        try:
            client.ping()
        finally:
            client.close()
    except Exception as exc:
        return first_line(exc)
    return None


def bootstrap_hosts(bootstrap: str) -> list[tuple[str, int]]:
    """`"PLAINTEXT://a:9092,b:9093"` -> [("a", 9092), ("b", 9093)]; unparsable entries left out."""
    hosts: list[tuple[str, int]] = []
    for item in bootstrap.split(","):
        entry = item.strip().rsplit("://", 1)[-1]
        host, _, port = entry.rpartition(":")
        if host and port.isdigit():
            hosts.append((host.strip("[]"), int(port)))
    return hosts


def probe_kafka(conf: Mapping[str, Any], timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """None when the Kafka cluster answers a metadata request, else why not.

    A TCP connection is tried first: librdkafka retries a refused connection until the
    metadata timeout, and nothing listening is the common case on a fresh machine.
    """
    bootstrap = str(conf.get("bootstrap.servers", ""))
    hosts = bootstrap_hosts(bootstrap)
    if not hosts:
        return f"cannot parse bootstrap servers {bootstrap!r}"
    errors: list[str] = []
    for host, port in hosts:
        try:
            with socket.create_connection((host, port), timeout=min(timeout, 1.0)):
                break
        except OSError as exc:
            errors.append(f"{host}:{port}: {exc.strerror or exc}")
    else:
        return "; ".join(errors)
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    try:
        admin = AdminClient({**conf, "log_level": 0})
        admin.list_topics(timeout=timeout)
    except (KafkaException, ValueError, TypeError) as exc:
        return first_line(exc)
    return None
