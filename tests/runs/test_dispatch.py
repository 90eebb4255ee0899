import uuid

import pytest
from django.conf import settings
from django.core.exceptions import ValidationError
from django.urls import reverse

from runs.models import Queue, StageRun
from runs.services.dispatch import dispatch
from runs.services.queues import (
    queue_consumers_add,
    queue_consumers_sync,
    queues_with_consumers,
    training_queue_names,
)
from runs.services.runs import run_submit
from tests import factories as f
from tests.runs.reduced_plan import reduced_lm_plan
from tests.workers import Workers, wait_for

pytestmark = pytest.mark.django_db


def _queue(**kw):
    return f.QueueFactory(name=f"test-{uuid.uuid4().hex[:8]}", **kw)


def _submit(team, queue, priority=0):
    return run_submit(team=team, queue=queue, plan=reduced_lm_plan(), priority=priority)


def _running_runs(queue):
    return set(
        StageRun.objects.filter(run__queue=queue, state="running").values_list("run_id", flat=True)
    )


def test_run_cannot_start_on_paused_queue(team):
    queue = _queue(paused=True, max_concurrent=3)
    _submit(team, queue)
    assert dispatch() == 0
    assert _running_runs(queue) == set()
    queue.paused = False
    queue.save()
    assert dispatch() == 1


def test_max_concurrent_is_honoured(team):
    queue = _queue(max_concurrent=2)
    runs = [_submit(team, queue) for _ in range(3)]
    dispatch()
    dispatch()  # a second pass must not exceed the limit either
    assert len(_running_runs(queue)) == 2
    assert _running_runs(queue) == {runs[0].pk, runs[1].pk}  # oldest first at equal priority


def test_higher_priority_run_starts_first(team):
    queue = _queue(max_concurrent=1)
    low = _submit(team, queue, priority=0)
    high = _submit(team, queue, priority=5)
    dispatch()
    assert _running_runs(queue) == {high.pk}
    assert StageRun.objects.get(run=low, stage_index=0).state == "queued"


def test_higher_priority_queue_is_served_first(
    team, monkeypatch, django_capture_on_commit_callbacks
):
    sent = []
    monkeypatch.setattr("runs.services.dispatch._send", lambda sr, token, q: sent.append(q))
    low_q, high_q = _queue(priority=0), _queue(priority=10)
    _submit(team, low_q)
    _submit(team, high_q)
    with django_capture_on_commit_callbacks(execute=True):
        dispatch()
    assert sent == [high_q.name, low_q.name]


def test_team_not_allowed_on_queue_is_refused(team):
    from runs.services.errors import QueueAccessDenied

    other = f.TeamFactory()
    queue = _queue()
    queue.allowed_teams.add(other)
    with pytest.raises(QueueAccessDenied, match="may not use queue"):
        _submit(team, queue)


def test_dispatch_skips_runs_of_teams_removed_from_the_queue(team):
    queue = _queue()
    _submit(team, queue)
    queue.allowed_teams.add(f.TeamFactory())
    assert dispatch() == 0


# -- which workers consume which queues


@pytest.fixture
def workers(tmp_path):
    w = Workers(tmp_path)
    yield w
    w.stop_all()


def _consumed(*nodes: str) -> dict[str, set[str]]:
    """Active queues per worker node, straight from the workers (asking again, a few times,
    until each of ``nodes`` has answered)."""
    from webapp.celery import app

    for _ in range(5):
        replies = app.control.inspect(timeout=1).active_queues() or {}
        if set(nodes) <= set(replies):
            break
    return {node: {q["name"] for q in queues} for node, queues in replies.items()}


def _start(workers: Workers, queue: str, name: str) -> str:
    workers.start(queue, name)
    nodes: list[str] = []

    def answered() -> bool:
        nodes[:] = [n for n in _consumed() if n.startswith(f"{name}@")]
        return bool(nodes)

    wait_for(answered, 60, f"worker {name} to answer", workers.logs)
    return nodes[0]


