"""docker-compose.yml and the Dockerfile, checked as data.

There is no Docker engine on the machines that run this suite, so these tests load the files and
check what `docker compose up` relies on: pinned images, health checks, dependencies with
conditions, workers that can be scaled, no committed secrets, and commands that exist: the
`orchestrator` subcommands in the CLI, the Celery queues in the set the workers serve.
"""

from __future__ import annotations

import itertools
import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"

APP_IMAGE = "genesis-orchestrator:local"
CELERY_APP = "tasks"

# The argv of every service that runs the application image. The compose file must run exactly
# these; the CLI and queue checks below validate them.
APP_COMMANDS: dict[str, list[str]] = {
    "migrate": ["orchestrator", "db", "upgrade"],
    "topics": ["orchestrator", "topics", "create"],
    "ingester": ["orchestrator", "ingest"],
    "worker-domain": [
        "celery", "-A", "tasks", "worker", "-Q", "orchestrator.domain",
        "--loglevel", "INFO", "-n", "domain@%h",
    ],
    "worker-capability": [
        "celery", "-A", "tasks", "worker", "-Q", "orchestrator.capability",
        "--loglevel", "INFO", "-n", "capability@%h",
    ],
    "worker-relay": [
        "celery", "-A", "tasks", "worker", "-Q", "orchestrator.relay",
        "--loglevel", "INFO", "-n", "relay@%h",
    ],
    "beat": [
        "celery", "-A", "tasks", "beat", "--loglevel", "INFO", "-s", "/tmp/celerybeat-schedule",
    ],
    "flower": ["celery", "-A", "tasks", "flower", "--port=5555"],
    # Profile `demo`: the capability simulator and one session's first command.
    "simulator": ["orchestrator", "simulate", "--scores", "6,8"],
    "demo-session": [
        "orchestrator", "send", "Character.Request", "--session", "demo-session-1",
        "--payload", '{"name": "Ada"}',
    ],
}  # fmt: skip
# Services only `docker compose --profile demo up` starts.
DEMO_PROFILE = frozenset({"simulator", "demo-session"})

INFRA_SERVICES = frozenset({"kafka", "postgres", "redis"})
ONE_SHOT_SERVICES = frozenset({"migrate", "topics", "demo-session"})
ALL_SERVICES = INFRA_SERVICES | set(APP_COMMANDS)
LONG_RUNNING_SERVICES = ALL_SERVICES - ONE_SHOT_SERVICES
WORKER_QUEUES = {
    "worker-domain": "orchestrator.domain",
    "worker-capability": "orchestrator.capability",
    "worker-relay": "orchestrator.relay",
}

HEALTHY = "service_healthy"
COMPLETED = "service_completed_successfully"
_WORKER_DEPENDENCIES = {
    "migrate": COMPLETED,
    "topics": COMPLETED,  # the relay must never publish to a topic that does not exist yet
    "postgres": HEALTHY,
    "redis": HEALTHY,
    "kafka": HEALTHY,
}
# What each application service needs before it starts, and how it waits for it.
REQUIRED_DEPENDENCIES: dict[str, dict[str, str]] = {
    "migrate": {"postgres": HEALTHY},
    "topics": {"kafka": HEALTHY},
    "ingester": dict(_WORKER_DEPENDENCIES),
    "worker-domain": dict(_WORKER_DEPENDENCIES),
    "worker-capability": dict(_WORKER_DEPENDENCIES),
    "worker-relay": dict(_WORKER_DEPENDENCIES),
    "beat": {"migrate": COMPLETED, "redis": HEALTHY},
    "flower": {"redis": HEALTHY},
    "simulator": {"topics": COMPLETED, "kafka": HEALTHY},
    # The command is sent once everything that handles it (and the simulator) is up.
    "demo-session": {
        "ingester": HEALTHY,
        "simulator": HEALTHY,
        "worker-domain": HEALTHY,
        "worker-capability": HEALTHY,
        "worker-relay": HEALTHY,
    },
}

