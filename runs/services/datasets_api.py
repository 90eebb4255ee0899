"""Datasets over the REST API, beside the upload checks in runs/services/datasets.py: which
runs use a version, and deleting a version or a whole dataset when no run uses it.

A run uses a version when its plan names it (``dataset:<name>@<version>``, recorded at submit
as a ``RunDatasetVersion``), or, for runs submitted before that record existed, when its plan
names the version's stored file (``file:<storage path>``)."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.db.models import ProtectedError, RestrictedError, TextField
from django.db.models.functions import Cast

from runs.models import Dataset, DatasetVersion, Run, RunDatasetVersion
from runs.services.datasets import FORMATS
from runs.services.errors import Conflict
from runs.services.stored_files import datasets_unstore_on_commit

log = logging.getLogger(__name__)

EXTENSIONS = {fmt: ext for ext, fmt in FORMATS.items()}
CONTENT_TYPES = {
    "text": "text/plain; charset=utf-8",
    "jsonl": "application/jsonl",
    "parquet": "application/vnd.apache.parquet",
}
SHOWN_RUNS = 20


class DatasetInUse(Conflict):
    """Runs use the version(s): nothing was deleted. ``runs`` holds their ids."""

    def __init__(self, what: str, runs: list[Run]):
        shown = ", ".join(f"#{r.pk} {r.name!r}" for r in runs[:SHOWN_RUNS])
        more = f" and {len(runs) - SHOWN_RUNS} more" if len(runs) > SHOWN_RUNS else ""
        super().__init__(f"{what} is used by runs {shown}{more}; delete those runs first")
        self.runs = [r.pk for r in runs]


def upload_filename(filename: str, fmt: str | None) -> str:
    """The name ``dataset_version_create`` reads the format from: with ``fmt`` given, the
    file's stem with that format's extension (``data.json`` as ``jsonl``: ``data.jsonl``)."""
    name = Path(filename or "upload").name or "upload"
    if not fmt:
        return name
    return f"{Path(name).stem or 'upload'}{EXTENSIONS[fmt]}"


def download_filename(version: DatasetVersion) -> str:
    return f"{version.dataset.name}-v{version.version}{EXTENSIONS.get(version.format, '')}"


def runs_using_versions(versions: Iterable[DatasetVersion]) -> dict[int, list[Run]]:
    """version id -> the runs that use it (oldest first); versions no run uses are absent."""
    versions = list(versions)
    if not versions:
        return {}
    out: dict[int, dict[int, Run]] = {}
    uses = (
        RunDatasetVersion.objects.filter(dataset_version__in=versions)
        .select_related("run")
        .order_by("run_id")
    )
    for use in uses:
        out.setdefault(use.dataset_version_id, {})[use.run_id] = use.run
    # Older runs name the stored file in their plan (same team only: no other team may read it).
    by_team: dict[int, list[DatasetVersion]] = {}
    for v in versions:
        by_team.setdefault(v.dataset.team_id, []).append(v)
    for team_id, team_versions in by_team.items():
        plans = Run.objects.filter(team_id=team_id).annotate(plan_text=Cast("plan", TextField()))
        for v in team_versions:
            for run in plans.filter(plan_text__contains=f'"file:{v.storage_path}"').order_by("pk"):
                out.setdefault(v.pk, {}).setdefault(run.pk, run)
    return {pk: sorted(runs.values(), key=lambda r: r.pk) for pk, runs in out.items()}


def _stored_file(version: DatasetVersion) -> Path | None:
    """The version's file when it lies in the uploads folder (never delete anything else)."""
    root = (Path(settings.MEDIA_ROOT) / "datasets").resolve()
    try:
        path = Path(version.storage_path).resolve()
    except OSError:
        return None
    return path if path.is_relative_to(root) else None


def _delete(dataset: Dataset, versions: list[DatasetVersion], what: str) -> None:
    used = runs_using_versions(versions)
    if used:
        runs = sorted({r.pk: r for rs in used.values() for r in rs}.values(), key=lambda r: r.pk)
        raise DatasetInUse(what, runs)
    files = [p for p in (_stored_file(v) for v in versions) if p is not None]
    datasets_unstore_on_commit(versions)  # their copies in the shared store, if one is set
    try:
        DatasetVersion.objects.filter(pk__in=[v.pk for v in versions]).delete()
    except (RestrictedError, ProtectedError):  # a run pinned it since the check above
        raise DatasetInUse(what, list(_runs_now(versions))) from None
    if not dataset.versions.exists():
        dataset.delete()
    transaction.on_commit(lambda: _unlink(files))


def _runs_now(versions: list[DatasetVersion]):
    return Run.objects.filter(dataset_uses__dataset_version__in=versions).distinct().order_by("pk")


def _unlink(files: list[Path]) -> None:
    for path in files:
        try:
            path.unlink(missing_ok=True)
        except OSError:  # the rows are gone; a file left behind is only disk space
            log.warning("could not remove %s", path, exc_info=True)


@transaction.atomic
def dataset_version_delete(*, version: DatasetVersion) -> None:
    """Delete one version and its stored file, unless a run uses it (``DatasetInUse``). The
    dataset goes with its last version."""
    dataset = Dataset.objects.select_for_update().get(pk=version.dataset_id)
    version = DatasetVersion.objects.select_related("dataset").get(pk=version.pk)
    _delete(dataset, [version], f"dataset {dataset.name!r} v{version.version}")


@transaction.atomic
def dataset_delete(*, dataset: Dataset) -> None:
    """Delete a dataset with every version and stored file, unless a run uses any version
    (``DatasetInUse``: nothing is deleted)."""
    dataset = Dataset.objects.select_for_update().get(pk=dataset.pk)
    versions = list(dataset.versions.select_related("dataset"))
    _delete(dataset, versions, f"dataset {dataset.name!r}")
