"""Shared storage: one store of record for checkpoints and uploads that every machine reads.

``STAGEWISE_STORAGE_URL`` unset (the default): there is no store. Checkpoints and uploads
live under ``STAGEWISE_DATA_DIR`` and nothing is copied (workers on other machines then need
that folder shared, e.g. over NFS). Set to an fsspec URL (``s3://bucket/prefix`` through
s3fs, ``gs://...``, or a mounted folder such as ``/mnt/shared/stagewise``): a ``Store``
rooted there is the record, and each machine's data dir holds a local copy of what it wrote
or fetched. ``STAGEWISE_STORAGE_OPTIONS`` is a JSON object of the filesystem's keyword
arguments (s3fs: ``{"endpoint_url": "http://minio:9000", "key": "...", "secret": "..."}``);
without them s3fs reads the usual ``AWS_*`` variables and files.

Keys are '/'-separated paths under the root, the same as the files' paths under the data
dir (``runs/<run>/checkpoints/step-00000040``, ``uploads/datasets/<team>/<dataset>/v1-...``).
A directory is uploaded file by file and then its manifest (``MANIFEST``: each file's path
and size) last, so a directory without a manifest is not there: a half upload is never read.
A reader fetches exactly the manifest's files into a hidden folder renamed into place. A
single file is uploaded under a temporary key and moved to its key.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import uuid
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

MANIFEST = ".stagewise-manifest.json"
LOCAL_PROTOCOLS = {None, "file", "local"}


class StoreError(RuntimeError):
    """The store holds something other than what its manifest says (a size differs)."""


class Store:
    """An fsspec filesystem under a root: directories and files by key."""

    def __init__(self, url: str, options: dict | None = None):
        import fsspec

        options = dict(options or {})
        if fsspec.core.split_protocol(url)[0] in LOCAL_PROTOCOLS:
            options.setdefault("auto_mkdir", True)  # a mounted folder: make parents on write
        self.url = url
        self.fs, self.root = fsspec.core.url_to_fs(url, **options)

    def path(self, key: str) -> str:
        """The filesystem path of ``key``."""
        return f"{self.root.rstrip('/')}/{key.strip('/')}"

    # -- directories
    def dir_files(self, key: str) -> dict[str, int] | None:
        """{relative path: size} of the directory stored at ``key``; None if it is not
        there (never uploaded, deleted, or its upload not finished)."""
        try:
            raw = self.fs.cat_file(self.path(f"{key}/{MANIFEST}"))
        except FileNotFoundError:
            return None
        return {str(k): int(v) for k, v in json.loads(raw)["files"].items()}

    def put_dir(self, local: Path, key: str) -> dict[str, int]:
        """Upload the directory ``local`` to ``key`` (replacing what is there); the manifest
        is written last. Returns its {relative path: size}."""
        files = {
            p.relative_to(local).as_posix(): p.stat().st_size
            for p in sorted(Path(local).rglob("*"))
            if p.is_file()
        }
        self._remove(self.path(f"{key}/{MANIFEST}"))  # a re-upload is absent until complete
        if files:
            self.fs.put([str(local / r) for r in files], [self.path(f"{key}/{r}") for r in files])
        self.fs.pipe_file(self.path(f"{key}/{MANIFEST}"), json.dumps({"files": files}).encode())
        return files

    def get_dir(self, key: str, local: Path) -> bool:
        """Download the directory at ``key`` to ``local`` (renamed into place once whole);
        False when the store does not hold it. A ``local`` already there is kept."""
        files = self.dir_files(key)
        if files is None:
            return False
        local = Path(local)
        local.parent.mkdir(parents=True, exist_ok=True)
        tmp = local.parent / f".fetch-{local.name}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        try:
            for rel in files:
                (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            if files:
                self.fs.get([self.path(f"{key}/{r}") for r in files], [str(tmp / r) for r in files])
            for rel, size in files.items():
                if (tmp / rel).stat().st_size != size:
                    raise StoreError(f"{self.path(key)}/{rel}: size differs from its manifest")
            _rename_into_place(tmp, local)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return True

    def copy_dir(self, src: str, dst: str) -> bool:
        """Copy the directory at ``src`` to ``dst`` inside the store (server-side where the
        filesystem can); False when ``src`` is not there."""
        files = self.dir_files(src)
        if files is None:
            return False
        self._remove(self.path(f"{dst}/{MANIFEST}"))
        if files:
            sources = [self.path(f"{src}/{r}") for r in files]
            self.fs.copy(sources, [self.path(f"{dst}/{r}") for r in files])
        self.fs.pipe_file(self.path(f"{dst}/{MANIFEST}"), json.dumps({"files": files}).encode())
        return True

    def delete(self, key: str) -> None:
        """Remove everything under ``key`` (a directory's manifest first, so it is gone at
        once for readers); a key that is not there is fine."""
        self._remove(self.path(f"{key}/{MANIFEST}"))
        self._remove(self.path(key), recursive=True)

    # -- single files
    def put_file(self, local: Path, key: str) -> None:
        """Upload the file ``local`` to ``key``: to a temporary key first, then moved."""
        tmp = self.path(f"{key}.partial-{uuid.uuid4().hex}")
        self.fs.put_file(str(local), tmp)
        self.fs.mv(tmp, self.path(key))

    def get_file(self, key: str, local: Path) -> None:
        """Download the file at ``key`` to ``local`` (renamed into place once whole). Raises
        FileNotFoundError when the store does not hold it."""
        local = Path(local)
        local.parent.mkdir(parents=True, exist_ok=True)
        tmp = local.parent / f".fetch-{local.name}-{os.getpid()}"
        try:
            self.fs.get_file(self.path(key), str(tmp))
            os.replace(tmp, local)
        finally:
            tmp.unlink(missing_ok=True)

    def has_file(self, key: str) -> bool:
        return self.fs.isfile(self.path(key))

    def _remove(self, path: str, recursive: bool = False) -> None:
        try:
            self.fs.rm(path, recursive=recursive)
        except FileNotFoundError:
            pass


def _rename_into_place(tmp: Path, final: Path) -> None:
    """Move the fetched folder ``tmp`` to ``final``; when another process put a complete one
    there first, theirs is kept."""
    try:
        os.replace(tmp, final)
    except OSError:
        if not final.is_dir():
            raise


def parse_options(text: str) -> dict:
    """``STAGEWISE_STORAGE_OPTIONS``: a JSON object (empty text: no options)."""
    if not (text or "").strip():
        return {}
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise ImproperlyConfigured(f"STAGEWISE_STORAGE_OPTIONS is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ImproperlyConfigured("STAGEWISE_STORAGE_OPTIONS must be a JSON object")
    return value


@functools.lru_cache(maxsize=8)
def _store(url: str, options: str, pid: int) -> Store:
    return Store(url, parse_options(options))  # one per process: a forked child makes its own


def configured_store() -> Store | None:
    """The store ``STAGEWISE_STORAGE_URL`` names, or None when it is unset (the data dir
    alone holds the files)."""
    url = getattr(settings, "STAGEWISE_STORAGE_URL", "") or ""
    if not url.strip():
        return None
    options = getattr(settings, "STAGEWISE_STORAGE_OPTIONS", "") or ""
    if isinstance(options, dict):
        options = json.dumps(options, sort_keys=True)
    return _store(url.strip(), options, os.getpid())
