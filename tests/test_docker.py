"""The Docker files (docker/): checked without a Docker engine.

The compose file parses and points at files that exist; the Dockerfiles copy files that exist (and that
their .dockerignore lets through), run as a non-root user with a health check, and start commands the real
`lsal` CLI accepts; no secret is baked into an image or written into compose.yaml; every variable the
backend and worker get is a setting of core.config.Settings and is documented in docker/.env.example;
the worker's health check script works against a real Redis.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
COMPOSE = DOCKER / "compose.yaml"
COMPOSE_CPU = DOCKER / "compose.cpu.yaml"
ENV_EXAMPLE = DOCKER / ".env.example"
DOCKERFILES = {"backend": DOCKER / "backend.Dockerfile", "worker": DOCKER / "worker.Dockerfile"}
COMMANDS = {"backend": ["lsal", "serve", "--host", "0.0.0.0", "--port", "9090"], "worker": ["lsal", "worker"]}

yaml = pytest.importorskip("yaml", reason="PyYAML is needed to read docker/compose.yaml")

SECRET_KEY = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|PASS$|_PASS_|API_KEY|ACCESS_KEY|PRIVATE_KEY|CREDENTIAL")
# a value that only refers to a variable: ${X}, ${X:?message}, ${X?message}, ${X:-} or ${X-} (empty default)
VAR_ONLY = re.compile(r"^\$\{[A-Za-z_][A-Za-z0-9_]*(?::?\?[^}]*|:?-)?\}$")
NOT_A_SECRET = {"", "true", "false"}  # e.g. LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN: "true" is a switch
INTERPOLATED = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)")
REQUIRED = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*):?\?")


# ---------------------------------------------------------------------------------------------------------
# readers
# ---------------------------------------------------------------------------------------------------------

class ComposeLoader(yaml.SafeLoader):
    """PyYAML's safe loader plus Compose's merge tags (!reset, !override), kept as plain values."""


def _tagged(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node, deep=True)
    return loader.construct_scalar(node)


ComposeLoader.add_constructor("!reset", _tagged)
ComposeLoader.add_constructor("!override", _tagged)


def load_compose(path: Path = COMPOSE) -> dict[str, Any]:
    data = yaml.load(path.read_text(), Loader=ComposeLoader)  # a SafeLoader subclass
    assert isinstance(data, dict), f"{path.name} is not a YAML mapping"
    return data


def environment(service: dict[str, Any]) -> dict[str, str | None]:
    """A service's environment as a dict (Compose allows a mapping or a list of KEY=VALUE / KEY)."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        pairs = (item.partition("=") for item in env)
        return {k: (v if sep else None) for k, sep, v in pairs}
    return {k: (None if v is None else str(v)) for k, v in env.items()}


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    buf = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if line.startswith("#") or (not line and not buf):
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        op, _, rest = buf.strip().partition(" ")
        out.append((op.upper(), rest.strip()))
        buf = ""
    assert not buf, f"{path.name} ends inside a continued line"
    return out


def args_of(path: Path, op: str) -> list[str]:
    return [rest for o, rest in instructions(path) if o == op]


def env_pairs(rest: str) -> list[tuple[str, str | None]]:
    """Key/value pairs of an ENV (KEY=VALUE ... or legacy KEY VALUE) or ARG (KEY[=default]) line."""
    tokens = shlex.split(rest)
    if tokens and "=" not in tokens[0] and len(tokens) > 1:  # legacy `ENV KEY value with spaces`
        return [(tokens[0], " ".join(tokens[1:]))]
    return [(k, v if sep else None) for k, sep, v in (t.partition("=") for t in tokens)]


def copy_sources(path: Path) -> list[str]:
    sources = []
    for rest in args_of(path, "COPY") + args_of(path, "ADD"):
        tokens = shlex.split(rest)
        flags = [t for t in tokens if t.startswith("--")]
        if any(f.startswith("--from") for f in flags):
            continue
        paths = [t for t in tokens if not t.startswith("--")]
        assert len(paths) >= 2, f"{path.name}: COPY {rest!r} has no destination"
        sources += paths[:-1]
    return sources


