"""Start-up checks shared by every process: one clear line and exit 2 on a bad setting."""

from __future__ import annotations

import sys
from typing import Any, NoReturn

from orchestrator.core.errors import ConfigurationError
from orchestrator.observability.logs import redact_text
from orchestrator.settings import Settings, load_settings


def fail(message: str, code: int = 2) -> NoReturn:
    """One line on stderr (driver messages span several), credentials masked, then exit."""
    line = " ".join(redact_text(message).split())
    print(f"orchestrator: {line}", file=sys.stderr)
    raise SystemExit(code)


def settings_or_exit(**overrides: Any) -> Settings:
    try:
        return load_settings(**overrides)
    except ConfigurationError as exc:
        fail(str(exc))
