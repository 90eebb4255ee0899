"""What a plan that runs on the server may read, checked for its team.

A server plan may name:

- builtin sources (``builtin:prose`` ...);
- the team's registered dataset versions: ``dataset:<name>`` (the latest version, pinned to
  ``dataset:<name>@<version>`` in the run's snapshot) or ``dataset:<name>@<version>``;
- as ``model.path``, ``curriculum.ref_model`` or a data entry's ``subset.ref_model``:
  ``run:<run_id>@<step>``, the model saved in a checkpoint of one of the team's runs;
- in a stage's ``init_merge``: ``{"run": <run_id>, "step": <step>, "weight": w}``, a
  checkpoint of one of the team's runs (recorded as the run's merge parents), or a ``path``
  under a granted folder;
- files and model directories under a folder granted to the team: a ``DataRoot`` row (Django
  admin) or ``STAGEWISE_DATA_ROOTS`` (``team-slug=/path:/other;team2=/path``).

Everything else is refused with one message per kind of field, the same whether or not the
path exists, so no answer tells one team anything about the server's files (no path oracle).
Paths are resolved (``os.path.realpath``: symlinks, ``..``) before the root check, and the
server's own data directory (uploads, checkpoints of every team) is never readable by path,
whatever is granted. External runs read their files on their own machines: their paths are
neither checked nor read here, and server references are refused for them.

The run keeps the references in its plan; ``plan_for_engine`` replaces them with local paths
in the plan handed to the engine only, re-checking access when the stage starts."""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError

from runs.models import (
    Checkpoint,
    DataRoot,
    DatasetVersion,
    Run,
    RunDatasetVersion,
    RunMergeParent,
    Team,
)
from runs.services.stored_files import (
    checkpoint_dir,
    checkpoint_fetch,
    checkpoint_files,
    dataset_file,
)
from trainers.plan import (
    DATASET_PREFIX,
    FILE_SUFFIXES,
    RUN_PREFIX,
    Plan,
    SourceSpec,
    parse_run_ref,
)

log = logging.getLogger(__name__)

PATH_DENIED = (
    "not a path this team may read: an admin grants its folder to the team (Data roots), "
    "or use dataset:<name> for one of the team's uploaded datasets"
)
MODEL_DENIED = (
    "not a model this team may read: use run:<run_id>@<step> for a checkpoint of one of the "
    "team's runs, or a folder an admin granted to the team"
)
MERGE_DENIED = (
    "not a checkpoint this team may read: give the run and step of a checkpoint of one of "
    "the team's runs, or a path under a folder an admin granted to the team"
)
EXTERNAL_REFERENCE = (
    "an external run reads its files on its own machine: give a local path there, "
    "not a server reference"
)


class PlanAccessError(ValueError):
    """A stored plan names something its team may no longer read (checked again when a stage
    starts). The message names the field."""


# ------------------------------------------------------------------ granted roots


def parse_data_roots(text: str) -> dict[str, list[str]]:
    """``team-a=/data/a:/data/shared;team-b=/data/b`` -> {slug: [absolute paths]}. Entries
    that are not ``slug=/abs/path`` are skipped with a warning: a typo grants nothing."""
    roots: dict[str, list[str]] = {}
    for entry in (text or "").split(";"):
        entry = entry.strip()
        if not entry:
            continue
        slug, sep, paths = entry.partition("=")
        slug = slug.strip()
        good = [p.strip() for p in paths.split(os.pathsep) if os.path.isabs(p.strip())]
        if not sep or not slug or not good:
            log.warning("STAGEWISE_DATA_ROOTS: ignoring %r (want team-slug=/abs/path)", entry)
            continue
        roots.setdefault(slug, []).extend(good)
    return roots


def configured_roots() -> dict[str, list[str]]:
    """Roots granted by configuration: ``settings.STAGEWISE_DATA_ROOTS`` (a dict, or the
    text form) when the settings define it, else the environment variable."""
    value = getattr(settings, "STAGEWISE_DATA_ROOTS", None)
    if value is None:
        value = os.environ.get("STAGEWISE_DATA_ROOTS", "")
    if isinstance(value, dict):
        return {k: [p for p in v if os.path.isabs(p)] for k, v in value.items()}
    return parse_data_roots(value)


def granted_roots(team: Team | None) -> list[str]:
    """The resolved folders ``team`` may read under."""
    if team is None:
        return []
    paths = list(DataRoot.objects.filter(team=team).values_list("path", flat=True))
    paths += configured_roots().get(team.slug, [])
    return sorted({_real(p) for p in paths if os.path.isabs(p) and "\x00" not in p})