@pytest.mark.slow
def test_a_new_queue_is_consumed_by_all_queue_workers_and_not_by_dedicated_ones(
    workers, django_capture_on_commit_callbacks
):
    first = _queue()
    tag = uuid.uuid4().hex[:6]
    every = _start(workers, first.name, f"all-queues-{tag}")
    gpu = _start(workers, first.name, f"gpu-{tag}")
    with django_capture_on_commit_callbacks(execute=True):
        later = _queue()  # as the admin or `manage.py shell` would: a plain save
    wait_for(lambda: later.name in _consumed(every)[every], 10, "the new queue", workers.logs)
    with django_capture_on_commit_callbacks(execute=True):
        later.name = f"renamed-{tag}"
        later.save()
    wait_for(lambda: later.name in _consumed(every)[every], 10, "the renamed queue", workers.logs)
    assert _consumed(gpu)[gpu] == {first.name}


@pytest.mark.slow
def test_sync_adds_the_queues_an_all_queue_worker_missed_and_admin_shows_it(workers, admin_client):
    first = _queue()
    tag = uuid.uuid4().hex[:6]
    every = _start(workers, first.name, f"all-queues-{tag}")
    gpu = _start(workers, first.name, f"gpu-{tag}")
    # bulk_create sends no post_save: like a broadcast lost while the broker was away
    missed = Queue.objects.bulk_create([Queue(name=f"missed-{tag}")])[0]
    url = reverse("admin:runs_queue_changelist")
    assert queues_with_consumers() == {first.name}
    assert admin_client.get(url).content.decode().count("no worker listening") == 1

    assert queue_consumers_sync() == {every: [missed.name]}
    wait_for(lambda: missed.name in _consumed(every)[every], 10, "the missed queue", workers.logs)
    assert _consumed(gpu)[gpu] == {first.name}
    assert queues_with_consumers() == {first.name, missed.name}
    page = admin_client.get(url).content.decode()
    assert "no worker listening" not in page and page.count(">listening<") == 2
    assert queue_consumers_sync() == {}


# -- the control queue: the scheduler's tasks never wait behind a training stage


@pytest.fixture
def sent_to(monkeypatch):
    """Task name → the queue it was published to (nothing reaches the broker)."""
    from webapp.celery import app

    sent: dict[str, str] = {}

    def record(producer, name, message, queue=None, **options):
        sent[name] = queue.name

    monkeypatch.setattr(app.amqp, "send_task_message", record)
    return sent


def test_control_tasks_go_to_the_control_queue_and_a_stage_to_its_runs_queue(
    team, sent_to, django_capture_on_commit_callbacks
):
    import runs.tasks  # noqa: F401 - registers them, as a worker's autodiscovery does
    from webapp.celery import app

    control = settings.STAGEWISE_CONTROL_QUEUE
    ours = sorted(name for name in app.tasks if name.startswith("runs.tasks."))
    assert "runs.tasks.execute_stage_run" in ours and len(ours) > 1
    for entry in settings.CELERY_BEAT_SCHEDULE.values():  # as celery beat sends them
        app.tasks[entry["task"]].apply_async(**entry.get("options", {}))
    for name in ours:
        if name != "runs.tasks.execute_stage_run":
            app.tasks[name].apply_async()
    assert {sent_to.pop(name) for name in ours if name != "runs.tasks.execute_stage_run"} == {
        control
    }

    queue = _queue()
    with django_capture_on_commit_callbacks(execute=True):
        _submit(team, queue)
    assert sent_to == {"runs.tasks.execute_stage_run": queue.name}


def test_no_training_queue_takes_the_control_queues_name(admin_client, monkeypatch):
    from webapp.celery import app

    control = settings.STAGEWISE_CONTROL_QUEUE
    with pytest.raises(ValidationError, match="reserved for the control worker"):
        Queue(name=control).full_clean()
    page = admin_client.post(
        reverse("admin:runs_queue_add"), {"name": control, "priority": 0, "max_concurrent": 1}
    )
    assert page.status_code == 200
    assert "reserved for the control worker" in page.content.decode()
    assert not Queue.objects.filter(name=control).exists()

    # A row saved around the check is still never handed to the all-queue workers.
    asked = []
    monkeypatch.setattr(app.control, "add_consumer", lambda name, **kw: asked.append(name))
    Queue.objects.bulk_create([Queue(name=control)])
    assert control not in training_queue_names()
    queue_consumers_add(name=control)
    assert asked == []
