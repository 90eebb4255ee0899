"""Datasets: ``/api/datasets/`` (list your teams' datasets; POST a multipart upload: a new
dataset, or the next version of the team's dataset of that name), ``/api/datasets/{id}/``
(GET with its versions, DELETE with all of them), ``.../versions/{version}/`` (GET, DELETE),
``.../preview/`` (the first records) and ``.../download/`` (the stored file, streamed).

Uploads are checked by runs/services/datasets.py exactly as on the datasets page: every
record must hold the fields training will read. A version is deleted only while no run uses
it (409 naming the runs)."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import FileResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.exceptions import NotFound
from rest_framework.generics import ListAPIView
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView

from runs.api import serializers as s
from runs.api.permissions import require_write, team_for_write
from runs.api.streaming import stream_async
from runs.input_checks import text_value
from runs.models import Dataset, DatasetVersion
from runs.selectors.datasets import dataset_list
from runs.services.datasets import (
    NAME_MAX,
    DatasetUploadError,
    dataset_preview,
    dataset_version_create,
    max_upload_bytes,
)
from runs.services.datasets_api import (
    CONTENT_TYPES,
    DatasetInUse,
    dataset_delete,
    dataset_version_delete,
    download_filename,
    runs_using_versions,
    upload_filename,
)
from runs.services.stored_files import dataset_file

CHUNK = 256 * 1024
SLUG_MAX = 100
CONFLICT = OpenApiResponse(s.ConflictOut, description="runs use it: nothing was deleted")
UNREADABLE = OpenApiResponse(s.ErrorOut, description="the version's file cannot be read here")
TOO_LARGE = OpenApiResponse(s.ErrorOut, description="the file is over STAGEWISE_MAX_UPLOAD_BYTES")


def _dataset(request, dataset_id: int) -> Dataset:
    dataset = dataset_list(user=request.user).filter(pk=dataset_id).first()
    if dataset is None:
        raise NotFound(f"dataset {dataset_id} not found")
    return dataset


def _version(request, dataset_id: int, version: int) -> DatasetVersion:
    dataset = _dataset(request, dataset_id)
    for v in dataset.versions.all():
        if v.version == version:
            return v
    raise NotFound(f"dataset {dataset_id} has no version {version}")


def _unreadable(exc: BaseException) -> Response:
    return Response(
        {"detail": f"cannot read the version's file on the server: {exc}"},
        status=status.HTTP_409_CONFLICT,
    )


def _delete(request, team_id: int, delete: Callable[[], None]) -> Response:
    """A member's DELETE: 204, or 409 naming the runs that use it (nothing deleted)."""
    require_write(request, team_id)
    try:
        delete()
    except DatasetInUse as exc:
        return Response({"detail": str(exc), "runs": exc.runs}, status=status.HTTP_409_CONFLICT)
    return Response(status=status.HTTP_204_NO_CONTENT)


def _stored(request, version: DatasetVersion, created: bool) -> Response:
    """201 with the dataset and the new version, or 200 with the version of the same bytes."""
    dataset = dataset_list(user=request.user).get(pk=version.dataset_id)
    body = {
        "dataset": s.DatasetOut(dataset).data,
        "version": s.DatasetVersionOut(version).data,
        "created": created,
    }
    return Response(body, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)


def upload_fields(data: Mapping) -> dict[str, str]:
    """The record fields an upload names (form values), with their defaults: what
    ``dataset_version_create`` checks every record for."""
    return {
        "text_field": data.get("text_field") or "text",
        "prompt_field": data.get("prompt_field") or "",
        "response_field": data.get("response_field") or "",
    }


def _too_large(upload) -> Response | None:
    limit = max_upload_bytes()
    if upload.size <= limit:
        return None
    return Response(
        {"detail": f"the file is larger than {limit / 1024 / 1024:g} MB, the upload limit"},
        status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
    )


LIST_PARAMETERS = [
    OpenApiParameter(
        "team", {"type": "string", "maxLength": SLUG_MAX}, description="only this team's (a slug)"
    ),
    OpenApiParameter(
        "name", {"type": "string", "maxLength": NAME_MAX}, description="the dataset of this name"
    ),
]


