"""The Celery app. Training workers: ``celery -A webapp worker -Q <queue> --concurrency 1``;
one named ``-n all-queues-<x>@%h`` also consumes queues created later (runs/services/queues.py).
The scheduler's tasks go to the control queue (``STAGEWISE_CONTROL_QUEUE``, see
``CELERY_TASK_ROUTES`` in webapp/settings.py), which only the control worker consumes:
``celery -A webapp worker -Q stagewise-control --concurrency 1 -P solo -n control@%h``."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")

app = Celery("stagewise")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
