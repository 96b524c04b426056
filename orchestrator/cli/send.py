"""`orchestrator send COMMAND_TYPE`: produce a command to the domain topic, as the API layer
would, and wait for the broker's acknowledgement."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import orjson
import typer

from orchestrator.cli.app import app
from orchestrator.cli.errors import cli_errors, one_line, usage_error
from orchestrator.cli.options import JsonOption, positive
from orchestrator.cli.output import emit_json
from orchestrator.cli.wiring import command_settings
from orchestrator.core.clock import iso
from orchestrator.settings import Settings
from orchestrator.startup import fail

COMMAND_EVENT_TYPE = "Genesis.Session.Command.Received"

JSON_KINDS: dict[type, str] = {
    list: "an array",
    str: "a string",
    int: "a number",
    float: "a number",
    bool: "a boolean",
    type(None): "null",
}


def command_envelope(
    command_type: str,
    session_id: str,
    payload: dict[str, Any],
    user_id: str | None,
    correlation_id: str,
    event_id: str,
    now: datetime,
) -> dict[str, Any]:
    """A `Genesis.Session.Command.Received` domain event (the wire contract)."""
    body: dict[str, Any] = {"command_type": command_type, "payload": payload}
    if user_id is not None:
        body["user_id"] = user_id
    return {
        "event_id": event_id,
        "event_type": COMMAND_EVENT_TYPE,
        "aggregate_type": "GenesisSession",
        "aggregate_id": session_id,
        "payload": body,
        "metadata": {"correlation_id": correlation_id, "causation_id": None},
        "created_at": iso(now),
    }


def parse_payload(text: str) -> dict[str, Any]:
    try:
        doc = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        usage_error(f"send: --payload is not valid JSON: {one_line(exc)}")
    if not isinstance(doc, dict):
        kind = JSON_KINDS.get(type(doc), type(doc).__name__)
        usage_error(f"send: --payload must be a JSON object, got {kind}")
    return doc


@app.command()
def send(
    command_type: str = typer.Argument(..., help="The command type, e.g. Character.Request."),
    session: str = typer.Option(..., "--session", help="The session (aggregate) id; Kafka key."),
    payload: str = typer.Option(..., "--payload", help="The command's input: a JSON object."),
    user: str | None = typer.Option(None, "--user", help="The user id."),
    correlation_id: str | None = typer.Option(
        None, "--correlation-id", help="Correlation id (default: a new UUID)."
    ),
    timeout: float = typer.Option(5.0, "--timeout", help="Seconds to wait for the broker."),
    as_json: bool = JsonOption,
) -> None:
    """Produce a command to the domain topic, as the API layer would; prints its event_id.

    A Genesis.Session.Command.Received event (the wire contract), key = session id, header
    correlation_id. Fails (exit 1) with one line when no broker answers, when the domain topic
    does not exist (run `orchestrator topics create`) or when the broker has not acknowledged
    it within --timeout; Ctrl-C stops it at once (exit 130).
    """
    if not command_type.strip():
        usage_error("send: COMMAND_TYPE must not be empty")
    if not session.strip():
        usage_error("send: --session must not be empty")
    positive("--timeout", timeout)
    body = parse_payload(payload)
    settings = command_settings(quiet=True)
    event_id = str(uuid.uuid4())
    correlation = correlation_id or str(uuid.uuid4())
    value = orjson.dumps(
        command_envelope(
            command_type, session, body, user, correlation, event_id, datetime.now(UTC)
        )
    )
    try:
        with cli_errors("send"):
            _produce(settings, session, value, correlation, event_id, timeout)
    except KeyboardInterrupt:
        fail("send: interrupted", 130)
    if as_json:
        emit_json(
            {
                "event_id": event_id,
                "correlation_id": correlation,
                "session_id": session,
                "topic": settings.domain_topic,
            }
        )
    else:
        typer.echo(event_id)


def _produce(
    settings: Settings,
    session: str,
    value: bytes,
    correlation: str,
    event_id: str,
    timeout: float,
) -> None:
    """Check that a broker answers and the topic exists (`KafkaUnreachable`, `TopicsMissing`),
    produce, and wait for the delivery report; exit 1 when there is none or it failed. Every
    wait is in short steps, so Ctrl-C is seen at once."""
    import time

    from confluent_kafka import KafkaError, Producer

    from orchestrator.adapters.kafka.clients import producer_config
    from orchestrator.adapters.kafka.connectivity import (
        TopicsMissing,
        missing_topics,
        wait_for_metadata,
        watch_of,
    )

    timeout_ms = max(1000, int(timeout * 1000))
    deadline = time.monotonic() + timeout_ms / 1000 + 2
    conf = producer_config(
        settings,
        quiet=True,
        **{"message.timeout.ms": timeout_ms, "client.id": "genesis-orchestrator-cli"},
    )
    producer = Producer(conf)
    bootstrap = settings.kafka_bootstrap_servers
    metadata = wait_for_metadata(producer, watch_of(conf), bootstrap, timeout_ms / 1000)
    if missing_topics(metadata, [settings.domain_topic]):
        raise TopicsMissing([settings.domain_topic])
    reports: list[KafkaError | None] = []

    def on_delivery(err: KafkaError | None, _msg: Any) -> None:
        reports.append(err)

    producer.produce(
        settings.domain_topic,
        value=value,
        key=session.encode(),
        headers=[("correlation_id", correlation.encode()), ("message_id", event_id.encode())],
        on_delivery=on_delivery,
    )
    while not reports and time.monotonic() < deadline:
        producer.flush(0.2)
    if not reports:
        fail(
            f"send: kafka error: not delivered within {timeout_ms / 1000:g} s"
            f" (bootstrap {bootstrap})",
            1,
        )
    err = reports[0]
    if err is not None:
        fail(
            f"send: kafka error: {one_line(err.str())}"
            f" (bootstrap {bootstrap}, topic {settings.domain_topic})",
            1,
        )