class DatasetListCreate(ListAPIView):
    serializer_class = s.DatasetOut
    parser_classes = [MultiPartParser, FormParser]

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return Dataset.objects.none()
        qs = dataset_list(user=self.request.user)
        team = self.request.GET.get("team")
        if team:
            qs = qs.filter(team__slug=text_value(team, "team", max_length=SLUG_MAX))
        name = self.request.GET.get("name")
        if name:
            qs = qs.filter(name=text_value(name, "name", max_length=NAME_MAX))
        return qs

    @extend_schema(parameters=LIST_PARAMETERS)
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    @extend_schema(
        request={"multipart/form-data": s.DatasetUploadIn},
        responses={
            201: OpenApiResponse(s.DatasetUploadOut, description="a new version was stored"),
            200: OpenApiResponse(
                s.DatasetUploadOut, description="the same bytes were uploaded before: that version"
            ),
            413: TOO_LARGE,
        },
    )
    def post(self, request):
        data = s.DatasetUploadIn(data=request.data)
        data.is_valid(raise_exception=True)
        v = data.validated_data
        upload = v["file"]
        if (refused := _too_large(upload)) is not None:
            return refused
        team = team_for_write(request, v.get("team"))
        try:
            version, created = dataset_version_create(
                team=team,
                name=v.get("name") or upload.name,
                upload=upload,
                filename=upload_filename(upload.name, v.get("format")),
                user=request.user,
                **upload_fields(v),
            )
        except DatasetUploadError as exc:
            raise DjangoValidationError({exc.field: [str(exc)]}) from None
        return _stored(request, version, created)


class DatasetDetail(APIView):
    @extend_schema(responses=s.DatasetDetailOut)
    def get(self, request, dataset_id: int):
        dataset = _dataset(request, dataset_id)
        used = runs_using_versions(dataset.versions.all())
        return Response(s.DatasetDetailOut(dataset, context={"used_by": used}).data)

    @extend_schema(request=None, responses={204: None, 409: CONFLICT})
    def delete(self, request, dataset_id: int):
        dataset = _dataset(request, dataset_id)
        return _delete(request, dataset.team_id, lambda: dataset_delete(dataset=dataset))


class DatasetVersionDetail(APIView):
    @extend_schema(responses=s.DatasetVersionDetailOut)
    def get(self, request, dataset_id: int, version: int):
        v = _version(request, dataset_id, version)
        used = runs_using_versions([v])
        return Response(s.DatasetVersionDetailOut(v, context={"used_by": used}).data)

    @extend_schema(request=None, responses={204: None, 409: CONFLICT})
    def delete(self, request, dataset_id: int, version: int):
        v = _version(request, dataset_id, version)
        return _delete(request, v.dataset.team_id, lambda: dataset_version_delete(version=v))


class DatasetVersionPreview(APIView):
    @extend_schema(
        parameters=[s.PreviewQuery], responses={200: s.DatasetPreviewOut, 409: UNREADABLE}
    )
    def get(self, request, dataset_id: int, version: int):
        v = _version(request, dataset_id, version)
        q = s.PreviewQuery(data=request.GET)
        q.is_valid(raise_exception=True)
        try:
            records = dataset_preview(v, limit=q.validated_data["limit"])
        except Exception as exc:  # a missing or damaged file is a message, never a 500
            return _unreadable(exc)
        return Response(
            {"dataset": v.dataset_id, "version": v.version, "format": v.format, "records": records}
        )


class DatasetVersionDownload(APIView):
    """The stored file as uploaded (streamed; Content-Disposition names it
    ``<dataset>-v<version>.<ext>``)."""

    @extend_schema(
        responses={
            (200, "text/plain"): OpenApiResponse(OpenApiTypes.BINARY, description="a .txt version"),
            (200, "application/jsonl"): OpenApiResponse(
                OpenApiTypes.BINARY, description="a .jsonl version"
            ),
            (200, "application/vnd.apache.parquet"): OpenApiResponse(
                OpenApiTypes.BINARY, description="a .parquet version"
            ),
            409: UNREADABLE,
        }
    )
    def get(self, request, dataset_id: int, version: int):
        v = _version(request, dataset_id, version)
        try:
            fh = open(dataset_file(v), "rb")  # noqa: SIM115 - closed with the response
        except OSError as exc:
            return _unreadable(exc)
        response = FileResponse(
            fh,
            as_attachment=True,
            filename=download_filename(v),
            content_type=CONTENT_TYPES.get(v.format, "application/octet-stream"),
        )
        # Read in the request's thread, chunk by chunk: under ASGI Django would otherwise read
        # a plain file iterator whole before sending it.
        response.streaming_content = stream_async(iter(lambda: fh.read(CHUNK), b""))
        return response
