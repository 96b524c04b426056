"""The README's settings table is generated from `Settings` and kept in sync; `orchestrator
config` prints every setting with its value (secrets masked) and its source."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from orchestrator.cli.settings_table import (
    BEGIN,
    END,
    current_block,
    markdown_table,
    meaning,
    replace_block,
)
from orchestrator.settings import Settings, setting_variables
from tests.support.env import process_env

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
ORCHESTRATOR = str(Path(sys.executable).parent / "orchestrator")


def test_readme_lists_every_setting_as_generated() -> None:
    text = README.read_text(encoding="utf-8")
    assert BEGIN in text and END in text, "README.md lost the settings table's markers"
    assert current_block(text) == markdown_table(), (
        "README.md's settings table is out of date: "
        "run `python -m orchestrator.cli.settings_table README.md`"
    )
    for variable in setting_variables().values():
        assert f"| `{variable}` |" in text, f"README.md does not list {variable}"


def test_every_setting_says_what_it_means() -> None:
    missing = [field for field in Settings.model_fields if not meaning(field)]
    assert not missing, f"describe these settings in orchestrator/cli/settings_table.py: {missing}"


def test_the_block_is_rewritten_in_place() -> None:
    text = f"intro\n{BEGIN}\n| old |\n{END}\noutro\n"
    assert replace_block(text, "| new |") == f"intro\n{BEGIN}\n| new |\n{END}\noutro\n"


def config_json(tmp_path: Path, **env: str) -> dict[str, dict[str, str]]:
    done = subprocess.run(
        [ORCHESTRATOR, "config", "--json"],
        env=process_env(**env),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return {row["variable"]: row for row in json.loads(done.stdout)}


def test_config_prints_every_setting_with_secrets_masked_and_its_source(tmp_path: Path) -> None:
    config_file = tmp_path / "orchestrator.yaml"
    config_file.write_text("orchestrator:\n  produce_topics: [genesis.extra.events]\n")
    rows = config_json(
        tmp_path,
        DATABASE_URL="postgresql://app:hunter2@db.internal:5432/genesis",
        REDIS_URL="redis://:redis-pw-1@cache:6379/0",
        KAFKA_SASL_USERNAME="orchestrator",
        KAFKA_SASL_PASSWORD="sasl-pw-2",
        KAFKA_EXTRA_PROPERTIES='{"client.id": "orch-1", "basic.auth.user.info": "u:basic-pw-3"}',
        ORCHESTRATOR_MAX_ATTEMPTS="7",
        ORCHESTRATOR_CONFIG_FILE=str(config_file),
    )
    assert list(rows) == list(setting_variables().values())
    text = json.dumps(rows)
    for secret in ("hunter2", "redis-pw-1", "sasl-pw-2", "basic-pw-3"):
        assert secret not in text
    assert rows["DATABASE_URL"]["value"] == "postgresql://app:***@db.internal:5432/genesis"
    assert rows["REDIS_URL"]["value"] == "redis://:***@cache:6379/0"
    assert rows["KAFKA_SASL_PASSWORD"]["value"] == "***"
    assert json.loads(rows["KAFKA_EXTRA_PROPERTIES"]["value"]) == {
        "client.id": "orch-1",
        "basic.auth.user.info": "***",
    }
    assert (
        rows["ORCHESTRATOR_MAX_ATTEMPTS"]["value"],
        rows["ORCHESTRATOR_MAX_ATTEMPTS"]["source"],
    ) == (
        "7",
        "env",
    )
    assert rows["ORCHESTRATOR_RELAY_INTERVAL_S"] == {
        "variable": "ORCHESTRATOR_RELAY_INTERVAL_S",
        "value": "1",
        "source": "default",
        "default": "1",
        "meaning": meaning("relay_interval_s"),
    }
    produce = rows["ORCHESTRATOR_PRODUCE_TOPICS"]
    assert (produce["value"], produce["source"]) == ('["genesis.extra.events"]', "file")


def test_config_stops_on_a_bad_setting_like_every_command(tmp_path: Path) -> None:
    done = subprocess.run(
        [ORCHESTRATOR, "config"],
        env=process_env(ORCHESTRATOR_MAX_ATTEMPTS="-1"),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.strip().startswith("orchestrator: invalid setting ORCHESTRATOR_MAX_ATTEMPTS")
