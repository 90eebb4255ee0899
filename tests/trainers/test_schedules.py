import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.trainers.helpers import lm_plan
from trainers.plan import ScheduleSpec, validate_plan
from trainers.schedules import lr_at, stage_lr

PEAK = 1e-3

kinds = st.sampled_from(["constant", "linear", "cosine", "wsd", "infinite"])
shapes = st.sampled_from(["linear", "cosine", "1-sqrt"])


@st.composite
def schedules(draw):
    total = draw(st.integers(10, 400))
    kind = draw(kinds)
    spec = ScheduleSpec(
        kind=kind,
        warmup_steps=draw(st.integers(0, total // 4)),
        warmup_from=draw(st.sampled_from(["zero", "previous"])),
        min_lr=draw(st.floats(0, PEAK / 2)),
        decay_fraction=draw(st.floats(0.05, 1.0)),
        decay_shape=draw(shapes),
        plateau_lr=draw(st.floats(PEAK / 2, PEAK)),
        cooldown_steps=draw(st.integers(1, total // 4)),
        anneal_steps=draw(st.integers(0, total // 4)),
    )
    prev = draw(st.floats(0, 2 * PEAK))
    return total, spec, prev


@settings(max_examples=150, deadline=None)
@given(schedules())
def test_bounds(case):
    total, s, prev = case
    lr = stage_lr(np.arange(1, total + 1), total, PEAK, s, prev)
    start = prev if s.warmup_from == "previous" else 0.0
    lo = min(s.min_lr, start) if s.warmup_steps else s.min_lr
    hi = max(PEAK, start) if s.warmup_steps else PEAK
    assert np.all(lr >= lo - 1e-12) and np.all(lr <= hi + 1e-12)


@settings(max_examples=150, deadline=None)
@given(schedules())
def test_continuity(case):
    """Every piece is continuous: no step changes the LR by more than the steepest
    piece allows (pi/2 * range / its length for cosine, range / sqrt(length) for 1-sqrt)."""
    total, s, prev = case
    t = np.arange(0, total + 1)
    lr = stage_lr(t, total, PEAK, s, prev)
    start = prev if s.warmup_from == "previous" else 0.0
    w = min(s.warmup_steps, total)
    pieces = [max(total - w, 1)]
    if s.kind == "wsd":
        pieces.append(
            total - max(total - max(1, round(s.decay_fraction * total)), min(w, total - 1))
        )
    if s.kind == "infinite":
        pieces += [s.cooldown_steps]
        if s.anneal_steps:
            pieces.append(total - max(total - s.anneal_steps, min(w, total - 1)))
    span = max(PEAK, start) - min(s.min_lr, start, 0.0 if w else s.min_lr)
    bound = span * math.pi / 2 / min(pieces)
    if s.decay_shape == "1-sqrt" and s.kind in ("wsd", "infinite"):
        bound = max(bound, span / math.sqrt(min(pieces)))  # 1 - sqrt(q) is steepest at q=0
    if w:
        bound = max(bound, abs(PEAK - start) / w)
    steps = np.abs(np.diff(lr[1:] if not w else lr))
    assert np.all(steps <= bound + 1e-12)


@given(st.integers(2, 300), st.integers(0, 50), shapes, st.floats(0.0, 5e-4))
def test_exact_values_at_documented_points(total, w, shape, min_lr):
    w = min(w, total - 1)
    t = np.array([0, w, total])
    for kind in ["constant", "linear", "cosine", "wsd"]:
        s = ScheduleSpec(kind=kind, warmup_steps=w, min_lr=min_lr, decay_shape=shape)
        lr = stage_lr(t, total, PEAK, s, 0.0)
        if w:
            assert lr[0] == 0.0
            assert math.isclose(lr[1], PEAK)
        end = PEAK if kind == "constant" else min_lr
        assert math.isclose(lr[2], end, abs_tol=1e-15)
    s = ScheduleSpec(kind="cosine", min_lr=min_lr)
    mid = stage_lr(np.array([total]), 2 * total, PEAK, s, 0.0)[0]  # p = 1/2
    assert math.isclose(mid, (PEAK + min_lr) / 2)


def test_wsd_shapes_and_infinite_points():
    s = ScheduleSpec(kind="wsd", decay_fraction=0.2, decay_shape="1-sqrt", min_lr=0.0)
    lr = stage_lr(np.arange(0, 101), 100, 1.0, s, 0.0)
    assert np.all(lr[:81] == 1.0)  # stable until t_d = 80
    assert math.isclose(lr[85], 1 - math.sqrt(0.25))
    assert lr[100] == 0.0
    s = ScheduleSpec(kind="wsd", decay_fraction=0.5, decay_shape="cosine")
    assert math.isclose(stage_lr(np.array([75]), 100, 1.0, s, 0.0)[0], 0.5)
    inf = ScheduleSpec(
        kind="infinite",
        warmup_steps=10,
        plateau_lr=0.5,
        cooldown_steps=20,
        anneal_steps=10,
        min_lr=0.1,
    )
    lr = stage_lr(np.arange(0, 101), 100, 1.0, inf, 0.0)
    assert lr[10] == 1.0 and math.isclose(lr[20], 0.75) and math.isclose(lr[30], 0.5)
    assert np.allclose(lr[30:91], 0.5) and math.isclose(lr[95], 0.3) and math.isclose(lr[100], 0.1)


def test_pipeline_rewarms_from_previous_stage():
    plan = validate_plan(lm_plan())  # stage 0 cosine 12 steps -> min 0; stage 1 wsd rewarm
    lr = lr_at(plan, np.arange(0, 31))
    assert lr[0] == 0.0 and math.isclose(lr[3], 1e-3)
    assert lr[12] == 0.0  # cosine reaches min_lr at the stage's last step
    assert math.isclose(lr[13], 0.5e-3) and math.isclose(lr[14], 1e-3)  # 2-step re-warm from 0
    assert np.all(lr[23:31] == 1e-3)  # stage 2: constant, no warmup
    assert lr_at(plan, np.array([1000]))[0] == lr[30]
