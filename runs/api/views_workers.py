"""``/api/workers/``: the registered Celery workers (host, devices, memory, version, heartbeat,
online / lost / stopped) and the queues each consumes (of those your teams may use). Read-only: staff manage queues (pause, concurrency, which teams may use
them) in the Django admin (/admin/runs/queue/); workers are started with ``-Q <queues>`` or
as ``all-queues@<host>`` (every queue, see runs/services/queues.py)."""

from __future__ import annotations

from rest_framework.generics import ListAPIView

from runs.api import serializers as s
from runs.models import Worker
from runs.selectors.workers import worker_list


class WorkerList(ListAPIView):
    serializer_class = s.WorkerOut

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # schema generation: no user
            return Worker.objects.none()
        return worker_list(user=self.request.user)
