"""Dataset uploads: stream to MEDIA_ROOT while hashing, one DatasetVersion per distinct
content (sha256), a record count, and a preview of the first records.

An upload is checked against what training will read from it: every record of a JSONL or
Parquet file must hold the text field (default ``text``), or the prompt and response fields
the user selects, as a string. A file that would fail when its stage starts is refused here."""

from __future__ import annotations

import hashlib
import json
import uuid
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction

from runs.models import Dataset, DatasetVersion, Team
from runs.services.stored_files import dataset_file, dataset_publish

FORMATS = {".txt": "text", ".jsonl": "jsonl", ".parquet": "parquet"}
PREVIEW_RECORDS = 20
NAME_MAX = Dataset._meta.get_field("name").max_length


class DatasetUploadError(ValueError):
    """The upload cannot become a dataset version; the message says why, ``field`` which form
    field it is about (``file``, ``name``, ``text_field``, ``prompt_field``...)."""

    def __init__(self, message: str, field: str = "file"):
        super().__init__(message)
        self.field = field


FIELD_HINT = "choose the field that holds the text, or the prompt and response fields"


def max_upload_bytes() -> int:
    """The largest dataset file accepted (STAGEWISE_MAX_UPLOAD_BYTES)."""
    return settings.STAGEWISE_MAX_UPLOAD_BYTES


def record_fields(
    fmt: str, text_field: str = "text", prompt_field: str = "", response_field: str = ""
) -> dict[str, str]:
    """The fields training reads from each record, as {form field: record field}: the
    prompt and response fields when given (both or neither), else the text field. A text
    file has no fields (its records are paragraphs)."""
    text_field, prompt_field, response_field = (
        (v or "").strip() for v in (text_field, prompt_field, response_field)
    )
    if bool(prompt_field) != bool(response_field):
        missing = "response_field" if prompt_field else "prompt_field"
        raise DatasetUploadError("give both the prompt and the response field", missing)
    given = {
        "text_field": text_field,
        "prompt_field": prompt_field,
        "response_field": response_field,
    }
    for key, value in given.items():
        if len(value) > 200 or "\x00" in value:
            raise DatasetUploadError("a field name is at most 200 characters, without NUL", key)
    if fmt == "text":
        if prompt_field:
            raise DatasetUploadError(
                "a .txt file has no fields; upload JSONL or Parquet for prompt/response pairs",
                "prompt_field",
            )
        return {}
    if prompt_field:
        return {"prompt_field": prompt_field, "response_field": response_field}
    return {"text_field": text_field or "text"}


def _check_parquet(path: Path, fields: dict[str, str], limit: int | None) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
        schema = pf.schema_arrow
    except Exception as exc:
        raise DatasetUploadError(f"not a readable Parquet file: {exc}") from None
    for key, name in fields.items():
        if name not in schema.names:
            cols = ", ".join(schema.names[:20]) or "none"
            raise DatasetUploadError(
                f"the Parquet file has no column {name!r} (its columns: {cols}); {FIELD_HINT}",
                key,
            )
        kind = schema.field(name).type
        if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
            raise DatasetUploadError(f"column {name!r} holds {kind}, not text; {FIELD_HINT}", key)
    if fields and limit is None:  # at upload: every value (a null would fail training)
        try:
            table = pf.read(columns=sorted(set(fields.values())))
        except Exception as exc:
            raise DatasetUploadError(f"not a readable Parquet file: {exc}") from None
        for key, name in fields.items():
            nulls = table.column(name).null_count
            if nulls:
                raise DatasetUploadError(f"column {name!r} has {nulls:,} null values", key)
    return pf.metadata.num_rows


def _count_and_check(
    path: Path, fmt: str, fields: dict[str, str] | None = None, limit: int | None = None
) -> int:
    """Records in the file, each checked for ``fields`` (see record_fields); ``limit``: stop
    after that many records (a quick look at a stored version)."""
    fields = fields or {}
    if fmt == "parquet":
        return _check_parquet(path, fields, limit)
    n = 0
    with open(path, "rb") as fh:
        for i, line in enumerate(fh, start=1):
            if limit is not None and n >= limit:
                break
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
                for key, name in fields.items():
                    if name not in obj:
                        raise DatasetUploadError(
                            f"line {i} has no field {name!r}; {FIELD_HINT}", key
                        )
                    if not isinstance(obj[name], str):
                        raise DatasetUploadError(f"line {i}: field {name!r} is not a string", key)
            n += 1
    return n


