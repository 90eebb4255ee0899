import pytest

from runs.services.demo import example_plans, seed_examples
from trainers.plan import validate_plan


@pytest.mark.django_db
def test_examples_survive_the_round_trip_through_the_database(team):
    pipelines = seed_examples(team=team)
    assert len(pipelines) == len(example_plans()) >= 3
    for plan, pipeline in zip(example_plans(), pipelines, strict=True):
        original = validate_plan(plan).model_dump(mode="json")
        stored = validate_plan(pipeline.plan).model_dump(mode="json")
        assert stored == original
    assert seed_examples(team=team) == []  # idempotent, keeps edits
