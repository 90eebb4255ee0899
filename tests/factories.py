import factory
from django.contrib.auth import get_user_model
from django.utils import timezone

from runs import models


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()

    username = factory.Sequence(lambda n: f"user{n}")
    password = factory.django.Password("pw-for-tests-1")


class TeamFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = models.Team

    name = factory.Sequence(lambda n: f"Team {n}")
    slug = factory.Sequence(lambda n: f"team-{n}")


class MembershipFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = models.Membership

    user = factory.SubFactory(UserFactory)
    team = factory.SubFactory(TeamFactory)
    role = "member"


class QueueFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = models.Queue

    name = factory.Sequence(lambda n: f"queue-{n}")
    max_concurrent = 1


class DatasetFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = models.Dataset

    team = factory.SubFactory(TeamFactory)
    name = factory.Sequence(lambda n: f"dataset-{n}")


class DatasetVersionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = models.DatasetVersion

    dataset = factory.SubFactory(DatasetFactory)
    version = factory.Sequence(lambda n: n + 1)
    format = "text"
    size_bytes = 10
    content_hash = factory.Sequence(lambda n: f"{n:064x}")
    storage_path = "/tmp/x.txt"


class PipelineFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = models.Pipeline

    team = factory.SubFactory(TeamFactory)
    name = factory.Sequence(lambda n: f"pipeline-{n}")
    plan = factory.LazyAttribute(
        lambda o: {
            "name": o.name,
            "stages": [
                {
                    "name": "s0",
                    "objective": "causal_lm",
                    "data": [{"source": "builtin:prose"}],
                    "steps": 100,
                }  # fmt: skip
            ],
        }
    )


class RunFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = models.Run

    team = factory.SubFactory(TeamFactory)
    queue = factory.SubFactory(QueueFactory)
    name = factory.Sequence(lambda n: f"run-{n}")
    plan = {}


class StageRunFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = models.StageRun

    run = factory.SubFactory(RunFactory)
    stage_index = factory.Sequence(lambda n: n)
    name = "stage"
    start_step = 0
    end_step = 100


class CheckpointFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = models.Checkpoint

    stage_run = factory.SubFactory(StageRunFactory)
    run = factory.SelfAttribute("stage_run.run")
    step = factory.Sequence(lambda n: n * 10)
    path = "/tmp/ckpt"


class SeriesFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = models.Series

    run = factory.SubFactory(RunFactory)
    key = factory.Sequence(lambda n: f"train/loss{n}")


class WorkerLeaseFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = models.WorkerLease

    stage_run = factory.SubFactory(StageRunFactory)
    worker_id = "w1"
    acquired_at = factory.LazyFunction(timezone.now)
    heartbeat_at = factory.SelfAttribute("acquired_at")
    expires_at = factory.LazyAttribute(lambda o: o.heartbeat_at + timezone.timedelta(seconds=30))


def api_client_for(team, role: str = "member"):
    """A DRF test client authenticated as a new user with ``role`` in ``team``."""
    from rest_framework.test import APIClient

    user = UserFactory()
    MembershipFactory(user=user, team=team, role=role)
    client = APIClient()
    client.force_authenticate(user)
    return client


def api_token_for(user, team, **kw) -> str:
    """The key of a new API token of ``user`` in ``team`` (the user must be a member); ``kw``
    goes to ``token_create``: ``name``, ``expires_at``, ``expires_in_days``. Send it as
    ``Authorization: Bearer <key>`` (``APIClient().credentials(HTTP_AUTHORIZATION=...)``)."""
    from runs.services.tokens import token_create

    kw.setdefault("name", "test token")
    _, key = token_create(user=user, team=team, **kw)
    return key


def checkpoint_on_disk(run, step: int, stage_index: int, root) -> models.Checkpoint:
    """A stage-end checkpoint row of ``run`` whose folder holds a (placeholder) model
    config: enough for the server's checks of `run:` references and merges, no weights."""
    path = root / f"ckpt-{run.pk}-{step}"
    (path / "model").mkdir(parents=True)
    (path / "model" / "config.json").write_text("{}")
    sr = run.stage_runs.get(stage_index=stage_index)
    return models.Checkpoint.objects.create(
        run=run, stage_run=sr, step=step, path=str(path), stage_end=True
    )