def exec_form(rest: str) -> list[str]:
    value = json.loads(rest)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), rest
    return value


def env_example() -> dict[str, tuple[str, bool]]:
    """NAME -> (value, commented out) for every `NAME=` or `# NAME=` line of docker/.env.example."""
    found: dict[str, tuple[str, bool]] = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        m = re.match(r"^(#\s*)?([A-Z][A-Z0-9_]*)=(.*)$", line.strip())
        if m:
            found.setdefault(m.group(2), (m.group(3).strip(), bool(m.group(1))))
    return found


def settings_aliases() -> dict[str, list[str]]:
    """Field name -> the environment variable names core.config.Settings reads for it."""
    from pydantic import AliasChoices, AliasPath

    from core.config import Settings

    fields: dict[str, list[str]] = {}
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias
        if isinstance(alias, str):
            names = [alias]
        elif isinstance(alias, AliasChoices):
            names = [c for c in alias.choices if isinstance(c, str)]
            names += [c.path[0] for c in alias.choices if isinstance(c, AliasPath) and isinstance(c.path[0], str)]
        else:
            names = [field.alias or name.upper()]
        fields[name] = names
    return fields


# ---------------------------------------------------------------------------------------------------------
# compose.yaml
# ---------------------------------------------------------------------------------------------------------

def test_compose_parses_and_has_the_services() -> None:
    services = load_compose()["services"]
    assert {"label-studio", "redis", "backend", "worker", "rq-dashboard"} <= set(services)
    assert services["rq-dashboard"].get("profiles") == ["dashboard"]
    for name in ("label-studio", "redis", "backend", "worker"):
        assert not services[name].get("profiles"), f"{name} must start with a plain `docker compose up`"
    assert services["label-studio"]["image"].startswith("heartexlabs/label-studio:")
    assert "1.23" in services["label-studio"]["image"]
    assert str(services["redis"]["image"]).startswith("redis:7")


def test_compose_builds_from_the_repo_root_with_files_that_exist() -> None:
    services = load_compose()["services"]
    for name, dockerfile in DOCKERFILES.items():
        build = services[name]["build"]
        assert build["context"] == "..", f"{name}: the build context must be the repository root"
        context = (COMPOSE.parent / build["context"]).resolve()
        assert context == ROOT
        assert (context / build["dockerfile"]).resolve() == dockerfile
        assert dockerfile.is_file()
        assert "container_name" not in services[name], f"{name}: container_name prevents --scale"
    for name, service in services.items():
        if "build" in service:
            assert (COMPOSE.parent / service["build"]["context"] / service["build"]["dockerfile"]).is_file()


def test_label_studio_may_call_the_backend_on_the_private_network() -> None:
    env = environment(load_compose()["services"]["label-studio"])
    assert env["SSRF_PROTECTION_ENABLED"] == "false"
    assert env["ML_BLOCK_LOCAL_IP"] == "false"
    assert env["LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN"] == "true"
    # the admin's token is the one the backend and the worker use
    assert re.fullmatch(r"\$\{LABEL_STUDIO_API_KEY\b.*\}", env["LABEL_STUDIO_USER_TOKEN"])


def test_worker_reserves_a_gpu_and_the_cpu_override_drops_it() -> None:
    worker = load_compose()["services"]["worker"]
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert "ports" not in worker, "published ports would clash under --scale"
    override = load_compose(COMPOSE_CPU)["services"]["worker"]
    assert override["deploy"]["resources"]["reservations"]["devices"] == []
    assert "!reset" in COMPOSE_CPU.read_text()