def _real(path: str) -> str:
    return os.path.realpath(path)


def _server_dirs() -> list[str]:
    # Every team's uploads and checkpoints live here: reachable only through dataset: and
    # run: references, never by path, even under a root granted too widely.
    return [_real(str(settings.STAGEWISE_DATA_DIR)), _real(str(settings.MEDIA_ROOT))]


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def readable_path(team: Team | None, path: str, roots: list[str] | None = None) -> str | None:
    """The resolved ``path`` when ``team`` may read it (under one of its granted roots and
    outside the server's data directory), else None. Whether it exists does not matter."""
    if team is None or not os.path.isabs(path) or "\x00" in path:
        return None
    real = _real(path)
    if any(_under(real, d) for d in _server_dirs()):
        return None
    roots = granted_roots(team) if roots is None else roots
    return real if any(_under(real, r) for r in roots) else None


# ------------------------------------------------------------------ checking a plan


@dataclass
class PlanReads:
    """What a plan reads, resolved for its team. Keys are the values as written in the plan."""

    datasets: dict[str, DatasetVersion] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)  # file: source -> resolved path
    models: dict[str, str] = field(default_factory=dict)  # model.path / ref_model -> dir
    checkpoints: dict[str, int] = field(default_factory=dict)  # run:<id>@<step> -> Checkpoint


def _sources(plan: Plan) -> Iterator[tuple[str, SourceSpec]]:
    for i, e in enumerate(plan.eval_sets):
        yield f"eval_sets.{i}.source", e
    for i, st in enumerate(plan.stages):
        for j, d in enumerate(st.data):
            yield f"stages.{i}.data.{j}.source", d


def _model_dirs(plan: Plan) -> Iterator[tuple[str, str]]:
    if plan.model.path is not None:
        yield "model.path", plan.model.path
    for i, st in enumerate(plan.stages):
        if st.curriculum is not None and st.curriculum.ref_model:
            yield f"stages.{i}.curriculum.ref_model", st.curriculum.ref_model
        for j, d in enumerate(st.data):
            if d.subset is not None and d.subset.ref_model:
                yield f"stages.{i}.data.{j}.subset.ref_model", d.subset.ref_model


def _merge_refs(plan: Plan) -> Iterator[tuple[str, str]]:
    """(field, reference) of every ``init_merge`` entry: ``run:<id>@<step>`` or its path."""
    for i, st in enumerate(plan.stages):
        for j, m in enumerate(st.init_merge or []):
            yield f"stages.{i}.init_merge.{j}", m.ref


def _fields_of(spec: SourceSpec) -> dict[str, str]:
    if spec.prompt_field:
        return {"prompt_field": spec.prompt_field, "response_field": spec.response_field or ""}
    return {"text_field": spec.text_field}


