"""Metrics endpoints count what the pipeline processed; one trace id follows a request across
every process and every message it causes."""

from __future__ import annotations

import re
import urllib.request
import uuid

import orjson

from orchestrator.devtools.embedded import free_port
from tests.support.harness import Stack, command
from tests.support.helpers import wait_for

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


def scrape(port: int) -> dict[str, float]:
    """`name{labels}` -> value, from a Prometheus text endpoint."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


def test_metrics_count_what_was_processed(stack: Stack) -> None:
    worker_port, ingest_port = free_port(), free_port()
    stack.start_worker(ORCHESTRATOR_METRICS_PORT=str(worker_port))
    stack.start_beat()
    stack.start_simulator("--scores", "8")
    stack.start_ingester(ORCHESTRATOR_METRICS_PORT=str(ingest_port))
    sessions = [str(uuid.uuid4()) for _ in range(5)]
    for s in sessions:
        stack.send_command(s, "Character.Request")
    stack.produce(stack.domain_topic, b"{not json", b"bad-key")
    stack.flush()
    wait_for(
        lambda: (
            stack.scalar(
                "SELECT count(*) FROM domain_events WHERE event_type ="
                " 'Genesis.Session.Character.Confirmed'"
            )
            == 5
        ),
        timeout=60,
        message="five confirmed characters",
    )
    stack.wait_idle()

    def worker_counts() -> dict[str, float] | None:
        m = scrape(worker_port)
        done = m.get('orchestrator_messages_processed_total{kind="capability",status="processed"}')
        # The relay counts a publish after its SENT commit: wait for the counter to catch up.
        published = sum(
            v for k, v in m.items() if k.startswith("orchestrator_outbox_published_total{")
        )
        sent = stack.scalar("SELECT count(*) FROM event_outbox WHERE status = 'SENT'")
        return m if done == 10 and published == sent else None  # 5 generations + 5 reviews

    w = wait_for(
        worker_counts,
        timeout=20,
        ignore=(OSError,),
        message=lambda: f"worker metrics; last scrape {scrape(worker_port)}",
    )
    assert w['orchestrator_messages_processed_total{kind="command",status="processed"}'] == 5
    for fact in ("Requested", "Proposed", "Confirmed"):
        key = f'orchestrator_facts_written_total{{event_type="Genesis.Session.Character.{fact}"}}'
        assert w[key] == 5, key
    assert w["orchestrator_async_tasks_created_total"] == 10
    assert w["orchestrator_async_tasks_completed_total"] == 10
    assert w["orchestrator_task_roundtrip_seconds_count"] == 10
    published = sum(v for k, v in w.items() if k.startswith("orchestrator_outbox_published_total{"))
    assert published == stack.scalar("SELECT count(*) FROM event_outbox WHERE status = 'SENT'")
    assert w["orchestrator_outbox_pending"] == 0
    assert w["orchestrator_inbox_backlog"] == 0

    i = wait_for(
        lambda: scrape(ingest_port), timeout=10, message="ingester metrics", ignore=(OSError,)
    )
    assert i['orchestrator_messages_ingested_total{kind="command"}'] == 5
    assert i['orchestrator_messages_ingested_total{kind="capability"}'] == 10
    assert i['orchestrator_dead_letters_total{category="not_json"}'] == 1


def test_one_trace_across_processes_and_messages(stack: Stack) -> None:
    stack.start_all("--scores", "8")
    reader = stack.reader()
    session, corr = str(uuid.uuid4()), str(uuid.uuid4())
    stack.produce(
        stack.domain_topic,
        orjson.dumps(command(session, "Character.Request", correlation_id=corr)),
        session.encode(),
        [("traceparent", TRACEPARENT.encode())],
    )
    stack.flush()
    reader.wait(
        lambda rs: any(r.type == "Genesis.Session.Character.Confirmed" for r in rs),
        timeout=60,
        message="Character.Confirmed",
    )
    reader.poll()
    reader.close()
    produced = [
        r
        for r in reader.records
        if r.headers.get("message_id")
        and r.key == session.encode()
        and r.type != "Genesis.Session.Command.Received"
    ]
    types = sorted({r.type or "" for r in produced})
    assert "Character.Design.GenerationRequested" in types
    assert "Review.Quality.EvaluationRequested" in types
    spans = set()
    for r in produced:
        trace = r.headers.get("traceparent", "")
        assert re.fullmatch(rf"00-{TRACE_ID}-[0-9a-f]{{16}}-01", trace), (r.type, trace)
        spans.add(trace.split("-")[2])
    assert len(spans) == len(produced)  # every message is its own span of the one trace
    worker_log = (stack.tmp / "worker.log").read_text()
    traced = [line for line in worker_log.splitlines() if TRACE_ID in line]
    assert any('"orchestrator_domain_event_processed"' in line for line in traced)
    assert any('"orchestrator_capability_event_processed"' in line for line in traced)
