"""Prometheus metrics (prometheus-client). Names are documented in docs/operations.md."""

from __future__ import annotations

from prometheus_client import start_http_server


def serve(port: int) -> None:
    start_http_server(port, addr="0.0.0.0")
