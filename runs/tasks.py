"""Celery tasks: thin wrappers that take ids and call the execution layer or services.

``execute_stage_run`` is sent to its run's queue (runs/services/dispatch.py). Every other task
here is a control task: list it in ``STAGEWISE_CONTROL_TASKS`` (webapp/settings.py) so it goes
to the control worker and never waits behind a training stage."""

from celery import shared_task

from runs.execution import registry, runner  # noqa: F401 - registry: the worker's signals
from runs.services import dispatch as dispatch_service
from runs.services import queues as queues_service
from runs.services import workers as workers_service


@shared_task(name="runs.tasks.execute_stage_run", ignore_result=True)
def execute_stage_run(stage_run_id: int, token: str) -> str:
    return runner.execute(stage_run_id, token)


@shared_task(name="runs.tasks.requeue_expired", ignore_result=True)
def requeue_expired() -> int:
    return dispatch_service.requeue_expired()


@shared_task(name="runs.tasks.dispatch_runs", ignore_result=True)
def dispatch_runs() -> int:
    return dispatch_service.dispatch()


@shared_task(name="runs.tasks.sync_queue_consumers", ignore_result=True)
def sync_queue_consumers() -> dict[str, list[str]]:
    return queues_service.queue_consumers_sync()


@shared_task(name="runs.tasks.workers_mark_lost", ignore_result=True)
def workers_mark_lost() -> int:
    return workers_service.workers_mark_lost()
