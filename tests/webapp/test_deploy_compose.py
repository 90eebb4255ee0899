"""docker/compose.yml works from nothing: it validates against the Compose file schema
(vendored from docker/compose, ``compose_spec.json``) once its variables are interpolated as
``docker compose`` does; a one-shot bootstrap runs after healthy Postgres and Redis and before
everything else; every host and secret comes from the environment; the control worker runs
beside the scheduler and no GPU worker takes its queue. The Dockerfile passes hadolint."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml
from django.conf import settings

DOCKER = settings.BASE_DIR / "docker"
_VAR = re.compile(r"\$\{(?P<name>\w+)(?:(?P<op>:?[-?])(?P<arg>(?:[^{}]|\{[^{}]*\})*))?\}")


def _interpolate(value, env: dict[str, str]):
    """Compose's ${VAR}, ${VAR:-default} and ${VAR:?error} (nested defaults allowed)."""
    if isinstance(value, dict):
        return {k: _interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def one(m: re.Match) -> str:
        name, op, arg = m.group("name"), m.group("op"), m.group("arg")
        if env.get(name):
            return env[name]
        if op and op.endswith("?"):
            raise KeyError(f"{name} is required: {arg}")
        return _interpolate(arg or "", env)

    out = _VAR.sub(one, value)
    return int(out) if out.isdigit() and out != value else out


def _env_example() -> dict[str, str]:
    lines = (DOCKER / ".env.example").read_text().splitlines()
    pairs = [ln.split("=", 1) for ln in lines if ln and not ln.startswith("#") and "=" in ln]
    return {k: v for k, v in pairs}


def _raw() -> dict:
    return yaml.safe_load((DOCKER / "compose.yml").read_text())


def _compose() -> dict:
    return _interpolate(_raw(), _env_example())


def test_compose_validates_against_the_compose_schema_with_the_example_env():
    schema = json.loads((Path(__file__).parent / "compose_spec.json").read_text())
    validator = jsonschema.Draft201909Validator(schema)
    validator.validate(_compose())
    broken = _compose()
    broken["services"]["web"]["depends_on"]["bootstrap"]["condition"] = "service_ready"
    assert not validator.is_valid(broken)


def test_every_required_variable_is_in_the_example_env():
    required = set(re.findall(r"\$\{(\w+):\?", (DOCKER / "compose.yml").read_text()))
    assert required and required <= set(_env_example())
    with pytest.raises(KeyError, match="POSTGRES_PASSWORD"):
        _interpolate(_raw(), {})


def test_bootstrap_runs_once_after_healthy_stores_and_before_the_rest():
    services = _compose()["services"]
    assert shlex.split(services["bootstrap"]["command"]) == ["python", "manage.py", "bootstrap"]
    assert services["bootstrap"]["restart"] == "no"
    assert services["bootstrap"]["depends_on"] == {
        "postgres": {"condition": "service_healthy"},
        "redis": {"condition": "service_healthy"},
    }
    for name in ("postgres", "redis", "web"):
        assert services[name]["healthcheck"]["test"], name
    app = [n for n, s in services.items() if s.get("build") and n != "bootstrap"]
    assert set(app) == {"web", "scheduler", "control", "worker", "worker-gpu"}
    for name in app:
        want = {"bootstrap": {"condition": "service_completed_successfully"}}
        assert services[name]["depends_on"] == want, name
        assert services[name]["volumes"] == ["stagewise-data:/data"], name


def test_hosts_and_secrets_come_from_the_environment():
    raw = _raw()["x-app"]["environment"]
    for key in ("DATABASE_URL", "REDIS_URL", "SECRET_KEY", "ALLOWED_HOSTS"):
        assert raw[key].startswith("${" + key), key
    env = {
        **_env_example(),
        "DATABASE_URL": "postgres://u:p@db.internal/s",
        "STAGEWISE_DATA": "/mnt/x",
    }
    services = _interpolate(_raw(), env)["services"]
    assert services["worker"]["environment"]["DATABASE_URL"] == "postgres://u:p@db.internal/s"
    assert services["worker"]["volumes"] == ["/mnt/x:/data"]


def _queues(command: list[str]) -> set[str]:
    return set(command[command.index("-Q") + 1].split(","))


def test_compose_runs_a_control_worker_without_a_gpu_and_gpu_workers_without_its_queue():
    services = _compose()["services"]
    commands = {name: shlex.split(s.get("command", "")) for name, s in services.items()}
    assert commands["scheduler"][:4] == ["celery", "-A", "webapp", "beat"]
    workers = {
        name: c for name, c in commands.items() if c[:4] == ["celery", "-A", "webapp", "worker"]
    }
    control = settings.STAGEWISE_CONTROL_QUEUE
    controls = [name for name, c in workers.items() if control in _queues(c)]
    assert controls == ["control"]
    assert _queues(workers["control"]) == {control}
    assert "deploy" not in services["control"]
    assert "--concurrency" in workers["control"] and "solo" in workers["control"]
    # The CPU worker follows queues created later (runs/services/queues.py).
    assert any(arg.startswith("all-queues") for arg in workers["worker"])
    gpu = services["worker-gpu"]
    assert gpu["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    assert "cu" in gpu["build"]["args"]["TORCH_INDEX"]


def test_the_dockerfile_passes_hadolint():
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    r = subprocess.run(
        [hadolint, "--no-color", str(DOCKER / "Dockerfile")], capture_output=True, text=True
    )
    assert r.returncode == 0, r.stdout + r.stderr
