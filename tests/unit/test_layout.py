"""The layout's rules: small modules, and import contracts that really catch a violation.

`lint-imports` (run by `.ci/run`) checks the contracts in pyproject.toml on the real tree; these
tests feed the same contracts a copy of the tree with one violation planted, so a contract that
silently stopped matching anything would fail here.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MAX_LINES = 400
CHECKED = ("orchestrator", "tasks", "beat")
# A function-level import: the contracts must see those too.
PLANTED = "\n\ndef _planted() -> None:\n    {}  # noqa: F401\n"


def _modules() -> list[Path]:
    return sorted(
        p
        for top in CHECKED
        for p in (ROOT / top).rglob("*.py")
        if "migrations" not in p.relative_to(ROOT).parts
    )


def test_no_module_is_over_the_limit() -> None:
    modules = _modules()
    assert len(modules) > 40
    too_long = {
        str(p.relative_to(ROOT)): n
        for p in modules
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert not too_long, f"modules over {MAX_LINES} lines: {too_long}"


def test_no_conftest_is_imported_as_a_library() -> None:
    offenders = [
        f"{p.relative_to(ROOT)}:{n}"
        for p in (ROOT / "tests").rglob("*.py")
        for n, line in enumerate(p.read_text().splitlines(), 1)
        if line.lstrip().startswith(("from ", "import ")) and "conftest" in line.split("#")[0]
    ]
    assert not offenders, offenders


def _lint_copy(tmp_path: Path, relative: str, appended: str) -> subprocess.CompletedProcess[str]:
    for top in CHECKED:
        shutil.copytree(ROOT / top, tmp_path / top, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    target = tmp_path / relative
    target.write_text(target.read_text() + appended)
    linter = Path(sys.executable).with_name("lint-imports")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    return subprocess.run(
        [str(linter), "pyproject.toml", "--no-cache"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(
    ("relative", "appended", "broken", "evidence"),
    [
        (
            "orchestrator/core/ids.py",
            PLANTED.format("import sqlalchemy"),
            "The core is pure",
            "orchestrator.core.ids -> sqlalchemy",
        ),
        (
            "orchestrator/service/ports.py",
            PLANTED.format("import redis"),
            "The service layer works on ports",
            "orchestrator.service.ports -> redis",
        ),
        (
            "orchestrator/adapters/celery/app.py",
            PLANTED.format("from orchestrator.devtools import simulator"),
            "Only the CLI and the tests use the dev tools",
            "orchestrator.adapters.celery.app -> orchestrator.devtools.simulator",
        ),
        (
            "orchestrator/core/ids.py",
            PLANTED.format("from orchestrator.core import inbound"),
            "No import cycle",
            "No cycles are allowed in orchestrator.core.",
        ),
    ],
    ids=["core-driver", "service-driver", "devtools-import", "function-level-cycle"],
)
def test_a_planted_violation_breaks_its_contract(
    tmp_path: Path, relative: str, appended: str, broken: str, evidence: str
) -> None:
    done = _lint_copy(tmp_path, relative, appended)
    out = done.stdout + done.stderr
    assert done.returncode != 0, out
    broken_lines = [line for line in out.splitlines() if line.endswith("BROKEN")]
    assert any(line.startswith(broken) for line in broken_lines), out
    assert evidence in " ".join(out.split()), out
