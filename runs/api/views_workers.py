"""``/api/workers/``: the Celery workers that answer now and the queues each consumes (of those
your teams may use). Read-only: staff manage queues (pause, concurrency, which teams may use
them) in the Django admin (/admin/runs/queue/); workers are started with ``-Q <queues>`` or
as ``all-queues@<host>`` (every queue, see runs/services/queues.py)."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.exceptions import APIException
from rest_framework.generics import ListAPIView

from runs.api import serializers as s
from runs.models import Queue
from runs.selectors.workers import BrokerUnavailable, worker_list


class WorkersUnavailable(APIException):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_code = "workers_unavailable"


class WorkerList(ListAPIView):
    serializer_class = s.WorkerOut

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # schema generation: no user, no broker
            return Queue.objects.none()
        try:
            return worker_list(user=self.request.user)
        except BrokerUnavailable as exc:
            raise WorkersUnavailable(str(exc)) from None

    @extend_schema(
        responses={
            200: s.WorkerOut(many=True),
            503: OpenApiResponse(s.ErrorOut, description="the broker cannot be reached now"),
        }
    )
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)