def test_volumes_persist_label_studio_redis_and_shared_models() -> None:
    compose = load_compose()
    services = compose["services"]
    declared = set(compose["volumes"])
    assert {"label-studio-data", "redis-data", "models"} <= declared
    assert "label-studio-data:/label-studio/data" in services["label-studio"]["volumes"]
    assert "redis-data:/data" in services["redis"]["volumes"]
    assert "--appendonly" in services["redis"]["command"]
    for name in ("backend", "worker"):
        model_dir = environment(services[name])["MODEL_DIR"]
        assert f"models:{model_dir}" in services[name]["volumes"], f"{name}: MODEL_DIR must be the shared volume"
    for service in services.values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            assert source in declared or source.startswith((".", "/")), f"undeclared volume {source}"


def test_compose_sets_no_secret_value() -> None:
    compose = load_compose()
    for name, service in compose["services"].items():
        build = service.get("build") or {}
        pairs = list(environment(service).items())
        if isinstance(build, dict):
            args = build.get("args") or {}
            pairs += list(args.items()) if isinstance(args, dict) else [a.partition("=")[::2] for a in args]
        for key, value in pairs:
            if SECRET_KEY.search(key.upper()) and value is not None and value.lower() not in NOT_A_SECRET:
                assert VAR_ONLY.match(value), f"{name}: {key} must come from a variable (${{...}}), not {value!r}"
        assert "env_file" not in service or all(".example" not in str(f) for f in service["env_file"])


def test_backend_and_worker_get_only_settings_that_exist_and_all_of_them() -> None:
    fields = settings_aliases()
    aliases = {a for names in fields.values() for a in names}
    services = load_compose()["services"]
    envs = {name: environment(services[name]) for name in ("backend", "worker")}
    assert envs["backend"] == envs["worker"], "the backend and the worker must read the same settings"
    for key in envs["backend"]:
        assert key in aliases or key.startswith("LSAL_DEFAULTS__"), \
            f"{key} is passed to the backend/worker but core.config.Settings reads no such variable"
    missing = [names[0] for names in fields.values() if not set(names) & set(envs["backend"])]
    assert not missing, f"settings compose.yaml does not pass to the backend and worker: {missing}"
    assert envs["backend"]["LABEL_STUDIO_URL"].endswith("http://label-studio:8080}")
    assert envs["backend"]["REDIS_URL"].endswith("redis://redis:6379/0}")


def test_every_variable_is_documented_in_env_example() -> None:
    documented = env_example()
    text = COMPOSE.read_text()
    used = set(INTERPOLATED.findall(text))
    for service in load_compose()["services"].values():
        used |= {k for k, v in environment(service).items() if v is None}  # passed on from .env
    assert not used - set(documented), f"not in docker/.env.example: {sorted(used - set(documented))}"
    # every Settings variable the services read is explained there (MODEL_DIR is fixed by compose.yaml)
    example_text = ENV_EXAMPLE.read_text()
    for key in environment(load_compose()["services"]["backend"]):
        assert re.search(rf"\b{key}\b", example_text), f"{key} is not documented in docker/.env.example"
    # required values are uncommented (and empty unless harmless), so `cp .env.example .env` shows them
    for key in set(REQUIRED.findall(text)):
        assert key in documented and not documented[key][1], f"{key} is required: list it uncommented"
    for key, (value, commented) in documented.items():
        if SECRET_KEY.search(key) and not commented:
            assert value == "", f".env.example must not hold a value for {key}"


def test_docker_readme_names_every_variable() -> None:
    readme = (DOCKER / "README.md").read_text()
    for key in env_example():
        assert key in readme, f"docker/README.md does not mention {key}"
    assert "http://backend:9090" in readme and "LSAL_SECRET" in readme and "--scale worker=" in readme


def test_env_is_ignored_by_git() -> None:
    result = subprocess.run(["git", "check-ignore", "-q", "docker/.env"], cwd=ROOT, check=False)
    assert result.returncode == 0, "docker/.env (the real secrets) must be ignored by git"


