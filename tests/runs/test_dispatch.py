import uuid

import pytest

from runs.models import StageRun
from runs.services.dispatch import dispatch
from runs.services.runs import run_submit
from tests import factories as f
from tests.runs.reduced_plan import reduced_lm_plan

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
