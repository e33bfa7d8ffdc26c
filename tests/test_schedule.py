"""Budget-driven learning-rate schedule and the budget clock."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mfgnn.training.schedule import BudgetSchedule, lr_at


class FakeTime:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _optimizer(lrs=(1e-3,)):
    groups = [{"params": [torch.nn.Parameter(torch.zeros(2))], "lr": lr} for lr in lrs]
    return torch.optim.Adam(groups)


@pytest.mark.parametrize("shape", ["cosine", "linear"])
def test_lr_at_endpoints(shape):
    base, lo, w = 1e-3, 1e-5, 0.1
    assert lr_at(0.0, base, lo, w, shape, start_factor=0.1) == pytest.approx(1e-4)
    assert lr_at(w, base, lo, w, shape) == pytest.approx(base)
    assert lr_at(1.0, base, lo, w, shape) == pytest.approx(lo)
    assert lr_at(2.0, base, lo, w, shape) == pytest.approx(lo)  # clipped
    assert lr_at(w / 2, base, lo, w, shape, start_factor=0.1) == pytest.approx(0.55e-3)
    # no warm-up: starts at base
    assert lr_at(0.0, base, lo, 0.0, shape) == pytest.approx(base)


def test_lr_at_shapes_midpoint():
    base, lo = 1.0, 0.0
    # p = 0.5 -> both shapes give the midpoint
    assert lr_at(0.5, base, lo, 0.0, "cosine") == pytest.approx(0.5)
    assert lr_at(0.5, base, lo, 0.0, "linear") == pytest.approx(0.5)
    assert lr_at(0.25, base, lo, 0.0, "linear") == pytest.approx(0.75)
    assert lr_at(0.25, base, lo, 0.0, "cosine") == pytest.approx(0.5 * (1 + np.cos(np.pi / 4)))
    with pytest.raises(ValueError):
        lr_at(0.5, base, lo, 0.0, "step")


@pytest.mark.parametrize("shape", ["cosine", "linear"])
def test_monotone_warmup_then_decay(shape):
    w = 0.05
    fs = np.linspace(0, 1, 401)
    lrs = np.array([lr_at(f, 1e-3, 1e-6, w, shape) for f in fs])
    warm, decay = lrs[fs <= w], lrs[fs >= w]
    assert np.all(np.diff(warm) > 0)
    assert np.all(np.diff(decay) < 0)


def test_per_group_ratios_preserved():
    opt = _optimizer((1e-3, 2e-4))
    sched = BudgetSchedule(opt, base_lr=1e-3, min_lr=1e-5, warmup=0.1)
    for f in np.linspace(0, 1, 23):
        lrs = sched.step(float(f))
        got = [g["lr"] for g in opt.param_groups]
        assert got == lrs
        assert got[1] / got[0] == pytest.approx(0.2)
        assert got[0] == pytest.approx(lr_at(f, 1e-3, 1e-5, 0.1, "cosine"))
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-5)


def test_state_round_trip_gives_identical_sequence():
    fractions = np.linspace(0, 1, 50)
    opt_a = _optimizer((1e-3, 5e-4))
    a = BudgetSchedule(opt_a, 1e-3, 1e-6, warmup=0.07, shape="linear", start_factor=0.2)
    for f in fractions[:20]:
        a.step(float(f))
    state = a.state_dict()
    # a fresh optimizer whose groups start elsewhere (e.g. the optimizer state held the last lr)
    opt_b = _optimizer((123.0, 7.0))
    b = BudgetSchedule(opt_b, 9.0, 0.0)
    b.load_state_dict(state)
    assert [g["lr"] for g in opt_b.param_groups] == [g["lr"] for g in opt_a.param_groups]
    for f in fractions[20:]:
        assert a.step(float(f)) == b.step(float(f))
    assert b.get_last_lr() == a.get_last_lr()
    b.step_end(0.3)
    assert opt_b.param_groups[0]["lr"] == pytest.approx(lr_at(0.3, 1e-3, 1e-6, 0.07, "linear", 0.2))
    b.epoch_end(1.23, 0.9)
    assert b.last_fraction == 0.9


def test_schedule_validation():
    opt = _optimizer()
    with pytest.raises(ValueError):
        BudgetSchedule(opt, 1e-3, 1e-2)
    with pytest.raises(ValueError):
        BudgetSchedule(opt, 1e-3, 0.0, warmup=1.0)
    with pytest.raises(ValueError):
        BudgetSchedule(opt, 1e-3, 0.0, shape="exp")
    sched = BudgetSchedule(_optimizer((1e-3, 1e-3)), 1e-3)
    with pytest.raises(ValueError):
        BudgetSchedule(opt, 1e-3).load_state_dict(sched.state_dict())