def dataset_version_fields_problem(version: DatasetVersion, fields: dict[str, str]) -> str:
    """Why the first records of a stored version lack ``fields`` (see record_fields), or "".
    A quick look at submit (the whole file was checked at upload, for the fields chosen
    then)."""
    try:
        _count_and_check(dataset_file(version), version.format, fields, limit=100)
    except DatasetUploadError as exc:
        return str(exc)
    except OSError:
        return "its file is missing on the server"
    return ""


def _upload_format(filename: str) -> tuple[str, str]:
    """(suffix, format) of an upload's file name; other suffixes are refused."""
    ext = Path(filename).suffix.lower()
    fmt = FORMATS.get(ext)
    if fmt is None:
        raise DatasetUploadError(
            f"unsupported file type {ext or '(none)'}: use .txt, .jsonl or .parquet"
        )
    return ext, fmt


def _dataset_name(name: str) -> str:
    """The name stripped; refused (never cut: a cut name could be another dataset's) when
    empty, with NUL (Postgres refuses it in text) or longer than the column."""
    name = name.strip()
    if not name:
        raise DatasetUploadError("give the dataset a name")
    if "\x00" in name:
        raise DatasetUploadError("the dataset name must not contain NUL characters", "name")
    if len(name) > NAME_MAX:
        raise DatasetUploadError(
            f"the dataset name must be at most {NAME_MAX} characters (it has {len(name)})", "name"
        )
    return name


def _write_hashed(upload, path: Path) -> tuple[str, int]:
    """Stream ``upload`` to ``path``; (sha256 hex digest, size in bytes)."""
    digest, size = hashlib.sha256(), 0
    with open(path, "wb") as out:
        for chunk in upload.chunks():
            digest.update(chunk)
            size += len(chunk)
            out.write(chunk)
    return digest.hexdigest(), size


@transaction.atomic
def _version_store(
    *, team: Team, name: str, user, tmp: Path, fmt: str, size: int, content_hash: str,
    records: int,
) -> tuple[DatasetVersion, bool]:  # fmt: skip
    """Make the checked file ``tmp`` (in the team's dataset folder) the next version of the
    team's dataset ``name`` (created if new), moved to ``<dataset id>/v<n>-<hash><suffix>``
    beside it; unless a version holds the same bytes already, which is returned instead."""
    dataset, _ = Dataset.objects.get_or_create(team=team, name=name, defaults={"created_by": user})
    Dataset.objects.select_for_update().filter(pk=dataset.pk).first()
    existing = dataset.versions.filter(content_hash=content_hash).first()
    if existing is not None:
        return existing, False
    number = (dataset.versions.order_by("-version").values_list("version", flat=True)
              .first() or 0) + 1  # fmt: skip
    final = tmp.parent / str(dataset.pk) / f"v{number}-{content_hash[:12]}{tmp.suffix}"
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
    _publish(version)
    return version, True


def _publish(version: DatasetVersion) -> None:
    """Put the new version in the shared store, if one is set; the version is not created
    (the transaction rolls back) when that fails."""
    try:
        dataset_publish(version)
    except Exception as exc:
        raise DatasetUploadError(f"could not put the file in shared storage: {exc}") from None


def dataset_version_create(
    *,
    team: Team,
    name: str,
    upload,
    filename: str,
    user=None,
    text_field: str = "text",
    prompt_field: str = "",
    response_field: str = "",
) -> tuple[DatasetVersion, bool]:
    """Store ``upload`` (a Django UploadedFile) as the next version of the team's dataset
    ``name``. Returns (version, created); the same bytes uploaded again return the existing
    version. Every record must hold the fields training will read (see record_fields)."""
    ext, fmt = _upload_format(filename)
    fields = record_fields(fmt, text_field, prompt_field, response_field)
    name = _dataset_name(name)
    root = Path(settings.MEDIA_ROOT) / "datasets" / str(team.pk)
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".upload-{uuid.uuid4().hex}{ext}"
    try:
        content_hash, size = _write_hashed(upload, tmp)
        if size == 0:
            raise DatasetUploadError("the file is empty")
        records = _count_and_check(tmp, fmt, fields)
        return _version_store(
            team=team, name=name, user=user, tmp=tmp, fmt=fmt, size=size,
            content_hash=content_hash, records=records,
        )  # fmt: skip
    finally:
        tmp.unlink(missing_ok=True)


def dataset_preview(version: DatasetVersion, limit: int = PREVIEW_RECORDS) -> list[str]:
    """The first records as display strings (text lines, JSON objects, Parquet rows)."""
    path = dataset_file(version)
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