class _Checker:
    def __init__(self, team: Team | None, fetch: bool = False):
        self.team = team
        self.fetch = fetch  # shared storage: download the checkpoints read (a worker)
        self.reads = PlanReads()
        self.errors: dict[str, list[str]] = {}
        self._roots: list[str] | None = None

    def err(self, path: str, message: str) -> None:
        if message not in self.errors.setdefault(path, []):
            self.errors[path].append(message)

    @property
    def roots(self) -> list[str]:
        if self._roots is None:
            self._roots = granted_roots(self.team)
        return self._roots

    def dataset(self, where: str, spec: SourceSpec) -> None:
        from runs.services.datasets import dataset_version_fields_problem

        name, number = spec.dataset_ref or ("", None)
        version = self.reads.datasets.get(spec.source)
        if version is None:
            versions = DatasetVersion.objects.filter(
                dataset__team=self.team, dataset__name=name
            ).select_related("dataset")
            if self.team is None or not versions.exists():
                # The team's own namespace: another team's dataset of this name is "no such"
                return self.err(where, f"no dataset {name!r} in this team (upload it first)")
            latest = versions.order_by("-version").first()
            version = latest if number is None else versions.filter(version=number).first()
            if version is None:
                return self.err(
                    where, f"dataset {name!r} has no version {number} (latest: {latest.version})"
                )
            self.reads.datasets[spec.source] = version
        label = f"dataset {name!r} v{version.version}"
        if version.format == "text" and spec.prompt_field:
            return self.err(where, f"{label} is plain text: it has no prompt/response fields")
        if version.format != "text":
            problem = dataset_version_fields_problem(version, _fields_of(spec))
            if problem:
                self.err(where, f"{label}: {problem}")

    def file(self, where: str, spec: SourceSpec) -> None:
        given = spec.file_path or ""
        real = readable_path(self.team, given, self.roots)
        if real is None:
            return self.err(where, PATH_DENIED)
        if not real.endswith(FILE_SUFFIXES):
            return self.err(where, f"it resolves to a file without {'/'.join(FILE_SUFFIXES)}")
        if not os.path.isfile(real):
            return self.err(where, f"file not found: {given}")
        self.reads.files[spec.source] = real

    def model(self, where: str, value: str) -> None:
        if value.startswith(RUN_PREFIX):
            return self.checkpoint(where, value)
        real = readable_path(self.team, value, self.roots)
        if real is None:
            return self.err(where, MODEL_DENIED)
        if not os.path.isdir(real):
            return self.err(where, f"model directory not found: {value}")
        self.reads.models[value] = real

    def merge_entry(self, where: str, value: str, lm: bool) -> None:
        """An init_merge entry: a checkpoint of the team's runs (an mlp one when not ``lm``)
        or a model directory under a granted folder."""
        if value.startswith(RUN_PREFIX):
            return self.checkpoint(where, value, denied=MERGE_DENIED, lm=lm)
        return self.model(where, value)

    def checkpoint(
        self, where: str, value: str, *, denied: str = MODEL_DENIED, lm: bool = True
    ) -> None:
        """``run:<id>@<step>``: the model folder of that checkpoint of one of the team's runs
        (a language model, or with ``lm=False`` an mlp)."""
        ref = parse_run_ref(value)
        own = (
            ref is not None
            and self.team is not None
            and Run.objects.filter(pk=ref[0], team=self.team).exists()
        )
        if not own:  # another team's run answers like a missing one
            return self.err(where, denied)
        run_id, step = ref
        ckpt = Checkpoint.objects.filter(run_id=run_id, step=step).first()
        if ckpt is None:
            steps = list(
                Checkpoint.objects.filter(run_id=run_id)
                .order_by("step")
                .values_list("step", flat=True)[:20]
            )
            have = ", ".join(map(str, steps)) or "none yet"
            return self.err(
                where, f"run {run_id} has no checkpoint at step {step} (it has: {have})"
            )
        if self.fetch:
            checkpoint_fetch(ckpt)
        files = checkpoint_files(ckpt)  # here, else in the shared store
        if files is None or f"model/{'config.json' if lm else 'mlp.pt'}" not in files:
            gone = files is None or not any(f.startswith("model/") for f in files)
            what = "language model" if lm else "mlp model"
            why = "is gone (pruned or moved)" if gone else f"holds no {what}"
            return self.err(where, f"the checkpoint at step {step} of run {run_id} {why}")
        self.reads.models[value] = _real(str(checkpoint_dir(ckpt) / "model"))
        self.reads.checkpoints[value] = ckpt.pk


def plan_reads(
    plan: Plan, *, team: Team | None, external: bool = False, fetch: bool = False
) -> PlanReads:
    """Check everything ``plan`` reads against what ``team`` may read and resolve it. Raises
    a ValidationError keyed by field path. ``team=None`` grants nothing but builtin sources.
    ``external``: paths are the client's, not checked; server references are refused.
    ``fetch``: checkpoints read are downloaded from the shared store first (a worker)."""
    c = _Checker(team, fetch=fetch)
    for where, spec in _sources(plan):
        if external:
            if spec.dataset_ref is not None:
                c.err(where, EXTERNAL_REFERENCE)
        elif spec.dataset_ref is not None:
            c.dataset(where, spec)
        elif spec.file_path is not None:
            c.file(where, spec)
    for where, value in _model_dirs(plan):
        if external:
            if value.startswith(RUN_PREFIX):
                c.err(where, EXTERNAL_REFERENCE)
        else:
            c.model(where, value)
    for where, value in _merge_refs(plan):
        if external:
            if value.startswith(RUN_PREFIX):
                c.err(where, EXTERNAL_REFERENCE)
        else:
            c.merge_entry(where, value, lm=plan.model.arch != "mlp")
    if c.errors:
        raise ValidationError(c.errors)
    return c.reads


# ------------------------------------------------------------------ what a run stores and trains


def dataset_pin(version: DatasetVersion) -> str:
    return f"{DATASET_PREFIX}{version.dataset.name}@{version.version}"


