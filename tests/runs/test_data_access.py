"""Team isolation of what a plan reads (runs/services/data_access.py): another team's dataset
file, checkpoint, a server path or a folder granted to another team is refused with the same
400 whether or not it exists, through every endpoint that validates a plan; the team's own
datasets (dataset:), checkpoints (run:) and granted folders train on a real worker, and the
run records the dataset version it read. Plus upload-time field checks and the queues page."""

from __future__ import annotations

import copy
import io
import json
import uuid
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.utils import timezone

from runs.models import Checkpoint, DataRoot, Pipeline, Run, RunDatasetVersion
from runs.services.data_access import MODEL_DENIED, PATH_DENIED, parse_data_roots
from runs.services.datasets import dataset_version_create
from tests import factories as f
from tests.workers import Workers, wait_for
from trainers.plan import validate_plan

MODEL = {"arch": "gpt2", "n_layer": 1, "n_embd": 32, "n_head": 2, "vocab_size": 300,
         "max_positions": 64}  # fmt: skip


def tiny_plan(source: str = "builtin:prose", **model) -> dict:
    return {
        "name": f"access-{uuid.uuid4().hex[:8]}",
        "seed": 1,
        "model": {**MODEL, **model},
        "eval_sets": [{"name": "prose", "source": "builtin:prose", "max_batches": 1,
                       "batch_size": 4, "seq_len": 32}],  # fmt: skip
        "stages": [
            {"name": "s0", "objective": "causal_lm", "data": [{"source": source}], "steps": 3,
             "batch_size": 4, "seq_len": 32, "eval_sets": ["prose"], "eval_interval": 3}
        ],
    }  # fmt: skip


def _paragraphs(n: int, tag: str) -> list[str]:
    from pydoc_data.topics import topics

    texts = [t for t in topics.values() if len(t) > 200]
    return [f"{tag} {texts[i % len(texts)][:400]}" for i in range(n)]


