"""Start-up: a typo in a variable name is named with the closest setting, and the modules of
`ORCHESTRATOR_PLUGINS` are imported by every process (their strategies and handlers register)."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.core.command_strategies import command_registry
from orchestrator.startup import settings_or_exit
from tests.support.env import clean_env, process_env

ROOT = Path(__file__).resolve().parents[2]
PLUGIN = """\
from typing import Any

from orchestrator.core.command_strategies import CommandMapping, CommandStrategy, command_registry


class {name}(CommandStrategy):
    def get_aliases(self) -> set[str]:
        return {{"{alias}"}}

    def process(
        self, scope_type: str, scope_prefix: str, aggregate_id: str, payload: dict[str, Any]
    ) -> CommandMapping:
        return CommandMapping(requested_action="Plugin.Requested")


command_registry.register({name}())
"""


@pytest.fixture
def plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, str]]:
    """A module on sys.path registering a strategy for a new alias: (module, alias)."""
    suffix = uuid.uuid4().hex[:8]
    module, alias = f"acme_plugin_{suffix}", f"Plugin{suffix}.Request"
    (tmp_path / f"{module}.py").write_text(PLUGIN.format(name=f"P{suffix}", alias=alias))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield module, alias
    command_registry._strategies.pop(alias, None)
    sys.modules.pop(module, None)


def test_a_typo_is_warned_about_with_the_closest_setting(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    clean_env(monkeypatch, ORCHESTRATOR_MAX_ATTEMPT="3", ORCHESTRATOR_LOG_LEVEL="INFO")
    settings = settings_or_exit()
    assert settings.max_attempts == 5  # the typo is not read ...
    err = capsys.readouterr().err.splitlines()
    assert err == [  # ... and says so, once, naming what was meant
        "orchestrator: warning: ORCHESTRATOR_MAX_ATTEMPT is not a setting"
        " (did you mean ORCHESTRATOR_MAX_ATTEMPTS?); it is ignored"
    ]


def test_plugins_are_imported_at_start_up(
    monkeypatch: pytest.MonkeyPatch, plugin: tuple[str, str]
) -> None:
    module, alias = plugin
    clean_env(monkeypatch, ORCHESTRATOR_PLUGINS=module)
    assert not command_registry.knows(alias)
    settings_or_exit()
    assert command_registry.knows(alias)


def test_a_plugin_that_cannot_be_imported_stops_the_process(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    clean_env(monkeypatch, ORCHESTRATOR_PLUGINS="no_such_module_anywhere")
    with pytest.raises(SystemExit) as info:
        settings_or_exit()
    assert info.value.code == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("orchestrator: invalid setting ORCHESTRATOR_PLUGINS: cannot import")
    assert "no_such_module_anywhere" in line


def test_the_celery_workers_entry_point_loads_the_plugins(
    tmp_path: Path, plugin: tuple[str, str]
) -> None:
    """`celery -A tasks worker` imports `tasks`: the strategies are registered there too."""
    module, alias = plugin
    code = (
        "import tasks\n"
        "from orchestrator.core.command_strategies import command_registry\n"
        f"print(command_registry.knows({alias!r}))\n"
    )
    env = process_env(ORCHESTRATOR_PLUGINS=module, PYTHONPATH=f"{tmp_path}:{ROOT}")
    done = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "True"
