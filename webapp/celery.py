"""The Celery app. Workers: ``celery -A webapp worker -Q <queue> --concurrency 1``; one named
``-n all-queues-<x>@%h`` also consumes queues created later (runs/services/queues.py)."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")

app = Celery("stagewise")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
