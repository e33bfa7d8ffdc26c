r"""Learning-rate schedule that spends the training budget, epochs or wall-clock time.

The learning rate is a pure function of the elapsed *fraction* f ∈ [0, 1] of the budget,

.. math::  f = \min\!\left(1,\ \max\!\left(\frac{\text{epochs done}}{\text{max\_epochs}},\
           \frac{\text{steps done}}{\text{max\_steps}},\
           \frac{\text{seconds trained}}{\text{max\_time}}\right)\right)

(each term only when that budget is set), so a run limited by wall-clock time reaches
``min_lr`` exactly when its time runs out, and a run limited by epochs when its epochs do.

With warm-up fraction w, base rate η₀, final rate η_min and start rate η_s = s·η₀
(s = ``start_factor``):

.. math::

    \eta(f) = \begin{cases}
        \eta_s + (\eta_0 - \eta_s)\, f / w & f < w \quad\text{(linear warm-up)}\\
        \eta_\mathrm{min} + (\eta_0 - \eta_\mathrm{min})\,\tfrac12\,(1 + \cos \pi p)
            & \text{cosine}\\
        \eta_0 - (\eta_0 - \eta_\mathrm{min})\, p & \text{linear}
    \end{cases}
    \qquad p = \frac{f - w}{1 - w}.

So η(0) = η_s, η(w) = η₀, η(1) = η_min. Parameter groups with different initial rates
g_k keep their ratios: group k gets η_k(f) = (g_k / η₀) · η(f).

The trainer sees every schedule through two hooks, ``step_end(fraction)`` after each
optimiser step and ``epoch_end(valid_loss, fraction)`` after each validation, plus
``state_dict``/``load_state_dict`` for exact resume: :class:`BudgetSchedule` uses the
fraction, :class:`PlateauScheduler` (ReduceLROnPlateau) the validation loss.
"""

from __future__ import annotations

import math
from typing import Any

import torch

SHAPES = ("cosine", "linear")


def lr_at(fraction: float, base_lr: float, min_lr: float, warmup: float = 0.05,
          shape: str = "cosine", start_factor: float = 0.1) -> float:
    """Learning rate η(f) at budget fraction ``fraction`` (clipped to [0, 1]); see module doc.

    Args:
        fraction: elapsed fraction f of the budget.
        base_lr: η₀, the rate at the end of warm-up.
        min_lr: η_min, the rate at f = 1.
        warmup: w, fraction of the budget spent warming up (0: none).
        shape: "cosine" or "linear" decay after warm-up.
        start_factor: η_s / η₀ at f = 0.
    """
    if shape not in SHAPES:
        raise ValueError(f"shape must be one of {SHAPES}, got {shape!r}")
    f = min(max(float(fraction), 0.0), 1.0)
    if f < warmup:
        start = start_factor * base_lr
        return start + (base_lr - start) * f / warmup
    p = 1.0 if warmup >= 1.0 else (f - warmup) / (1.0 - warmup)
    if shape == "cosine":
        return min_lr + (base_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * p))
    return base_lr - (base_lr - min_lr) * p


def _check(base_lr: float, min_lr: float, warmup: float, shape: str, start_factor: float) -> None:
    if not base_lr > 0:
        raise ValueError(f"base_lr must be > 0, got {base_lr}")
    if not 0 <= min_lr <= base_lr:
        raise ValueError(f"need 0 <= min_lr <= base_lr, got min_lr={min_lr}, base_lr={base_lr}")
    if not 0 <= warmup < 1:
        raise ValueError(f"warmup must be a fraction in [0, 1), got {warmup}")
    if not 0 <= start_factor <= 1:
        raise ValueError(f"start_factor must be in [0, 1], got {start_factor}")
    if shape not in SHAPES:
        raise ValueError(f"shape must be one of {SHAPES}, got {shape!r}")


