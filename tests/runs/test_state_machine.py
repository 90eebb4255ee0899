import pytest
from django.utils import timezone

from runs.models import InvalidTransition
from runs.models.runs import RUN_TRANSITIONS, STAGE_TRANSITIONS, RunState, StageState
from tests import factories as f

LEGAL_RUN = {(a, b) for a, targets in RUN_TRANSITIONS.items() for b in targets}
ALL_RUN = [(a, b) for a in RunState.values for b in RunState.values]


@pytest.mark.parametrize(("current", "new"), ALL_RUN)
def test_run_transitions_follow_the_state_machine(current, new):
    run = f.RunFactory.build(state=current)
    if (current, new) in LEGAL_RUN:
        run.check_transition(new)
    else:
        with pytest.raises(InvalidTransition):
            run.check_transition(new)


def test_the_documented_path_is_legal():
    path = ["draft", "queued", "running", "queued", "running", "succeeded"]
    for a, b in zip(path, path[1:], strict=False):
        assert (a, b) in LEGAL_RUN


@pytest.mark.parametrize("terminal", ["succeeded", "failed", "canceled"])
def test_terminal_runs_cannot_move(terminal):
    run = f.RunFactory.build(state=terminal, finished_at=timezone.now())
    for new in RunState.values:
        with pytest.raises(InvalidTransition):
            run.check_transition(new)


@pytest.mark.parametrize(
    ("current", "new"),
    [
        ("pending", "running"),
        ("succeeded", "running"),
        ("queued", "succeeded"),
        ("skipped", "queued"),
    ],
)
def test_illegal_stage_transitions_are_refused(current, new):
    stage = f.StageRunFactory.build(state=current)
    with pytest.raises(InvalidTransition, match=f"from {current} to {new}"):
        stage.check_transition(new)


def test_stage_machine_covers_every_state():
    assert set(STAGE_TRANSITIONS) == set(StageState.values)