def _jsonl(rows: list[dict]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def _upload(team, name: str, body: bytes, filename: str = "d.jsonl", **fields):
    version, _ = dataset_version_create(
        team=team, name=name, upload=SimpleUploadedFile(filename, body), filename=filename,
        **fields,
    )  # fmt: skip
    return version


def _fake_checkpoint(run: Run, step: int, root: Path) -> Checkpoint:
    path = root / f"ckpt-{run.pk}-{step}"
    (path / "model").mkdir(parents=True)
    (path / "model" / "config.json").write_text("{}")
    sr = f.StageRunFactory(run=run, stage_index=0, state="succeeded", finished_at=timezone.now())
    return Checkpoint.objects.create(run=run, stage_run=sr, step=step, path=str(path))


# ------------------------------------------------------------------ refused, the same either way


@pytest.fixture
def world(db, tmp_path):
    """Team A with an uploaded dataset, a checkpoint and a granted folder; team B (the one
    asking) with a granted folder of its own, a visible run (what-if) and a checkpoint (fork)."""
    team_a, team_b = f.TeamFactory(), f.TeamFactory()
    queue = f.QueueFactory(name=f"q-{uuid.uuid4().hex[:8]}")
    version_a = _upload(team_a, "a-secret", _jsonl([{"text": t} for t in _paragraphs(5, "a")]))
    run_a = f.RunFactory(
        team=team_a, queue=queue, plan=tiny_plan(), state="succeeded", finished_at=timezone.now()
    )
    ckpt_a = _fake_checkpoint(run_a, 3, tmp_path / "a-runs")
    granted_a = tmp_path / "granted-a"
    granted_a.mkdir()
    (granted_a / "a.txt").write_text("team a only\n")
    DataRoot.objects.create(team=team_a, path=str(granted_a))
    granted_b = tmp_path / "granted-b"
    granted_b.mkdir()
    (granted_b / "b.txt").write_text("\n\n".join(_paragraphs(40, "b")))
    (granted_b / "link-to-a.txt").symlink_to(granted_a / "a.txt")
    (granted_b / "model-link").symlink_to(Path(ckpt_a.path) / "model")
    DataRoot.objects.create(team=team_b, path=str(granted_b))
    run_b = f.RunFactory(team=team_b, queue=queue, plan=validate_plan(tiny_plan()).model_dump(
        mode="json"), state="succeeded", finished_at=timezone.now())  # fmt: skip
    ckpt_b = _fake_checkpoint(run_b, 3, tmp_path / "b-runs")
    return {
        "a": team_a, "b": team_b, "queue": queue, "version_a": version_a, "run_a": run_a,
        "ckpt_a": ckpt_a, "granted_a": granted_a, "granted_b": granted_b, "run_b": run_b,
        "ckpt_b": ckpt_b, "api_b": f.api_client_for(team_b), "api_a": f.api_client_for(team_a),
    }  # fmt: skip


SUFFIX = "file source must end with one of .txt, .jsonl, .parquet"


def _source_plan(src: str) -> tuple[dict, str]:
    return tiny_plan(f"file:{src}"), "stages.0.data.0.source"


def _model_plan(path: str) -> tuple[dict, str]:
    return tiny_plan(path=path), "model.path"


def _ref_model_plan(path: str) -> dict:
    plan = tiny_plan()
    plan["stages"][0]["curriculum"] = {"by": "ref_loss", "ref_model": path}
    return plan


def _forbidden(w) -> dict[str, list[tuple[dict, str, str]]]:
    """For each forbidden target: plans naming it (existing first, then missing), the field
    and the message expected."""
    va, ca, ga, gb = w["version_a"], w["ckpt_a"], w["granted_a"], w["granted_b"]
    missing_a = str(Path(va.storage_path).with_name("v9-000000000000.jsonl"))
    return {
        "team A's dataset file": [
            (*_source_plan(va.storage_path), PATH_DENIED),
            (*_source_plan(missing_a), PATH_DENIED),
        ],
        "team A's checkpoint by path": [
            (*_model_plan(f"{ca.path}/model"), MODEL_DENIED),
            (*_model_plan(f"{ca.path}/nothing-here"), MODEL_DENIED),
        ],
        "team A's checkpoint by run reference": [
            (*_model_plan(f"run:{ca.run_id}@{ca.step}"), MODEL_DENIED),
            (*_model_plan(f"run:{ca.run_id}@{ca.step + 1}"), MODEL_DENIED),
            (*_model_plan("run:99999999@3"), MODEL_DENIED),
        ],
        "/etc/hostname": [
            (tiny_plan("file:/etc/hostname"), "stages.0.data.0", SUFFIX),
            (tiny_plan("file:/etc/hostname-not-there"), "stages.0.data.0", SUFFIX),
        ],
        "/etc/hostname as a model": [
            (*_model_plan("/etc/hostname"), MODEL_DENIED),
            (*_model_plan("/etc/hostname-not-there"), MODEL_DENIED),
            (*_model_plan("/etc"), MODEL_DENIED),
        ],
        "a root granted only to team A": [
            (*_source_plan(f"{ga}/a.txt"), PATH_DENIED),
            (*_source_plan(f"{ga}/missing.txt"), PATH_DENIED),
        ],
        "a symlink or .. out of team B's root": [
            (*_source_plan(f"{gb}/link-to-a.txt"), PATH_DENIED),
            (*_source_plan(f"{gb}/../granted-a/a.txt"), PATH_DENIED),
            (*_source_plan(f"{gb}/../granted-a/missing.txt"), PATH_DENIED),
        ],
        "a reference model for the curriculum": [
            (_ref_model_plan("/etc"), "stages.0.curriculum.ref_model", MODEL_DENIED),
            (_ref_model_plan("/etc-nope"), "stages.0.curriculum.ref_model", MODEL_DENIED),
            (
                _ref_model_plan(f"run:{ca.run_id}@{ca.step}"),
                "stages.0.curriculum.ref_model",
                MODEL_DENIED,
            ),
        ],
        "a model symlink out of team B's root": [
            (*_model_plan(f"{gb}/model-link"), MODEL_DENIED),
            (*_model_plan(f"{gb}/../granted-a"), MODEL_DENIED),
        ],
    }


def _endpoints(w):
    """(name, POST a plan as team B) for every endpoint that validates a plan."""
    api, queue, run_b, ckpt_b = w["api_b"], w["queue"], w["run_b"], w["ckpt_b"]

    def pipeline(plan):
        return api.post("/api/pipelines/", {"plan": plan}, format="json")

    def submit(plan):
        return api.post("/api/runs/", {"plan": plan, "queue": queue.name}, format="json")

    def preview(plan):
        return api.post("/api/ui/plan-preview/", {"plan": plan}, format="json")

    def what_if(plan):
        return api.post(f"/api/runs/{run_b.pk}/lr-law/what-if/", {"plan": plan}, format="json")

    def fork(plan):
        if plan["model"] != MODEL:  # a fork keeps its parent's model
            return None
        later = [{**plan["stages"][0], "name": "s1"}]  # after the parent's stage s0
        body = {"checkpoint": ckpt_b.pk, "stages": later}
        return api.post(f"/api/runs/{run_b.pk}/fork/", body, format="json")

    return [("pipeline save", pipeline), ("run submit", submit), ("plan preview", preview),
            ("what-if", what_if), ("fork", fork)]  # fmt: skip


@pytest.mark.django_db
def test_other_teams_data_and_server_paths_are_refused_alike_everywhere(world):
    runs_before, pipelines_before = Run.objects.count(), Pipeline.objects.count()
    for target, cases in _forbidden(world).items():
        for endpoint, post in _endpoints(world):
            bodies = []
            for plan, field, message in cases:
                if endpoint == "fork":  # the plan's stage comes after the parent's
                    field = field.replace("stages.0.", "stages.1.")
                r = post(plan)
                if r is None:
                    continue
                assert r.status_code == 400, (target, endpoint, r.content)
                body = r.json()
                assert body["errors"][field] == [message], (target, endpoint, body)
                bodies.append(body)
            # the same answer whether the thing exists or not: no path oracle
            assert all(b == bodies[0] for b in bodies), (target, endpoint, bodies)
    assert (Run.objects.count(), Pipeline.objects.count()) == (runs_before, pipelines_before)


@pytest.mark.django_db
def test_another_teams_objects_answer_like_missing_ones(world):
    api = world["api_b"]
    msgs = []
    for name in ("a-secret", "never-uploaded"):
        plan = tiny_plan(f"dataset:{name}")
        r = api.post("/api/pipelines/", {"plan": plan}, format="json")
        assert r.status_code == 400
        msgs.append(r.json()["errors"]["stages.0.data.0.source"])
    assert msgs == [[f"no dataset {n!r} in this team (upload it first)"]
                    for n in ("a-secret", "never-uploaded")]  # fmt: skip
    # a fork of team A's run, a what-if on it: 404 like a run that does not exist
    run_a = world["run_a"]
    for url in (f"/api/runs/{run_a.pk}/lr-law/what-if/", "/api/runs/99999999/lr-law/what-if/"):
        r = api.post(url, {"plan": tiny_plan()}, format="json")
        assert r.status_code == 404
    r1 = api.post(f"/api/runs/{run_a.pk}/fork/", {"checkpoint": world["ckpt_a"].pk}, format="json")
    r2 = api.post("/api/runs/99999999/fork/", {"checkpoint": world["ckpt_a"].pk}, format="json")
    assert r1.status_code == r2.status_code == 404


@pytest.mark.django_db
def test_what_if_run_picker_lists_only_the_teams_runs(world):
    user = f.UserFactory()
    f.MembershipFactory(user=user, team=world["b"])
    c = Client()
    c.force_login(user)
    picked = [r["id"] for r in c.get("/pipelines/new/").context["page_data"]["whatif_runs"]]
    assert picked == [world["run_b"].pk]


@pytest.mark.django_db
def test_granted_paths_own_datasets_and_checkpoints_validate(world, tmp_path):
    api, gb, queue = world["api_b"], world["granted_b"], world["queue"]
    version = _upload(world["b"], "b-data", _jsonl([{"body": t} for t in _paragraphs(20, "b")]),
                      text_field="body")  # fmt: skip
    (gb / "model").mkdir()
    ok = [
        tiny_plan(f"file:{gb}/b.txt"),
        tiny_plan(f"file:{gb}/sub/../b.txt"),
        tiny_plan(path=f"{gb}/model"),
        tiny_plan(path=f"run:{world['run_b'].pk}@3"),
    ]
    own = tiny_plan("dataset:b-data")
    own["stages"][0]["data"][0]["text_field"] = "body"
    ok.append(own)
    for plan in ok:
        r = api.post("/api/runs/", {"plan": plan, "queue": queue.name}, format="json")
        assert r.status_code == 201, (plan, r.json())
    run = Run.objects.get(pk=r.json()["id"])
    assert run.plan["stages"][0]["data"][0]["source"] == "dataset:b-data@1"
    assert list(run.dataset_uses.values_list("dataset_version", "reference")) == [
        (version.pk, "dataset:b-data@1")
    ]
    # granted, but missing: that may be said (the team may read the folder)
    r = api.post("/api/runs/", {"plan": tiny_plan(f"file:{gb}/nope.txt"), "queue": queue.name},
                 format="json")  # fmt: skip
    assert r.json()["errors"]["stages.0.data.0.source"] == [f"file not found: {gb}/nope.txt"]
    # own run without a checkpoint at that step: the steps it has
    r = api.post("/api/runs/", {"plan": tiny_plan(path=f"run:{world['run_b'].pk}@4"),
                                "queue": queue.name}, format="json")  # fmt: skip
    assert "has no checkpoint at step 4 (it has: 3)" in r.json()["errors"]["model.path"][0]
    # the version's records lack the field the plan reads: at submit, not at training
    r = api.post("/api/runs/", {"plan": tiny_plan("dataset:b-data"), "queue": queue.name},
                 format="json")  # fmt: skip
    assert "has no field 'text'" in r.json()["errors"]["stages.0.data.0.source"][0]
    # a version that does not exist, of an own dataset
    r = api.post("/api/pipelines/", {"plan": tiny_plan("dataset:b-data@7")}, format="json")
    assert r.json()["errors"]["stages.0.data.0.source"] == [
        "dataset 'b-data' has no version 7 (latest: 1)"
    ]


@pytest.mark.django_db
def test_saved_pipeline_keeps_the_reference_and_each_run_pins_the_latest(world):
    api, queue, team = world["api_b"], world["queue"], world["b"]
    _upload(team, "grows", _jsonl([{"text": t} for t in _paragraphs(10, "v1")]))
    plan = tiny_plan("dataset:grows")
    plan["stages"][0]["data"][0]["name"] = "main"
    plan["stages"].append(
        {
            **copy.deepcopy(plan["stages"][0]),
            "name": "s1",
            "data": [{"source": "builtin:code"}],
            "replay": [{"source": "dataset:grows", "ratio": 0.2}],
        }
    )
    r = api.post("/api/pipelines/", {"plan": plan}, format="json")
    assert r.status_code == 201, r.json()
    pid = r.json()["id"]
    assert Pipeline.objects.get(pk=pid).plan == plan  # stored as sent
    first = api.post("/api/runs/", {"pipeline": pid, "queue": queue.name}, format="json").json()
    _upload(team, "grows", _jsonl([{"text": t} for t in _paragraphs(10, "v2")]))
    second = api.post("/api/runs/", {"pipeline": pid, "queue": queue.name}, format="json").json()
    for body, v in ((first, 1), (second, 2)):
        st = body["plan"]["stages"]
        assert st[0]["data"][0]["source"] == f"dataset:grows@{v}"
        assert st[1]["replay"][0]["source"] == f"dataset:grows@{v}"
        assert RunDatasetVersion.objects.get(run_id=body["id"]).dataset_version.version == v


@pytest.mark.django_db
def test_external_runs_keep_local_paths_and_refuse_server_references(world):
    api = world["api_b"]
    plan = tiny_plan("file:/data/on/the/box/train.txt", path="/models/on/the/box")
    r = api.post("/api/runs/", {"plan": plan, "external": True}, format="json")
    assert r.status_code == 201, r.json()
    assert r.json()["plan"]["model"]["path"] == "/models/on/the/box"
    r = api.post("/api/runs/", {"plan": tiny_plan("dataset:x"), "external": True}, format="json")
    assert r.status_code == 400
    assert "external run reads its files" in r.json()["errors"]["stages.0.data.0.source"][0]


def test_data_roots_setting_parses_and_ignores_malformed_entries():
    roots = parse_data_roots("team-a=/data/a:/data/shared; team-b=/b ;bad;c=relative;=/x")
    assert roots == {"team-a": ["/data/a", "/data/shared"], "team-b": ["/b"]}


@pytest.mark.django_db
def test_configured_roots_grant_like_admin_rows_but_never_the_data_dir(world, settings, tmp_path):
    api, queue = world["api_b"], world["queue"]
    extra = tmp_path / "configured"
    extra.mkdir()
    (extra / "c.txt").write_text("\n\n".join(_paragraphs(5, "c")))
    settings.STAGEWISE_DATA_ROOTS = f"{world['b'].slug}={extra}:{settings.STAGEWISE_DATA_DIR}"
    r = api.post("/api/runs/", {"plan": tiny_plan(f"file:{extra}/c.txt"), "queue": queue.name},
                 format="json")  # fmt: skip
    assert r.status_code == 201, r.json()
    # the data dir (every team's uploads) stays closed, even granted
    r = api.post("/api/runs/", {"plan": tiny_plan(f"file:{world['version_a'].storage_path}"),
                                "queue": queue.name}, format="json")  # fmt: skip
    assert r.json()["errors"]["stages.0.data.0.source"] == [PATH_DENIED]


# ------------------------------------------------------------------ trains on a real worker


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_granted_file_own_dataset_and_own_checkpoint_train(tmp_path, settings):
    """Team B's run reads its uploaded dataset (dataset:<name>, pinned and recorded), a file
    under its granted folder, and starts from the model of its own earlier run's checkpoint
    (run:<id>@<step>); a real worker trains it."""
    from runs.selectors.run_files import run_dir
    from trainers.checkpoints import list_checkpoints
    from trainers.engine import run_stage
    from trainers.sinks import MemorySink

    settings.STAGEWISE_LEASE_SECONDS = 4
    team = f.TeamFactory()
    api = f.api_client_for(team)
    queue = f.QueueFactory(name=f"q-{uuid.uuid4().hex[:8]}")
    granted = tmp_path / "granted"
    granted.mkdir()
    (granted / "extra.txt").write_text("\n\n".join(_paragraphs(60, "extra")))
    DataRoot.objects.create(team=team, path=str(granted))
    version = _upload(team, "prose-pairs", _jsonl(
        [{"q": f"question {i}", "a": t} for i, t in enumerate(_paragraphs(80, "ans"))]),
        prompt_field="q", response_field="a")  # fmt: skip

    # an earlier run of the team, trained in-process, with its checkpoint indexed
    parent_plan = validate_plan(tiny_plan())
    parent = f.RunFactory(team=team, queue=queue, plan=parent_plan.model_dump(mode="json"),
                          state="succeeded", finished_at=timezone.now())  # fmt: skip
    sr = f.StageRunFactory(run=parent, stage_index=0, state="succeeded", start_step=0, end_step=3)
    run_stage(parent_plan, 0, run_dir(parent), MemorySink())
    for c in list_checkpoints(run_dir(parent)):
        Checkpoint.objects.create(run=parent, stage_run=sr, step=c.step, path=str(c.path),
                                  stage_end=c.stage_end)  # fmt: skip

    plan = tiny_plan("dataset:prose-pairs", path=f"run:{parent.pk}@3")
    stage = plan["stages"][0]
    stage["objective"] = "sft"
    stage["data"] = [
        {"source": "dataset:prose-pairs", "prompt_field": "q", "response_field": "a"},
        {"source": f"file:{granted}/extra.txt", "weight": 0.5},
    ]
    plan["eval_sets"].append({"name": "pairs", "source": f"dataset:prose-pairs@{version.version}",
                              "prompt_field": "q", "response_field": "a", "max_batches": 1,
                              "batch_size": 4, "seq_len": 32})  # fmt: skip
    stage["eval_sets"] = ["prose", "pairs"]
    r = api.post("/api/runs/", {"plan": plan, "queue": queue.name}, format="json")
    assert r.status_code == 201, r.json()
    run_id = r.json()["id"]
    assert r.json()["plan"]["stages"][0]["data"][0]["source"] == "dataset:prose-pairs@1"
    assert r.json()["plan"]["model"]["path"] == f"run:{parent.pk}@3"
    workers = Workers(tmp_path, lease_seconds=4)
    try:
        workers.start(queue.name, "w-access")
        wait_for(lambda: Run.objects.get(pk=run_id).is_terminal, 300, "the run", workers.logs)
    finally:
        workers.stop_all()
    run = Run.objects.get(pk=run_id)
    assert run.state == "succeeded", (run.error, run.stage_runs.first().error, workers.logs())
    assert list(run.dataset_uses.values_list("dataset_version_id", flat=True)) == [version.pk]
    assert run.series.filter(key="eval/pairs/loss").exists()
    # the stored plan still names references, never the server paths they resolved to
    assert version.storage_path not in json.dumps(run.plan)


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_grant_withdrawn_before_the_stage_starts_fails_it_with_the_field(tmp_path, settings):
    settings.STAGEWISE_LEASE_SECONDS = 4
    team = f.TeamFactory()
    api = f.api_client_for(team)
    queue = f.QueueFactory(name=f"q-{uuid.uuid4().hex[:8]}", paused=True)
    granted = tmp_path / "granted"
    granted.mkdir()
    (granted / "t.txt").write_text("\n\n".join(_paragraphs(40, "t")))
    root = DataRoot.objects.create(team=team, path=str(granted))
    r = api.post("/api/runs/", {"plan": tiny_plan(f"file:{granted}/t.txt"), "queue": queue.name},
                 format="json")  # fmt: skip
    assert r.status_code == 201, r.json()
    root.delete()
    queue.paused = False
    queue.save()
    workers = Workers(tmp_path, lease_seconds=4)
    try:
        workers.start(queue.name, "w-revoked")
        from runs.services.dispatch import dispatch

        dispatch()
        wait_for(lambda: Run.objects.get(pk=r.json()["id"]).is_terminal, 120, "the run",
                 workers.logs)  # fmt: skip
    finally:
        workers.stop_all()
    sr = Run.objects.get(pk=r.json()["id"]).stage_runs.get()
    assert sr.state == "failed"
    assert f"stages.0.data.0.source: {PATH_DENIED}" in sr.error


# ------------------------------------------------------------------ uploads checked at upload


@pytest.fixture
def uploader(db):
    team = f.TeamFactory()
    user = f.UserFactory()
    f.MembershipFactory(user=user, team=team, role="member")
    c = Client()
    c.force_login(user)

    def post(filename: str, body: bytes, **fields):
        data = {"name": f"up-{uuid.uuid4().hex[:6]}", "file": SimpleUploadedFile(filename, body)}
        return c.post("/datasets/upload/", {**data, **fields})

    return post


def _parquet(columns: dict) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(pa.table(columns), buf)
    return buf.getvalue()


def test_uploads_lacking_the_fields_training_reads_are_refused(uploader):
    ok_text = _jsonl([{"text": "a"}, {"text": "b"}])
    assert uploader("t.jsonl", ok_text).status_code == 201
    r = uploader("t.jsonl", _jsonl([{"text": "a"}, {"body": "b"}]))
    assert r.status_code == 400
    assert r.json()["field"] == "text_field" and "line 2 has no field 'text'" in r.json()["detail"]
    assert uploader("t.jsonl", _jsonl([{"body": "a"}]), text_field="body").status_code == 201
    r = uploader("t.jsonl", _jsonl([{"text": 3}]))
    assert r.status_code == 400 and "is not a string" in r.json()["detail"]
    pairs = _jsonl([{"q": "1+1", "a": "2"}, {"q": "2+2"}])
    r = uploader("p.jsonl", pairs, prompt_field="q", response_field="a")
    assert r.status_code == 400
    assert r.json()["field"] == "response_field" and "line 2 has no field 'a'" in r.json()["detail"]
    r = uploader("p.jsonl", pairs, prompt_field="q")
    assert r.status_code == 400 and r.json()["field"] == "response_field"
    good = _jsonl([{"q": "1+1", "a": "2"}])
    assert uploader("p.jsonl", good, prompt_field="q", response_field="a").status_code == 201
    r = uploader("x.txt", b"some prose\n", prompt_field="q", response_field="a")
    assert r.status_code == 400 and "a .txt file has no fields" in r.json()["detail"]

    assert uploader("t.parquet", _parquet({"text": ["a", "b"]})).status_code == 201
    r = uploader("t.parquet", _parquet({"body": ["a", "b"]}))
    assert r.status_code == 400 and "no column 'text' (its columns: body)" in r.json()["detail"]
    r = uploader("t.parquet", _parquet({"text": [1, 2]}))
    assert r.status_code == 400 and "not text" in r.json()["detail"]
    r = uploader("t.parquet", _parquet({"text": ["a", None]}))
    assert r.status_code == 400 and "1 null values" in r.json()["detail"]
    r = uploader("p.parquet", _parquet({"q": ["a"], "a": ["b"]}), prompt_field="q",
                 response_field="a")  # fmt: skip
    assert r.status_code == 201


# ------------------------------------------------------------------ the queues page


@pytest.mark.django_db
def test_queues_page_shows_other_teams_work_only_as_counts(db):
    queue = f.QueueFactory(name=f"q-{uuid.uuid4().hex[:8]}")
    team_a, team_b = f.TeamFactory(), f.TeamFactory()
    secret = f.RunFactory(team=team_a, queue=queue, name="a-secret-run", state="queued")
    f.StageRunFactory(run=secret, stage_index=0, state="queued", queued_at=timezone.now())
    ext = f.RunFactory(team=team_a, queue=queue, name="a-external", external=True,
                       state="running")  # fmt: skip
    mine = f.RunFactory(team=team_b, queue=queue, name="b-own-run", state="queued")
    f.StageRunFactory(run=mine, stage_index=0, state="queued", queued_at=timezone.now())

    def page(user) -> str:
        c = Client()
        c.force_login(user)
        return c.get("/queues/").content.decode()

    user_b = f.UserFactory()
    f.MembershipFactory(user=user_b, team=team_b)
    body = page(user_b)
    assert "b-own-run" in body
    for leak in ("a-secret-run", "a-external", f"/runs/{secret.pk}/", f"/runs/{ext.pk}/"):
        assert leak not in body
    assert "Other teams" in body and "0 running, 1 queued, 1 external" in body
    assert '>2</td><td><a href="/runs/' in body  # b's run keeps its place in the queue
    user_a = f.UserFactory()
    f.MembershipFactory(user=user_a, team=team_a)
    assert "a-secret-run" in page(user_a) and "b-own-run" not in page(user_a)
    staff = f.UserFactory(is_staff=True)
    body = page(staff)
    assert all(n in body for n in ("a-secret-run", "a-external", "b-own-run"))
    assert "Other teams" not in body
