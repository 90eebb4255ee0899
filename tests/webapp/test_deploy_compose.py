"""docker/compose.yml runs the control worker beside the scheduler, and no GPU worker takes
the control queue."""

import shlex

import yaml
from django.conf import settings


def _services() -> dict[str, dict]:
    return yaml.safe_load((settings.BASE_DIR / "docker" / "compose.yml").read_text())["services"]


def _queues(command: list[str]) -> set[str]:
    return set(command[command.index("-Q") + 1].split(","))


def test_compose_runs_a_control_worker_without_a_gpu_and_gpu_workers_without_its_queue():
    services = _services()
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
    # The GPU worker follows queues created later (runs/services/queues.py).
    assert any(arg.startswith("all-queues") for arg in workers["worker"])
