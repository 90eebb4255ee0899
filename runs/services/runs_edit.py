"""Editing and deleting runs over the API: a run's name, tags and notes change at any time; a
run is deleted only once it is over (succeeded, failed or canceled), with its points, series,
stage runs and checkpoints, on disk too."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from django.conf import settings
from django.db import transaction

from runs.models import Run
from runs.models.runs import RUN_TERMINAL
from runs.selectors.run_files import run_dir
from runs.services.errors import Conflict
from runs.services.stored_files import run_unstore_on_commit

log = logging.getLogger(__name__)

NAME_MAX = Run._meta.get_field("name").max_length
TAG_MAX = Run._meta.get_field("tags").base_field.max_length
MAX_TAGS = 50
NOTES_MAX = 100_000


class RunInUse(Conflict):
    """The run cannot be deleted now; ``runs`` are the ids of the runs in the way (its
    forks), if any."""

    def __init__(self, message: str, runs: list[int] | None = None):
        super().__init__(message)
        self.runs = runs or []


@transaction.atomic
def run_update(
    *, run: Run, name: str | None = None, tags: list[str] | None = None, notes: str | None = None
) -> Run:
    """Set the given fields (None: leave as is). Tags are kept once each, in the order given."""
    run = Run.objects.select_for_update().get(pk=run.pk)
    fields = []
    if name is not None:
        run.name = name
        fields.append("name")
    if tags is not None:
        run.tags = list(dict.fromkeys(tags))
        fields.append("tags")
    if notes is not None:
        run.notes = notes
        fields.append("notes")
    if fields:
        run.save(update_fields=[*fields, "updated_at"])
    return run


def _own_files(run: Run) -> Path | None:
    """The run's folder under the data dir (its checkpoints), or None if it is not one of ours:
    an external run's checkpoints are on its client's machine and never touched."""
    folder = run_dir(run)
    root = (Path(settings.STAGEWISE_DATA_DIR) / "runs").resolve()
    try:
        resolved = folder.resolve()
    except OSError:
        return None
    if resolved.parent != root:
        return None
    return folder


def run_delete(*, run: Run) -> None:
    """Delete a finished, failed or canceled run with everything it owns: stage runs,
    checkpoint rows, series and their points (cascade), analysis, dataset lineage rows, and
    its folder of checkpoints on disk (after the commit). Refused (409, ``RunInUse``) while
    the run may still change, or while forks of it exist (their curves start with its
    points)."""
    with transaction.atomic():
        locked = Run.objects.select_for_update().filter(pk=run.pk).first()
        if locked is None:
            return
        if locked.state not in RUN_TERMINAL:
            raise RunInUse(
                f"run {locked.pk} is {locked.state}: cancel it first (only a succeeded, failed "
                "or canceled run can be deleted)"
            )
        forks = list(
            Run.objects.filter(parent_id=locked.pk).order_by("pk").values_list("pk", "name")
        )
        if forks:
            shown = ", ".join(f"#{pk} {name!r}" for pk, name in forks[:20])
            more = f" and {len(forks) - 20} more" if len(forks) > 20 else ""
            raise RunInUse(
                f"run {locked.pk} has forks whose history starts with its points: {shown}{more};"
                " delete them first",
                runs=[pk for pk, _ in forks],
            )
        folder = _own_files(locked)
        run_unstore_on_commit(locked)  # its files in the shared store, if one is set
        locked.delete()
        if folder is not None:
            transaction.on_commit(lambda: _remove_folder(folder))


def _remove_folder(folder: Path) -> None:
    try:
        shutil.rmtree(folder)
    except FileNotFoundError:
        pass
    except OSError:  # the rows are gone; a folder left behind is only disk space
        log.warning("could not remove %s", folder, exc_info=True)
