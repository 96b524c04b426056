"""Flower (`celery -A tasks flower`) on the stack's broker: basic auth from the environment, an
unauthenticated health check (the compose health check relies on it), and live workers."""

from __future__ import annotations

import base64
import socket
import time
import urllib.error
import urllib.request
from typing import Any

import orjson

from tests.support.harness import ALL_QUEUES, BIN, Proc, Stack
from tests.support.helpers import wait_for

# Several users, comma-separated, as docker-compose.yml documents for FLOWER_BASIC_AUTH.
USERS = "user:secret,ops:other-secret"

# Loopback only: never through a proxy the environment may configure.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(url: str, auth: str | None = None, timeout: float = 10.0) -> tuple[int, bytes]:
    request = urllib.request.Request(url)
    if auth is not None:
        token = base64.b64encode(auth.encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        try:
            return int(exc.code), exc.read()
        finally:
            exc.close()


def start_flower(stack: Stack, port: int) -> Proc:
    return stack.spawn(
        "flower",
        [
            str(BIN / "celery"),
            "-A",
            "tasks",
            "flower",
            f"--port={port}",
            "--address=127.0.0.1",
        ],
        FLOWER_BASIC_AUTH=USERS,
    )


def wait_until_serving(flower: Proc, base: str, timeout: float = 30.0) -> float:
    """Seconds until /healthcheck answers; fails at once if Flower exits."""
    start = time.monotonic()

    def serving() -> bool:
        assert flower.alive(), f"flower exited with {flower.popen.returncode}:\n{flower.tail()}"
        try:
            return get(f"{base}/healthcheck", timeout=2) == (200, b"OK")
        except OSError:
            return False

    wait_for(serving, timeout=timeout, interval=0.1, message=lambda: f"flower on {base}")
    return time.monotonic() - start


def test_flower_requires_basic_auth_and_lists_a_live_worker(stack: Stack) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    flower = start_flower(stack, port)
    startup = wait_until_serving(flower, base)

    # The health check needs no credentials (compose probes it without); the API does.
    assert get(f"{base}/healthcheck") == (200, b"OK")
    for path in ("/api/workers", "/workers", "/"):
        status, _ = get(f"{base}{path}")
        assert status == 401, path
    assert get(f"{base}/api/workers", auth="user:wrong")[0] == 401
    assert get(f"{base}/api/workers", auth="nobody:secret")[0] == 401
    assert get(f"{base}/api/workers", auth="user")[0] == 401
    name_prefix = f"worker-{stack.suffix}@"
    for user in USERS.split(","):
        status, body = get(f"{base}/api/workers?refresh=1", auth=user)
        assert status == 200, user
        assert not [n for n in orjson.loads(body) if n.startswith(name_prefix)]
    assert get(f"{base}/workers", auth="user:secret")[0] == 200

    worker = stack.start_worker()
    started = time.monotonic()

    def listed() -> dict[str, Any] | None:
        assert worker.alive(), worker.tail()
        status, body = get(f"{base}/api/workers?refresh=1", auth="user:secret")
        assert status == 200, body
        workers: dict[str, Any] = orjson.loads(body)
        found = {n: w for n, w in workers.items() if n.startswith(name_prefix)}
        # Flower fills a worker's entry from several broadcasts (stats, active_queues, ...),
        # each with its own reply timeout: a worker that has only just started can be listed
        # before its queues reply arrives. Wait for the whole entry, not the first part of it.
        if not found or not all(w.get("active_queues") for w in found.values()):
            return None
        return found

    found = wait_for(listed, timeout=40, interval=0.2, message="the worker in /api/workers")
    seen_after = time.monotonic() - started
    assert len(found) == 1
    ((name, info),) = found.items()
    queues = sorted(q["name"] for q in info.get("active_queues") or [])
    assert queues == sorted(ALL_QUEUES.split(",")), info.get("active_queues")
    print(f"flower serving after {startup:.1f}s; worker {name} listed after {seen_after:.1f}s")

    assert flower.alive()
    assert flower.stop() == 0, flower.tail()