# An image tag naming an exact release: 4.1.1, 16.10-bookworm, 3.11.14-slim-bookworm.
PINNED_TAG = re.compile(r"\d+\.\d+(\.\d+)?(-[a-z0-9][a-z0-9.]*)*")
SECRET_NAME = re.compile(r"PASSWORD|PASSWD|SECRET|TOKEN|AUTH|CREDENTIAL|API_KEY|PRIVATE_KEY", re.I)
SECRET_FLAGS = frozenset({"--requirepass", "--masterauth", "--password", "--pass", "-a"})
# A value that is nothing but a reference to a variable, with a development placeholder default.
VARIABLE_WITH_DEFAULT = re.compile(r"\$\{[A-Z_][A-Z0-9_]*:-[^}]*\}")
VARIABLE_REFERENCE = re.compile(r"\$\$|\$\{(?P<braced>[^}]*)\}|\$(?P<bare>[A-Za-z_][A-Za-z0-9_]*)")


# ---- helpers ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    assert COMPOSE_FILE.is_file(), f"{COMPOSE_FILE} is missing"
    doc = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(doc, dict), "docker-compose.yml must be a mapping"
    return doc


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found = compose.get("services")
    assert isinstance(found, dict), "docker-compose.yml has no services mapping"
    return found


def _environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        pairs = (item.split("=", 1) for item in env)
        return {p[0]: (p[1] if len(p) > 1 else "") for p in pairs}
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def _strings(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield str(key)
            yield from _strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from _strings(item)


def _argvs(service: dict[str, Any]) -> Iterator[list[str]]:
    """Every argument list a service runs: its command and its health check."""
    for argv in (service.get("command"), service.get("entrypoint")):
        if isinstance(argv, list):
            yield [str(a) for a in argv]
        elif isinstance(argv, str):
            yield shlex.split(argv)
    test = (service.get("healthcheck") or {}).get("test")
    if isinstance(test, list) and test and test[0] == "CMD-SHELL":
        yield shlex.split(" ".join(test[1:]).replace("$$", "$"))
    elif isinstance(test, list) and test and test[0] == "CMD":
        yield [str(a) for a in test[1:]]
    elif isinstance(test, str):
        yield shlex.split(test.replace("$$", "$"))


def _option_values(argv: list[str], *names: str) -> list[str]:
    """Values of an option given as `-Q x`, `--queues x` or `--queues=x`."""
    values = []
    for i, arg in enumerate(argv):
        for name in names:
            if arg == name and i + 1 < len(argv):
                values.append(argv[i + 1])
            elif name.startswith("--") and arg.startswith(name + "="):
                values.append(arg.split("=", 1)[1])
    return values


def _celery_subcommand(service: str, argv: list[str]) -> tuple[str, list[str]]:
    assert argv[:1] == ["celery"], f"{service}: not a celery command: {argv}"
    assert argv[1:3] in (["-A", CELERY_APP], ["--app", CELERY_APP]), (
        f"{service}: celery must load the `{CELERY_APP}` app first (`celery -A {CELERY_APP} ...`)"
    )
    assert len(argv) > 3, f"{service}: celery command without a subcommand"
    return argv[3], argv[4:]


def _healthcheck_text(service: dict[str, Any]) -> str:
    test = (service.get("healthcheck") or {}).get("test")
    return " ".join(test) if isinstance(test, list) else str(test or "")


# ---- structure ----------------------------------------------------------------------------------


def test_compose_file_uses_the_compose_spec_without_version(compose: dict[str, Any]) -> None:
    assert "version" not in compose, "the compose spec has no top-level `version:`; remove it"


def test_services_are_exactly_the_known_ones(services: dict[str, dict[str, Any]]) -> None:
    assert set(services) == ALL_SERVICES, (
        f"unexpected services {sorted(set(services) - ALL_SERVICES)}, "
        f"missing services {sorted(ALL_SERVICES - set(services))}: "
        "update APP_COMMANDS / INFRA_SERVICES in this test together with the compose file"
    )


@pytest.mark.parametrize("name", sorted(ALL_SERVICES))
def test_every_image_is_pinned(services: dict[str, dict[str, Any]], name: str) -> None:
    service = services[name]
    image = service.get("image")
    assert isinstance(image, str) and image, f"{name}: no image"
    if name in APP_COMMANDS:
        assert image == APP_IMAGE, f"{name}: app services share the image {APP_IMAGE}, got {image}"
        assert service.get("build") in (".", {"context": "."}), f"{name}: must build from ."
        return
    assert "build" not in service, f"{name}: infrastructure services use released images"
    repository, _, tag = image.rpartition(":")
    assert repository and "/" not in tag, f"{name}: image {image!r} has no tag"
    assert tag != "latest", f"{name}: image {image!r} uses `latest`"
    assert PINNED_TAG.fullmatch(tag), f"{name}: tag {tag!r} of {image!r} is not a pinned release"


def test_infrastructure_images_are_the_expected_products(
    services: dict[str, dict[str, Any]],
) -> None:
    expected = {"kafka": "apache/kafka:", "postgres": "postgres:16.", "redis": "redis:7."}
    for name, prefix in expected.items():
        image = services[name]["image"]
        assert image.startswith(prefix), f"{name}: expected an image {prefix}*, got {image}"


@pytest.mark.parametrize("name", sorted(LONG_RUNNING_SERVICES))
def test_every_long_running_service_has_a_healthcheck(
    services: dict[str, dict[str, Any]], name: str
) -> None:
    check = services[name].get("healthcheck")
    assert isinstance(check, dict), f"{name}: long-running service without a healthcheck"
    assert not check.get("disable"), f"{name}: healthcheck is disabled"
    test = check.get("test")
    assert isinstance(test, list) and len(test) >= 2, f"{name}: healthcheck.test must be a list"
    assert test[0] in ("CMD", "CMD-SHELL"), f"{name}: healthcheck.test must start CMD/CMD-SHELL"
    for key in ("interval", "timeout", "retries"):
        assert key in check, f"{name}: healthcheck has no {key}"


@pytest.mark.parametrize("name", sorted(APP_COMMANDS))
def test_app_services_wait_for_what_they_need(
    services: dict[str, dict[str, Any]], name: str
) -> None:
    depends = services[name].get("depends_on")
    assert isinstance(depends, dict), (
        f"{name}: depends_on must be the long form with a condition per service"
    )
    for target, spec in depends.items():
        assert target in services, f"{name}: depends on unknown service {target}"
        condition = spec.get("condition") if isinstance(spec, dict) else None
        expected = COMPLETED if target in ONE_SHOT_SERVICES else HEALTHY
        assert condition == expected, (
            f"{name}: depends on {target} with {condition}, not {expected}"
        )
        if expected == HEALTHY:
            assert "healthcheck" in services[target], f"{name}: {target} has no healthcheck"
    for target, condition in REQUIRED_DEPENDENCIES[name].items():
        assert target in depends, f"{name}: must depend on {target} ({condition})"
        assert depends[target].get("condition") == condition, (
            f"{name}: must wait for {target} with {condition}"
        )


def test_one_shot_jobs_do_not_restart_and_the_rest_do(
    services: dict[str, dict[str, Any]],
) -> None:
    for name in ONE_SHOT_SERVICES:
        restart = services[name].get("restart")
        # An unquoted `no` is a YAML boolean: compose wants the string "no".
        assert restart == "no", f'{name}: one-shot job needs restart: "no", got {restart!r}'
    for name in LONG_RUNNING_SERVICES:
        restart = services[name].get("restart")
        assert restart in ("unless-stopped", "always"), f"{name}: restart is {restart!r}"


@pytest.mark.parametrize("name", sorted(WORKER_QUEUES))
def test_workers_can_be_scaled(services: dict[str, dict[str, Any]], name: str) -> None:
    service = services[name]
    for key in ("container_name", "hostname", "ports"):
        assert key not in service, f"{name}: `{key}` prevents `docker compose up --scale {name}=N`"


# ---- secrets ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(ALL_SERVICES))
def test_no_secret_is_hard_coded(services: dict[str, dict[str, Any]], name: str) -> None:
    service = services[name]
    for key, value in _environment(service).items():
        if SECRET_NAME.search(key):
            assert VARIABLE_WITH_DEFAULT.fullmatch(value), (
                f"{name}: {key} must be `${{VAR:-placeholder}}`, not a literal value"
            )
    for text in _strings(service):
        for word in text.split():
            if "://" not in word:
                continue
            password = urlsplit(word).password
            if password is not None:
                assert VARIABLE_WITH_DEFAULT.fullmatch(password), (
                    f"{name}: password in {word!r} must be `${{VAR:-placeholder}}`"
                )
    for argv in _argvs(service):
        for flag, value in itertools.pairwise(argv):
            if flag in SECRET_FLAGS:
                assert VARIABLE_WITH_DEFAULT.fullmatch(value), (
                    f"{name}: the value of {flag} must be `${{VAR:-placeholder}}`"
                )


def test_every_variable_has_a_default(compose: dict[str, Any]) -> None:
    """`docker compose up` works with no .env file: every `${VAR}` carries a default."""
    for text in _strings(compose):
        for match in VARIABLE_REFERENCE.finditer(text):
            if match.group(0) == "$$":
                continue
            body = match.group("braced")
            assert body is not None and re.fullmatch(r"[A-Z_][A-Z0-9_]*:?-.*", body), (
                f"{match.group(0)!r} in {text!r} has no default (use ${{VAR:-default}}; "
                "escape a shell variable as $$VAR)"
            )


# ---- wiring between services --------------------------------------------------------------------


def test_app_environment_points_at_the_compose_services(
    services: dict[str, dict[str, Any]],
) -> None:
    postgres_env = _environment(services["postgres"])
    redis_command = [str(a) for a in services["redis"]["command"]]
    advertised = _environment(services["kafka"])["KAFKA_ADVERTISED_LISTENERS"]
    for name in APP_COMMANDS:
        env = _environment(services[name])
        for key in ("DATABASE_URL", "REDIS_URL", "KAFKA_BOOTSTRAP_SERVERS"):
            assert key in env, f"{name}: {key} is not set"
        db = urlsplit(env["DATABASE_URL"])
        assert db.scheme == "postgresql+psycopg2", f"{name}: DATABASE_URL scheme {db.scheme}"
        assert (db.hostname, db.port) == ("postgres", 5432), f"{name}: DATABASE_URL host"
        assert db.path.lstrip("/") == postgres_env["POSTGRES_DB"], f"{name}: DATABASE_URL db"
        assert db.password == postgres_env["POSTGRES_PASSWORD"], f"{name}: DATABASE_URL password"
        redis = urlsplit(env["REDIS_URL"])
        assert (redis.hostname, redis.port) == ("redis", 6379), f"{name}: REDIS_URL host"
        assert redis.password in redis_command, f"{name}: REDIS_URL password is not Redis's"
        for server in env["KAFKA_BOOTSTRAP_SERVERS"].split(","):
            assert f"://{server}" in advertised, f"{name}: Kafka does not advertise {server}"


def test_kafka_is_a_single_kraft_node(services: dict[str, dict[str, Any]]) -> None:
    env = _environment(services["kafka"])
    assert env.get("KAFKA_PROCESS_ROLES") == "broker,controller", "kafka: combined KRaft node"
    assert env.get("KAFKA_ADVERTISED_LISTENERS") == "PLAINTEXT://kafka:9092"
    assert env.get("KAFKA_CONTROLLER_QUORUM_VOTERS", "").startswith(
        f"{env.get('KAFKA_NODE_ID')}@"
    ), "kafka: the node must be its own controller quorum"
    assert env.get("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR") == "1", "kafka: one broker, RF 1"
    assert "kafka-topics.sh --bootstrap-server localhost:9092 --list" in _healthcheck_text(
        services["kafka"]
    ), "kafka: healthcheck must list topics through the broker"


def test_flower_requires_basic_auth(services: dict[str, dict[str, Any]]) -> None:
    flower = services["flower"]
    auth = _environment(flower).get("FLOWER_BASIC_AUTH")
    assert auth, "flower: FLOWER_BASIC_AUTH must be set (Flower reads it from the environment)"
    match = re.fullmatch(r"\$\{FLOWER_BASIC_AUTH:-(?P<default>[^}]*)\}", auth)
    assert match, "flower: FLOWER_BASIC_AUTH must come from the environment with a placeholder"
    assert re.fullmatch(r"[^:,]+:[^:,]+", match.group("default")), (
        "flower: the FLOWER_BASIC_AUTH placeholder must be user:password"
    )
    (port,) = _option_values(APP_COMMANDS["flower"], "--port")
    published = [str(p) for p in flower.get("ports", [])]
    assert any(p.endswith(f":{port}") for p in published), f"flower: port {port} not published"
    assert f"127.0.0.1:{port}/healthcheck" in _healthcheck_text(flower), (
        "flower: healthcheck must request /healthcheck on Flower's port"
    )


def test_ingester_healthcheck_reads_its_metrics_port(
    services: dict[str, dict[str, Any]],
) -> None:
    ingester = services["ingester"]
    port = _environment(ingester).get("ORCHESTRATOR_METRICS_PORT")
    assert port and port != "0", "ingester: ORCHESTRATOR_METRICS_PORT must enable the endpoint"
    assert f"127.0.0.1:{port}/metrics" in _healthcheck_text(ingester), (
        "ingester: healthcheck must request the metrics endpoint on ORCHESTRATOR_METRICS_PORT"
    )


def test_demo_profile_holds_the_simulator_and_nothing_else_does(
    services: dict[str, dict[str, Any]],
) -> None:
    """`docker compose up` starts no stand-in service; `--profile demo up` adds exactly the
    simulator and the session job."""
    profiled = {name for name, service in services.items() if service.get("profiles")}
    assert profiled == DEMO_PROFILE, f"services with a profile: {sorted(profiled)}"
    for name in DEMO_PROFILE:
        assert services[name]["profiles"] == ["demo"], f"{name}: profiles must be [demo]"


def test_demo_simulator_answers_on_the_compose_topics_and_is_checked(
    services: dict[str, dict[str, Any]],
) -> None:
    simulator = services["simulator"]
    argv = [str(a) for a in simulator["command"]]
    assert argv[:2] == ["orchestrator", "simulate"], "simulator: runs `orchestrator simulate`"
    scores = _option_values(argv, "--scores")
    assert scores and all(float(s) for s in scores[0].split(",")), "simulator: --scores"
    # A score under the pass mark first: the session shows a regeneration, then confirms.
    assert float(scores[0].split(",")[0]) < 7 <= float(scores[0].split(",")[-1])
    port = _environment(simulator).get("ORCHESTRATOR_METRICS_PORT")
    assert port and port != "0", "simulator: ORCHESTRATOR_METRICS_PORT enables its endpoint"
    assert f"127.0.0.1:{port}/metrics" in _healthcheck_text(simulator)
    env = _environment(simulator)
    for key in ("ORCHESTRATOR_DOMAIN_TOPIC", "ORCHESTRATOR_TASK_TOPIC_PREFIX"):
        assert key not in env, f"simulator: {key} must match the orchestrator's (leave it out)"


def test_demo_session_sends_a_command_the_core_knows(services: dict[str, dict[str, Any]]) -> None:
    import json

    from orchestrator.core.command_strategies import command_registry

    argv = [str(a) for a in services["demo-session"]["command"]]
    assert argv[:2] == ["orchestrator", "send"], "demo-session: runs `orchestrator send`"
    assert command_registry.knows(argv[2]), f"demo-session: unknown command type {argv[2]}"
    (payload,) = _option_values(argv, "--payload")
    assert isinstance(json.loads(payload), dict), "demo-session: --payload is a JSON object"
    assert _option_values(argv, "--session"), "demo-session: names its session"


def test_beat_healthcheck_watches_its_schedule_file(
    services: dict[str, dict[str, Any]],
) -> None:
    (schedule,) = _option_values(APP_COMMANDS["beat"], "-s", "--schedule")
    assert schedule.startswith("/tmp/"), "beat: the schedule file must be in a writable path"
    assert schedule in _healthcheck_text(services["beat"]), "beat: healthcheck ignores schedule"


# ---- commands -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(APP_COMMANDS))
def test_app_service_runs_a_known_command(services: dict[str, dict[str, Any]], name: str) -> None:
    command = services[name].get("command")
    assert isinstance(command, list), f"{name}: command must be an argv list (exec form)"
    assert [str(a) for a in command] == APP_COMMANDS[name], (
        f"{name}: runs {command}, the suite knows {APP_COMMANDS[name]}"
    )
    assert "entrypoint" not in services[name], f"{name}: keep the image's entrypoint"


def _declared_queues(monkeypatch: pytest.MonkeyPatch) -> set[str]:
    """The queues the Celery app declares: where its tasks can be sent."""
    from orchestrator.adapters.celery.app import make_celery
    from orchestrator.settings import load_settings
    from tests.support.env import clean_env

    clean_env(monkeypatch)
    return {q.name for q in make_celery(load_settings()).conf.task_queues}


def test_compose_workers_serve_exactly_the_queues_the_app_declares(
    services: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Read from docker-compose.yml: a queue no worker serves fills up for ever, a queue the
    app does not declare is never fed, and one queue per worker service lets each scale."""
    declared = _declared_queues(monkeypatch)
    served: dict[str, str] = {}
    for name, service in sorted(services.items()):
        command = service.get("command")
        if not isinstance(command, list) or command[:1] != ["celery"]:
            continue
        subcommand, rest = _celery_subcommand(name, [str(a) for a in command])
        assert subcommand in ("worker", "beat", "flower"), f"{name}: celery {subcommand}?"
        queues = {q for value in _option_values(rest, "-Q", "--queues") for q in value.split(",")}
        if subcommand != "worker":
            assert not queues, f"{name}: only workers take -Q"
            continue
        assert queues, f"{name}: a worker must name its queues (-Q), not take Celery's default"
        assert queues <= declared, f"{name}: the app declares no queue {sorted(queues - declared)}"
        assert queues == {WORKER_QUEUES.get(name)}, f"{name}: serves {sorted(queues)}"
        for queue in queues:
            assert queue not in served, f"{served[queue]} and {name} both serve {queue}"
            served[queue] = name
    assert set(served) == declared, f"no worker serves {sorted(declared - set(served))}"


@pytest.mark.parametrize("name", sorted(WORKER_QUEUES))
def test_worker_healthcheck_pings_its_own_node(
    services: dict[str, dict[str, Any]], name: str
) -> None:
    (node,) = _option_values(APP_COMMANDS[name], "-n", "--hostname")
    assert node.endswith("@%h"), f"{name}: node name must end in @%h to stay unique when scaled"
    test = services[name]["healthcheck"]["test"]
    assert test[0] == "CMD-SHELL", f"{name}: healthcheck needs a shell to expand $HOSTNAME"
    argv = shlex.split(test[1].replace("$$", "$"))
    subcommand, rest = _celery_subcommand(name, argv)
    assert [subcommand, *rest[:1]] == ["inspect", "ping"], f"{name}: healthcheck is not a ping"
    destinations = _option_values(rest, "-d", "--destination")
    assert destinations == [node.replace("%h", "$HOSTNAME")], (
        f"{name}: healthcheck pings {destinations}, the worker is {node}"
    )


def _is_group(command: Any) -> bool:
    # Duck-typed: Typer >= 0.29 builds on its own copy of click, so isinstance(click.Group) fails.
    return callable(getattr(command, "get_command", None)) and callable(
        getattr(command, "list_commands", None)
    )


def test_orchestrator_subcommands_exist_in_the_cli() -> None:
    """Every `orchestrator ...` argv names a command of the CLI and parses without error."""
    cli = pytest.importorskip("orchestrator.cli.main")
    import typer

    assert callable(getattr(cli, "main", None)), (
        "orchestrator.cli.main.main is the console script `orchestrator` (pyproject.toml)"
    )
    app = getattr(cli, "app", None)
    root = typer.main.get_command(app) if isinstance(app, typer.Typer) else app
    assert callable(getattr(root, "make_context", None)), (
        f"orchestrator.cli.main.app must be a Typer or click app, got {type(app).__name__}"
    )
    assert _is_group(root), "the orchestrator CLI must be a group of subcommands"

    for name, argv in APP_COMMANDS.items():
        if argv[0] != "orchestrator":
            continue
        parent = None
        command = root
        args = argv[1:]
        path = ["orchestrator"]
        while _is_group(command):
            assert args and not args[0].startswith("-"), (
                f"{name}: `{' '.join(path)}` is a group; {argv} names no subcommand"
            )
            ctx = command.context_class(command, info_name=path[-1], parent=parent)
            sub = command.get_command(ctx, args[0])
            assert sub is not None, (
                f"{name}: `{' '.join(path)}` has no subcommand {args[0]!r} "
                f"(it has {sorted(command.list_commands(ctx))})"
            )
            path.append(args.pop(0))
            parent, command = ctx, sub
        try:
            command.make_context(path[-1], list(args), parent=parent)
        except Exception as exc:  # any click usage error: the container would exit at once
            message = exc.format_message() if hasattr(exc, "format_message") else repr(exc)
            pytest.fail(f"{name}: `{' '.join(argv)}` does not parse: {message}")


def test_app_environment_variables_are_settings(services: dict[str, dict[str, Any]]) -> None:
    """An environment variable the application ignores is a typo or a stale setting."""
    from pydantic import AliasChoices

    from orchestrator.settings import Settings

    known: set[str] = set()
    for field, info in Settings.model_fields.items():
        alias = info.validation_alias
        if isinstance(alias, AliasChoices):
            known.update(c.upper() for c in alias.choices if isinstance(c, str))
        else:
            known.add(f"ORCHESTRATOR_{field.upper()}")
    for name in APP_COMMANDS:
        for key in _environment(services[name]):
            if name == "flower" and key.startswith("FLOWER_"):
                continue
            assert key.upper() in known, f"{name}: {key} is not a setting of orchestrator.settings"


# ---- image --------------------------------------------------------------------------------------


def _dockerfile_instructions() -> list[tuple[str, str]]:
    assert DOCKERFILE.is_file(), f"{DOCKERFILE} is missing"
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text(encoding="utf-8"))
    instructions = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            keyword, _, rest = stripped.partition(" ")
            instructions.append((keyword.upper(), rest.strip()))
    return instructions


def test_dockerfile_pins_its_base_image() -> None:
    stages: set[str] = set()
    bases = []
    for keyword, rest in _dockerfile_instructions():
        if keyword != "FROM":
            continue
        words = [w for w in rest.split() if not w.startswith("--")]
        image = words[0]
        if len(words) >= 3 and words[1].upper() == "AS":
            stages.add(words[2])
        if image not in stages:
            bases.append(image)
    assert bases, "Dockerfile has no FROM"
    for image in bases:
        assert re.fullmatch(r"python:3\.11\.\d+-slim(-[a-z]+)?", image), (
            f"Dockerfile: base image {image!r} must be python:3.11.<patch>-slim[-<debian>]"
        )


def test_dockerfile_runs_as_a_non_root_user() -> None:
    instructions = _dockerfile_instructions()
    last_from = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    users = [rest for keyword, rest in instructions[last_from:] if keyword == "USER"]
    assert users, "Dockerfile: the final stage must switch to a non-root USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0"), f"Dockerfile: final USER is {users[-1]!r}"


def test_dockerfile_installs_the_project_without_dev_extras_or_secrets() -> None:
    instructions = _dockerfile_instructions()
    installs = [
        rest for keyword, rest in instructions if keyword == "RUN" and "pip install" in rest
    ]
    assert installs, "Dockerfile: the project is never pip-installed"
    for rest in installs:
        assert "[" not in rest, f"Dockerfile: no extras (test/embedded/bench) in the image: {rest}"
        assert not re.search(r"(^|\s)(-e|--editable)\s", rest), "Dockerfile: no editable install"
    for keyword, rest in instructions:
        if keyword in ("ENV", "ARG"):
            assert not SECRET_NAME.search(rest), f"Dockerfile: secret-like {keyword} {rest!r}"


def test_dockerignore_keeps_local_state_out_of_the_image() -> None:
    assert DOCKERIGNORE.is_file(), f"{DOCKERIGNORE} is missing"
    entries = {
        line.strip()
        for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    }
    for entry in (".git", ".venv", ".env"):
        assert entry in entries, f".dockerignore must exclude {entry}"
