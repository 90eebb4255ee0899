"""Dataset uploads: stream to MEDIA_ROOT while hashing, one DatasetVersion per distinct
content (sha256), a record count, and a preview of the first records."""

from __future__ import annotations

import hashlib
import json
import uuid
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction

from runs.models import Dataset, DatasetVersion, Team

FORMATS = {".txt": "text", ".jsonl": "jsonl", ".parquet": "parquet"}
PREVIEW_RECORDS = 20


class DatasetUploadError(ValueError):
    """The upload cannot become a dataset version; the message says why."""


def _count_and_check(path: Path, fmt: str) -> int:
    if fmt == "parquet":
        import pyarrow.parquet as pq

        try:
            return pq.ParquetFile(path).metadata.num_rows
        except Exception as exc:
            raise DatasetUploadError(f"not a readable Parquet file: {exc}") from None
    n = 0
    with open(path, "rb") as fh:
        for i, line in enumerate(fh, start=1):
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError:
                raise DatasetUploadError(f"line {i} is not UTF-8 text") from None
            if fmt == "jsonl":
                if not text.strip():
                    continue
                try:
                    obj = json.loads(text)
                except json.JSONDecodeError as exc:
                    raise DatasetUploadError(f"line {i} is not valid JSON: {exc.msg}") from None
                if not isinstance(obj, dict):
                    raise DatasetUploadError(f"line {i} must be a JSON object")
            n += 1
    return n


def dataset_version_create(
    *, team: Team, name: str, upload, filename: str, user=None
) -> tuple[DatasetVersion, bool]:
    """Store ``upload`` (a Django UploadedFile) as the next version of the team's dataset
    ``name``. Returns (version, created); the same bytes uploaded again return the existing
    version."""
    ext = Path(filename).suffix.lower()
    fmt = FORMATS.get(ext)
    if fmt is None:
        raise DatasetUploadError(
            f"unsupported file type {ext or '(none)'}: use .txt, .jsonl or .parquet"
        )
    name = name.strip()[:100]
    if not name:
        raise DatasetUploadError("give the dataset a name")
    root = Path(settings.MEDIA_ROOT) / "datasets" / str(team.pk)
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".upload-{uuid.uuid4().hex}{ext}"
    digest, size = hashlib.sha256(), 0
    try:
        with open(tmp, "wb") as out:
            for chunk in upload.chunks():
                digest.update(chunk)
                size += len(chunk)
                out.write(chunk)
        if size == 0:
            raise DatasetUploadError("the file is empty")
        records = _count_and_check(tmp, fmt)
        content_hash = digest.hexdigest()
        with transaction.atomic():
            dataset, _ = Dataset.objects.get_or_create(
                team=team, name=name, defaults={"created_by": user}
            )
            Dataset.objects.select_for_update().filter(pk=dataset.pk).first()
            existing = dataset.versions.filter(content_hash=content_hash).first()
            if existing is not None:
                return existing, False
            number = (dataset.versions.order_by("-version").values_list("version", flat=True)
                      .first() or 0) + 1  # fmt: skip
            final = root / str(dataset.pk) / f"v{number}-{content_hash[:12]}{ext}"
            final.parent.mkdir(parents=True, exist_ok=True)
            tmp.replace(final)
            try:
                version = DatasetVersion.objects.create(
                    dataset=dataset, version=number, format=fmt, size_bytes=size,
                    content_hash=content_hash, storage_path=str(final), records=records,
                    created_by=user,
                )  # fmt: skip
            except IntegrityError:
                raise DatasetUploadError("another upload of this dataset won; try again") from None
            return version, True
    finally:
        tmp.unlink(missing_ok=True)


def dataset_preview(version: DatasetVersion, limit: int = PREVIEW_RECORDS) -> list[str]:
    """The first records as display strings (text lines, JSON objects, Parquet rows)."""
    path = Path(version.storage_path)
    if version.format == "parquet":
        import pyarrow.parquet as pq

        table = pq.ParquetFile(path).read_row_group(0).slice(0, limit)
        return [json.dumps(row, ensure_ascii=False, default=str) for row in table.to_pylist()]
    out: list[str] = []
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            if len(out) >= limit:
                break
            if version.format == "jsonl":
                if not line.strip():
                    continue
                obj: Any = json.loads(line)
                out.append(json.dumps(obj, ensure_ascii=False, indent=1)[:2000])
            else:
                out.append(line.rstrip("\n")[:2000])
    return out