def _rewrite_sources(data: dict[str, Any], new: dict[str, str], *, name_data: bool) -> None:
    """Replace the sources in ``new`` (data, eval sets, and replay entries that name a source
    rather than a data entry's name). ``name_data``: a data entry without a name is named by
    its old source, so its replay streams keep their names."""
    names = {d.get("name") for st in data.get("stages") or [] for d in st.get("data") or []}
    for st in data.get("stages") or []:
        for d in st.get("data") or []:
            if d.get("source") in new:
                if name_data and not d.get("name"):
                    d["name"] = d["source"]
                d["source"] = new[d["source"]]
        for rp in st.get("replay") or []:
            if rp.get("source") in new and rp["source"] not in names:
                rp["source"] = new[rp["source"]]
    for e in data.get("eval_sets") or []:
        if e.get("source") in new:
            e["source"] = new[e["source"]]


def plan_pin_datasets(data: dict[str, Any], reads: PlanReads) -> dict[str, Any]:
    """``data`` with each ``dataset:<name>`` pinned to the version resolved now
    (``dataset:<name>@<version>``): what the run snapshots, so a later upload does not change
    what it trains or what a resumed stage reads."""
    out = copy.deepcopy(data)
    pins = {src: dataset_pin(v) for src, v in reads.datasets.items() if src != dataset_pin(v)}
    _rewrite_sources(out, pins, name_data=False)
    return out


def run_record_datasets(run: Run, reads: PlanReads) -> None:
    """Lineage: which registered dataset versions the run reads."""
    seen: dict[int, str] = {}
    for v in reads.datasets.values():
        seen.setdefault(v.pk, dataset_pin(v))
    RunDatasetVersion.objects.bulk_create(
        [RunDatasetVersion(run=run, dataset_version_id=pk, reference=r) for pk, r in seen.items()],
        ignore_conflicts=True,
    )


def plan_for_engine(plan: Plan, data: dict[str, Any], *, team: Team) -> dict[str, Any]:
    """The run's plan ``data`` (validated as ``plan``) as the worker trains it: dataset
    versions, granted files and model directories by their resolved local paths, checked
    again for ``team`` (a grant may have been withdrawn since the run was submitted).
    Raises PlanAccessError naming the field."""
    try:
        reads = plan_reads(plan, team=team, fetch=True)
    except ValidationError as exc:
        path, messages = next(iter(exc.message_dict.items()))
        raise PlanAccessError(f"{path}: {messages[0]}") from None
    out = copy.deepcopy(data)
    new = {src: "file:" + _real(str(dataset_file(v))) for src, v in reads.datasets.items()}
    new.update({src: "file:" + real for src, real in reads.files.items() if src != "file:" + real})
    _rewrite_sources(out, new, name_data=True)
    model = out.get("model") or {}
    if model.get("path") in reads.models:
        model["path"] = reads.models[model["path"]]
    for st in out.get("stages") or []:
        subsets = [d.get("subset") or {} for d in st.get("data") or []]
        for ref in [st.get("curriculum") or {}, *subsets]:
            if ref.get("ref_model") in reads.models:
                ref["ref_model"] = reads.models[ref["ref_model"]]
    _resolve_merges(out, reads)
    return out


def _resolve_merges(data: dict[str, Any], reads: PlanReads) -> None:
    """Each init_merge entry of ``data`` as a local ``path`` (a checkpoint's model folder)."""
    for st in data.get("stages") or []:
        for m in st.get("init_merge") or []:
            ref = m.get("path") or f"{RUN_PREFIX}{m.get('run')}@{m.get('step')}"
            if ref in reads.models:
                m.pop("run", None)
                m.pop("step", None)
                m["path"] = reads.models[ref]


def run_record_merge_parents(run: Run, plan: Plan, reads: PlanReads, *, first: int = 0) -> None:
    """Lineage: the checkpoints (of the team's runs) that the run's stages from ``first`` on
    start from the merge of, with their weights as written."""
    rows = []
    for i, st in enumerate(plan.stages[first:], start=first):
        for j, m in enumerate(st.init_merge or []):
            if m.ref in reads.checkpoints:
                ckpt = reads.checkpoints[m.ref]
                rows.append(RunMergeParent(run=run, stage_index=i, position=j, weight=m.weight,
                                           reference=m.ref, checkpoint_id=ckpt))  # fmt: skip
    RunMergeParent.objects.bulk_create(rows)


__all__ = [
    "MODEL_DENIED",
    "PATH_DENIED",
    "PlanAccessError",
    "PlanReads",
    "granted_roots",
    "plan_for_engine",
    "plan_pin_datasets",
    "plan_reads",
    "readable_path",
    "run_record_datasets",
    "run_record_merge_parents",
]
