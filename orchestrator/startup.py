"""Start-up checks shared by every process: one clear line and exit 2 on a bad setting, a
warning for an `ORCHESTRATOR_*` variable that is no setting, and the plugin modules imported.

Every process (the CLI's commands through `orchestrator.cli.wiring.command_settings`, the Celery
worker and beat through `tasks`) starts with `settings_or_exit`, so a module named in
`ORCHESTRATOR_PLUGINS` registers its command strategies and result handlers in each of them
before the first message is processed.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Mapping
from typing import Any, NoReturn

from orchestrator.core.errors import ConfigurationError
from orchestrator.observability.logs import redact_text
from orchestrator.settings import Settings, load_settings, unknown_variables


def fail(message: str, code: int = 2) -> NoReturn:
    """One line on stderr (driver messages span several), credentials masked, then exit."""
    line = " ".join(redact_text(message).split())
    print(f"orchestrator: {line}", file=sys.stderr)
    raise SystemExit(code)


def warn_unknown_variables(environ: Mapping[str, str] | None = None) -> list[str]:
    """One warning line on stderr per `ORCHESTRATOR_*` variable that is no setting, naming the
    closest setting; the lines, for tests."""
    lines = []
    for name, closest in unknown_variables(os.environ if environ is None else environ):
        hint = f" (did you mean {closest}?)" if closest else ""
        lines.append(f"orchestrator: warning: {name} is not a setting{hint}; it is ignored")
    for line in lines:
        print(line, file=sys.stderr)
    return lines


def load_plugins(settings: Settings) -> list[str]:
    """Import every module of `ORCHESTRATOR_PLUGINS` (once per process: Python caches them);
    ConfigurationError naming the setting when one cannot be imported."""
    for module in settings.plugins:
        try:
            importlib.import_module(module)
        except Exception as exc:
            raise ConfigurationError(
                f"invalid setting ORCHESTRATOR_PLUGINS: cannot import {module!r}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
    return list(settings.plugins)


def settings_or_exit(**overrides: Any) -> Settings:
    """The validated settings, the typo warnings printed and the plugins imported; one line
    and exit 2 when a setting is bad or a plugin cannot be imported."""
    try:
        settings = load_settings(**overrides)
        warn_unknown_variables()
        load_plugins(settings)
    except ConfigurationError as exc:
        fail(str(exc))
    return settings
