"""A fresh machine's first commands: before `orchestrator db upgrade` the operator commands say
in one line to run it (not the SQL error), and `db upgrade` creates the database when it does
not exist and says which migrations it applied."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from sqlalchemy.engine import make_url

from tests.support.env import process_env
from tests.support.helpers import DATABASE_PREFIX, DatabaseFactory, unique_suffix

ORCHESTRATOR = str(Path(sys.executable).parent / "orchestrator")
OPERATOR_COMMANDS = (
    ("tasks",),
    ("trace", "some-session"),
    ("outbox",),
    ("outbox", "retry", "--all-failed"),
    ("stats",),
    ("dead-letters", "list"),
    ("verify",),
)


def cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [ORCHESTRATOR, *args],
        env=process_env(DATABASE_URL=url),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def one_line(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 1, (done.returncode, done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    return lines[0]


def test_before_the_migrations_every_operator_command_says_to_run_db_upgrade(
    fresh_database_url: DatabaseFactory,
) -> None:
    url = fresh_database_url(empty=True)
    try:
        for args in OPERATOR_COMMANDS:
            line = one_line(cli(url, *args))
            assert "the database schema is missing" in line, (args, line)
            assert line.endswith("run `orchestrator db upgrade`"), (args, line)
            assert "LINE 1" not in line and "SELECT" not in line, (args, line)
    finally:
        fresh_database_url.drop(url)


def test_db_upgrade_creates_the_database_and_says_what_it_applied(
    fresh_database_url: DatabaseFactory,
) -> None:
    name = f"{DATABASE_PREFIX}{unique_suffix()}"
    url = fresh_database_url.url_for(name)
    try:
        assert not fresh_database_url.exists(name)
        line = one_line(cli(url, "tasks"))
        assert f"database {name} does not exist: run `orchestrator db upgrade`" in line

        first = cli(url, "db", "upgrade")
        assert first.returncode == 0, first.stderr
        lines = first.stdout.strip().splitlines()
        assert lines[0] == f"created database {name}"
        assert lines[1].startswith("applied ") and "0001 (initial schema)" in lines[1], lines
        assert "up to date" not in first.stdout
        assert fresh_database_url.exists(name)
        head = lines[1].rsplit("the schema is at revision ", 1)[1]

        again = cli(url, "db", "upgrade")
        assert again.returncode == 0, again.stderr
        assert again.stdout.strip() == (
            f"the schema was already at the latest revision ({head}): nothing to apply"
        )
        listed = cli(url, "tasks", "--json")
        assert listed.returncode == 0 and listed.stdout.strip() == "[]", listed.stderr
    finally:
        fresh_database_url.drop(name)
    assert make_url(url).database == name
