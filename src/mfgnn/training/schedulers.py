"""Learning-rate schedules as the trainer sees them.

The loop calls ``step_end(fraction)`` after every optimiser step and
``epoch_end(valid_loss, fraction)`` after every validation, where ``fraction`` in [0, 1]
is the share of the run's budget spent (epochs or wall-clock time, whichever is further
along). A schedule uses what it needs and keeps its state in ``state_dict()`` for exact
resume.
"""

from __future__ import annotations

import torch


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
