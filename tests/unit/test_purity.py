"""The pure core imports no broker, database or Celery library."""

from __future__ import annotations

import subprocess
import sys
import textwrap

PURE_MODULES = (
    "orchestrator.core.inbound",
    "orchestrator.core.command_strategies",
    "orchestrator.core.result_handlers",
    "orchestrator.core.wire",
    "orchestrator.core.plan",
    "orchestrator.core.outbound",
    "orchestrator.core.records",
    "orchestrator.service.ports",
    "orchestrator.service.process_message",
    "orchestrator.core.ids",
    "orchestrator.core.errors",
)
FORBIDDEN = ("celery", "confluent_kafka", "sqlalchemy", "redis", "kombu")


def test_pure_core_imports_no_infrastructure() -> None:
    script = textwrap.dedent(
        f"""
        import importlib, sys
        for name in {PURE_MODULES!r}:
            importlib.import_module(name)
        loaded = sorted(
            m for m in sys.modules
            if m.split(".", 1)[0] in {FORBIDDEN!r}
        )
        missing = [name for name in {PURE_MODULES!r} if name not in sys.modules]
        print("loaded=" + ",".join(loaded))
        print("missing=" + ",".join(missing))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "missing=" in lines, result.stdout
    assert "loaded=" in lines, f"infrastructure imported by the pure core: {result.stdout}"


def test_check_detects_a_forbidden_import() -> None:
    """The same check, fed a module that does pull one in, notices it."""
    script = "import sys, kombu; print('kombu' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "True"
