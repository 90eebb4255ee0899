"""The state changes a worker's stage goes through (runs.services.transitions, reached through
dispatch, leases and stages), and the queue access rule (runs.selectors.queues), without a
worker: dispatch, take the lease, end the stage, lose the lease."""

from __future__ import annotations

import uuid

import pytest
from django.utils import timezone

from runs.models import InvalidTransition, Run, StageRun, WorkerLease
from runs.selectors.queues import queue_allowed, queues_for_team, queues_for_teams
from runs.services.dispatch import dispatch, requeue_expired
from runs.services.leases import lease_acquire
from runs.services.runs import run_cancel, run_submit
from runs.services.stages import stage_canceled, stage_failed, stage_succeeded
from tests import factories as f
from tests.runs.reduced_plan import reduced_lm_plan

pytestmark = pytest.mark.django_db


def _queue(**kw):
    return f.QueueFactory(name=f"test-{uuid.uuid4().hex[:8]}", max_concurrent=5, **kw)


def _started(team, queue=None) -> StageRun:
    """A submitted run whose first stage a worker took."""
    run = run_submit(team=team, queue=queue or _queue(), plan=reduced_lm_plan())
    assert dispatch() == 1
    sr = run.stage_runs.get(stage_index=0)
    token = WorkerLease.objects.get(stage_run=sr).worker_id.removeprefix("dispatched:")
    taken = lease_acquire(stage_run_id=sr.pk, token=token, worker_id="w1")
    assert taken is not None
    return taken


def _states(run: Run) -> tuple[str, list[str]]:
    run.refresh_from_db()
    return run.state, list(run.stage_runs.order_by("stage_index").values_list("state", flat=True))


def _expire_leases() -> None:
    past = timezone.now() - timezone.timedelta(minutes=5)
    WorkerLease.objects.update(
        acquired_at=past, heartbeat_at=past, expires_at=past + timezone.timedelta(seconds=1)
    )


def test_dispatch_starts_the_stage_and_the_run_and_the_worker_stamps_started_at(team):
    sr = _started(team)
    assert (sr.state, sr.attempts) == ("running", 1)
    assert sr.started_at is not None
    state, stages = _states(sr.run)
    assert state == "running" and stages[0] == "running"
    assert sr.run.started_at is not None


def test_a_succeeded_stage_queues_the_next_and_the_last_one_ends_the_run(team):
    sr = _started(team)
    stage_succeeded(stage_run=sr, worker_id="w1")
    assert _states(sr.run) == ("running", ["succeeded", "queued", "pending"])
    assert not WorkerLease.objects.filter(stage_run=sr).exists()
    with pytest.raises(InvalidTransition, match="from succeeded to succeeded"):
        stage_succeeded(stage_run=sr, worker_id="w1")


def test_a_failed_stage_cancels_the_waiting_ones_and_fails_the_run(team):
    sr = _started(team)
    stage_failed(stage_run=sr, worker_id="w1", error="x" * 3000, traceback="tb")
    assert _states(sr.run) == ("failed", ["failed", "canceled", "canceled"])
    sr.refresh_from_db()
    assert len(sr.error) == len(sr.run.error) == 2000
    assert sr.traceback == "tb"


def test_a_stage_stopped_for_a_cancel_ends_canceled(team):
    sr = _started(team)
    run_cancel(run=sr.run)
    assert _states(sr.run) == ("canceled", ["running", "canceled", "canceled"])
    stage_canceled(stage_run=sr, worker_id="w1", step=3)
    assert _states(sr.run) == ("canceled", ["canceled"] * 3)
    with pytest.raises(InvalidTransition):
        run_cancel(run=sr.run)


def test_a_lost_lease_requeues_the_stage_or_cancels_it_with_its_run(team):
    queue = _queue()
    kept, canceled = _started(team, queue), _started(team, queue)
    run_cancel(run=canceled.run)
    _expire_leases()
    assert requeue_expired() == 2
    assert _states(kept.run) == ("running", ["queued", "pending", "pending"])
    assert _states(canceled.run) == ("canceled", ["canceled"] * 3)
    assert dispatch() == 1  # the requeued stage goes to the next worker
    kept.refresh_from_db()
    assert (kept.state, kept.attempts) == ("running", 2)


def test_a_queue_listing_teams_is_open_to_those_only(team):
    other, third = f.TeamFactory(), f.TeamFactory()
    open_q, listed = _queue(priority=1), _queue(priority=2)
    listed.allowed_teams.add(team, other)
    assert queue_allowed(open_q, third) and queue_allowed(listed, team)
    assert not queue_allowed(listed, third)
    assert list(queues_for_team(third).filter(pk__in=[open_q.pk, listed.pk])) == [open_q]
    mine = queues_for_teams([team.pk, other.pk]).filter(pk__in=[open_q.pk, listed.pk])
    assert list(mine) == [listed, open_q]  # once each, in dispatch order


def test_dispatch_starts_a_listed_teams_run_and_skips_the_others(team):
    other = f.TeamFactory()
    queue = _queue()
    queue.allowed_teams.add(team)
    mine = run_submit(team=team, queue=queue, plan=reduced_lm_plan())
    queue.allowed_teams.set([other])
    theirs = run_submit(team=other, queue=queue, plan=reduced_lm_plan())
    assert dispatch() == 1
    assert _states(theirs)[1][0] == "running"
    assert _states(mine)[1][0] == "queued"
