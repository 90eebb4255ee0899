"""Reads over many runs in one request, for the compare page, the runs list and scripts:
every series line of up to 50 runs x 20 keys (GET /api/series/), and the compare page's run
details with their series keys (GET /api/ui/compare/).

Visibility: a run the caller may not see is answered exactly like one that does not exist,
and neither fails the request: both are left out and listed in ``missing`` (a shared compare
link keeps working when one of its runs is deleted). Bounds are a 400 naming the field."""

from __future__ import annotations

import orjson
from drf_spectacular.utils import extend_schema
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.utils.encoders import JSONEncoder
from rest_framework.views import APIView

from runs.api import serializers as s
from runs.selectors.runs import run_list
from runs.selectors.series import bulk_max_points, series_bulk, series_keys_many


class OrjsonRenderer(JSONRenderer):
    """JSON by orjson: a bulk answer is up to a million numbers, which json.dumps takes ~25x
    longer to write (benchmarks/README.md "## Compare"). The same JSON as DRF's renderer,
    whose encoder takes what orjson does not know."""

    def render(self, data, accepted_media_type=None, renderer_context=None) -> bytes:
        return b"" if data is None else orjson.dumps(data, default=JSONEncoder().default)


class SeriesBulk(APIView):
    """Per run and key the line GET /api/runs/{id}/series/ answers, downsampled alike."""

    renderer_classes = [OrjsonRenderer]

    @extend_schema(
        operation_id="series_bulk", parameters=[s.SeriesBulkQuery], responses={200: s.SeriesBulkOut}
    )
    def get(self, request):
        q = s.SeriesBulkQuery(data=request.GET)
        q.is_valid(raise_exception=True)
        v = q.validated_data
        n = bulk_max_points(runs=len(v["runs"]), keys=len(v["keys"]), asked=v["max_points"])
        answer = series_bulk(
            user=request.user, run_ids=v["runs"], keys=v["keys"], max_points=n,
            lineage=v["lineage"],
        )  # fmt: skip
        return Response({**answer, "max_points": n})


class UiCompareRuns(APIView):
    """The runs the compare page draws: each run's detail (stages, plan or config, analysis)
    and its series keys."""

    @extend_schema(
        operation_id="ui_compare_runs",
        parameters=[s.CompareRunsQuery],
        responses={200: s.CompareRunsOut},
    )
    def get(self, request):
        q = s.CompareRunsQuery(data=request.GET)
        q.is_valid(raise_exception=True)
        ids = q.validated_data["runs"]
        runs = {r.pk: r for r in run_list(user=request.user).filter(pk__in=ids)}
        keys = series_keys_many(user=request.user, run_ids=list(runs))
        rows = [{**s.RunDetailOut(runs[i]).data, "keys": keys[i]} for i in ids if i in runs]
        return Response({"runs": rows, "missing": [i for i in ids if i not in runs]})
