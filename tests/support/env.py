"""Environment helpers for tests that set settings: nothing inherited from the caller."""

from __future__ import annotations

import os

import pytest

ENV_PREFIXES = ("ORCHESTRATOR_", "KAFKA_", "CELERY_")


def clean_env(monkeypatch: pytest.MonkeyPatch, **env: str) -> None:
    """Only the given settings in the environment (nothing inherited from the caller)."""
    for name in list(os.environ):
        if name.startswith(ENV_PREFIXES) or name in {"DATABASE_URL", "REDIS_URL"}:
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)


def process_env(**env: str) -> dict[str, str]:
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(ENV_PREFIXES) and k not in {"DATABASE_URL", "REDIS_URL"}
    }
    return {**base, "PYTHONUNBUFFERED": "1", **env}