# ---------------------------------------------------------------------------------------------------------
# Dockerfiles
# ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_dockerfile_copies_files_that_exist_and_are_not_ignored(name: str) -> None:
    path = DOCKERFILES[name]
    sources = copy_sources(path)
    assert sources, f"{path.name} copies nothing"
    ignore = path.with_name(path.name + ".dockerignore")
    allowed = {line.strip()[1:].rstrip("/") for line in ignore.read_text().splitlines()
               if line.strip().startswith("!")}
    for src in sources:
        assert (ROOT / src).exists(), f"{path.name}: COPY {src} does not exist in the repository"
        assert src.rstrip("/") in allowed, f"{ignore.name} excludes {src}, which {path.name} copies"
    for package in tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"][
            "include"]:
        top = package.rstrip("*")
        assert top in sources, f"{path.name} must copy the package {top!r} that pyproject installs"


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_dockerfile_command_user_and_healthcheck(name: str) -> None:
    path = DOCKERFILES[name]
    cmds = args_of(path, "CMD")
    assert cmds and exec_form(cmds[-1]) == COMMANDS[name]
    assert not args_of(path, "ENTRYPOINT"), "an ENTRYPOINT would change what CMD runs"
    users = args_of(path, "USER")
    assert users, f"{path.name} has no USER"
    assert users[-1].split(":")[0] not in {"root", "0"}, f"{path.name} runs as root"
    ops = [op for op, _ in instructions(path)]
    assert ops.index("USER") > max(i for i, op in enumerate(ops) if op == "RUN"), "USER must follow every RUN"
    checks = args_of(path, "HEALTHCHECK")
    assert len(checks) == 1 and checks[0].upper() != "NONE"
    check = exec_form(checks[0][checks[0].index("CMD") + 3:].strip())
    if name == "backend":
        assert check[:2] == ["python", "-c"] and "http://127.0.0.1:9090/health" in check[2]
        assert "9090" in args_of(path, "EXPOSE")
        compile(check[2], "<healthcheck>", "exec")
    else:
        assert check == ["python", "/opt/lsal/worker_healthcheck.py"]
        assert "docker/worker_healthcheck.py /opt/lsal/worker_healthcheck.py" in args_of(path, "COPY")


def test_base_images() -> None:
    backend = instructions(DOCKERFILES["backend"])
    worker = instructions(DOCKERFILES["worker"])
    backend_args = dict(p for op, rest in backend if op == "ARG" for p in env_pairs(rest))
    worker_args = dict(p for op, rest in worker if op == "ARG" for p in env_pairs(rest))
    assert backend_args["PYTHON_IMAGE"].startswith("python:3.11-slim")
    assert re.fullmatch(r"pytorch/pytorch:\d+\.\d+\.\d+-cuda\d+\.\d+-cudnn\d+-runtime", worker_args["BASE_IMAGE"])
    assert "--index-url" in " ".join(args_of(DOCKERFILES["backend"], "RUN"))  # CPU wheels of torch
    setup = (ROOT / ".ci" / "setup").read_text()
    assert f"torch=={backend_args['TORCH_VERSION']}" in setup
    assert f"torchvision=={backend_args['TORCHVISION_VERSION']}" in setup


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_dockerfile_bakes_in_no_secret(name: str) -> None:
    for op, rest in instructions(DOCKERFILES[name]):
        if op in {"ENV", "ARG"}:
            for key, value in env_pairs(rest):
                secret = SECRET_KEY.search(key.upper()) and value and value.lower() not in NOT_A_SECRET
                assert not secret, f"{op} {key} sets a secret in the image"
        if op == "RUN":
            assert not re.search(r"LSAL_SECRET=|API_KEY=|TOKEN=", rest), "a RUN line sets a secret"


# ---------------------------------------------------------------------------------------------------------
# the commands exist in the real CLI
# ---------------------------------------------------------------------------------------------------------

def test_console_script_is_lsal() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["lsal"] == "cli.main:app"


