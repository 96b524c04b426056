"""The operating-system account PostgreSQL runs as.

`initdb` and `postgres` refuse to run as root, so as root the embedded PostgreSQL runs as a
dedicated unprivileged account, created on first use with `useradd --system`, else `nobody`.
"""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.devtools.embedded.errors import EmbeddedServerError

PG_SYSTEM_USER = "orchestrator-pg"
FALLBACK_SYSTEM_USER = "nobody"


@dataclass(frozen=True)
class RunAs:
    """An unprivileged account a child process switches to."""

    name: str
    uid: int
    gid: int

    def popen_kwargs(self) -> dict[str, Any]:
        return {"user": self.uid, "group": self.gid, "extra_groups": []}


def traversable_by_others(path: Path) -> bool:
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


def _create_system_user(name: str) -> None:
    """`useradd --system` without a home or a login shell; failures are left to the caller's
    second look-up."""
    useradd = shutil.which("useradd") or (
        "/usr/sbin/useradd" if os.path.exists("/usr/sbin/useradd") else None
    )
    if useradd is None:
        return
    shell = "/usr/sbin/nologin" if os.path.exists("/usr/sbin/nologin") else "/bin/false"
    subprocess.run(
        [useradd, "--system", "--user-group", "--no-create-home", "--shell", shell, name],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        check=False,
    )


def ensure_system_user(name: str, *, create: bool) -> RunAs | None:
    """The account `name` (created with `useradd --system` when missing and `create`), or None
    when it does not exist, cannot be created or is root."""
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        if not create:
            return None
        _create_system_user(name)
        try:  # also covers a concurrent process that created it first
            entry = pwd.getpwnam(name)
        except KeyError:
            return None
    if entry.pw_uid == 0:
        return None
    return RunAs(name=entry.pw_name, uid=entry.pw_uid, gid=entry.pw_gid)


def unprivileged_account(preferred: str | None) -> RunAs | None:
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
        return RunAs(name=entry.pw_name, uid=entry.pw_uid, gid=entry.pw_gid)
    account = ensure_system_user(PG_SYSTEM_USER, create=True) or ensure_system_user(
        FALLBACK_SYSTEM_USER, create=False
    )
    if account is not None:
        return account
    raise EmbeddedServerError(
        "running as root, and no unprivileged account is available for PostgreSQL "
        f"(could not create {PG_SYSTEM_USER!r}, no {FALLBACK_SYSTEM_USER!r})"
    )