class BudgetSchedule:
    """Sets every parameter group's lr from the budget fraction (call :meth:`step` before
    each optimiser step, or each epoch).

    Args:
        optimizer: its groups' current ``lr`` are taken as their initial rates g_k.
        base_lr: η₀ (the rate that g_k are relative to; usually the lr of the first group).
        min_lr: η_min at the end of the budget.
        warmup: warm-up fraction w of the budget.
        shape: "cosine" or "linear".
        start_factor: η(0)/η₀.

    Construction applies η(0) to the optimizer.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, base_lr: float, min_lr: float = 0.0,
                 warmup: float = 0.05, shape: str = "cosine", start_factor: float = 0.1) -> None:
        _check(float(base_lr), float(min_lr), float(warmup), shape, float(start_factor))
        self.optimizer = optimizer
        self.base_lr = float(base_lr)
        self.min_lr = float(min_lr)
        self.warmup = float(warmup)
        self.shape = shape
        self.start_factor = float(start_factor)
        self.initial_lrs = [float(g["lr"]) for g in optimizer.param_groups]
        self.last_fraction = 0.0
        self._apply(0.0)

    def lr(self, fraction: float) -> float:
        """η(f) for the base rate (not group-scaled)."""
        return lr_at(fraction, self.base_lr, self.min_lr, self.warmup, self.shape, self.start_factor)

    def group_lrs(self, fraction: float) -> list[float]:
        """η_k(f) = (g_k / η₀) η(f) of every parameter group."""
        eta = self.lr(fraction)
        return [g0 / self.base_lr * eta for g0 in self.initial_lrs]

    def step(self, fraction: float) -> list[float]:
        """Set every group's lr for budget fraction ``fraction``; returns the rates set."""
        self.last_fraction = min(max(float(fraction), 0.0), 1.0)
        return self._apply(self.last_fraction)

    def step_end(self, fraction: float) -> None:
        """Trainer hook after every optimiser step (same as :meth:`step`)."""
        self.step(fraction)

    def epoch_end(self, valid_loss: float, fraction: float) -> None:
        """Trainer hook after a validation; the loss is not used."""
        self.step(fraction)

    def get_last_lr(self) -> list[float]:
        """The rates of the last :meth:`step` (torch scheduler convention)."""
        return self.group_lrs(self.last_fraction)

    def _apply(self, fraction: float) -> list[float]:
        lrs = self.group_lrs(fraction)
        for group, lr in zip(self.optimizer.param_groups, lrs):
            group["lr"] = lr
        return lrs

    def state_dict(self) -> dict[str, Any]:
        return {"base_lr": self.base_lr, "min_lr": self.min_lr, "warmup": self.warmup,
                "shape": self.shape, "start_factor": self.start_factor,
                "initial_lrs": list(self.initial_lrs), "last_fraction": self.last_fraction}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the settings and re-apply the last rates to the optimizer."""
        _check(float(state["base_lr"]), float(state["min_lr"]), float(state["warmup"]),
               state["shape"], float(state["start_factor"]))
        if len(state["initial_lrs"]) != len(self.optimizer.param_groups):
            raise ValueError(f"schedule state has {len(state['initial_lrs'])} parameter groups, "
                             f"the optimizer {len(self.optimizer.param_groups)}")
        self.base_lr = float(state["base_lr"])
        self.min_lr = float(state["min_lr"])
        self.warmup = float(state["warmup"])
        self.shape = state["shape"]
        self.start_factor = float(state["start_factor"])
        self.initial_lrs = [float(x) for x in state["initial_lrs"]]
        self.last_fraction = float(state["last_fraction"])
        self._apply(self.last_fraction)


class PlateauScheduler:
    """ReduceLROnPlateau on the validation loss: η ← factor · η after ``patience``
    epochs without improvement, never below ``min_lr``."""

    def __init__(self, optimizer: torch.optim.Optimizer, factor: float, patience: int,
                 min_lr: float):
        self.inner = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, factor=factor, patience=patience, min_lr=min_lr)

    def step_end(self, fraction: float) -> None:
        pass

    def epoch_end(self, valid_loss: float, fraction: float) -> None:
        self.inner.step(valid_loss)

    def state_dict(self) -> dict:
        return self.inner.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.inner.load_state_dict(state)