def test_cli_accepts_the_images_commands(monkeypatch: pytest.MonkeyPatch) -> None:
    import uvicorn
    from typer.testing import CliRunner

    import cli.service
    from cli.main import app

    runner = CliRunner()
    for command in COMMANDS.values():
        result = runner.invoke(app, [*command[1:], "--help"])
        assert result.exit_code == 0, f"`{' '.join(command)} --help` fails: {result.output}"

    served: dict[str, Any] = {}
    monkeypatch.setattr(uvicorn, "run", lambda target, **kw: served.update(target=target, **kw))
    result = runner.invoke(app, COMMANDS["backend"][1:])
    assert result.exit_code == 0, result.output
    assert served["target"] == "backend.asgi:app" and served["host"] == "0.0.0.0" and served["port"] == 9090

    worked: dict[str, Any] = {}
    monkeypatch.setattr(cli.service, "run_worker",
                        lambda settings, kind, **kw: worked.update(kind=kind, **kw) or True)
    result = runner.invoke(app, COMMANDS["worker"][1:])
    assert result.exit_code == 0, result.output
    assert worked["kind"] == "auto" and worked["burst"] is False  # auto: SimpleWorker on CUDA


# ---------------------------------------------------------------------------------------------------------
# the worker's health check
# ---------------------------------------------------------------------------------------------------------

def _healthcheck_module():
    spec = importlib.util.spec_from_file_location("lsal_worker_healthcheck", DOCKER / "worker_healthcheck.py")
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("env", [{}, {"REDIS_URL": "redis://a:1/0"}, {"LSAL_REDIS_URL": "redis://b:2/1"},
                                 {"REDIS_URL": "redis://a:1/0", "LSAL_REDIS_URL": "redis://b:2/1"},
                                 {"redis_url": "redis://c:3/2"}])
def test_healthcheck_reads_redis_url_as_settings_do(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    from core.config import Settings

    for key in list(os.environ):
        if key.lower() in {"redis_url", "lsal_redis_url"}:
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert _healthcheck_module().redis_url(dict(os.environ)) == Settings().redis_url


def test_healthcheck_against_redis(redis_url: str) -> None:
    from redis import Redis
    from rq import Worker

    hc = _healthcheck_module()
    healthy, detail = hc.check("redis://127.0.0.1:1/0")
    assert not healthy and "does not answer" in detail and "127.0.0.1:1/0" not in detail
    healthy, detail = hc.check(redis_url)
    assert not healthy and "no live RQ worker" in detail

    with Redis.from_url(redis_url) as connection:
        other = Worker(["lsal"], connection=connection, name="elsewhere")
        other.hostname = "another-container"
        other.register_birth()
        assert not hc.check(redis_url)[0], "a worker of another container does not make this one healthy"
        mine = Worker(["lsal"], connection=connection, name="here")
        assert mine.hostname == socket.gethostname()
        mine.register_birth()
        try:
            healthy, detail = hc.check(redis_url)
            assert healthy and "here" in detail and "lsal" in detail
        finally:
            mine.register_death()
            other.register_death()
        assert not hc.check(redis_url)[0]


# ---------------------------------------------------------------------------------------------------------
# with Docker's CLI and its Compose plugin (not on every machine): Compose itself accepts the files
# ---------------------------------------------------------------------------------------------------------

def test_docker_compose_config_accepts_the_files(tmp_path: Path) -> None:
    docker = shutil.which("docker")
    if docker is None or subprocess.run([docker, "compose", "version"], capture_output=True, check=False).returncode != 0:
        pytest.skip("the docker CLI with its Compose plugin is not installed here")
    env = {**os.environ, "LABEL_STUDIO_USERNAME": "admin@example.com", "LABEL_STUDIO_PASSWORD": "x" * 12,
           "LABEL_STUDIO_API_KEY": "0" * 40, "LSAL_SECRET": "s" * 48}
    for files in (["-f", str(COMPOSE)], ["-f", str(COMPOSE), "-f", str(COMPOSE_CPU)]):
        result = subprocess.run([docker, "compose", *files, "--env-file", os.devnull, "config", "-q"],
                                check=False, capture_output=True, text=True, env=env, timeout=60)
        assert result.returncode == 0, result.stderr
