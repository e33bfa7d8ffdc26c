"""The ``train:`` section of a run: optimiser, schedule, stopping, EMA, budget."""

from __future__ import annotations

from dataclasses import dataclass

from ..config_checks import check_choice, check_number
from ..errors import ConfigError

#: Optimisers accepted by :attr:`TrainConfig.optimizer`.
OPTIMIZERS = ("adam", "adamw")
#: Learning-rate schedules accepted by :attr:`TrainConfig.scheduler`.
SCHEDULERS = ("plateau", "cosine", "linear")


@dataclass
class TrainConfig:
    """Optimisation settings.

    Adam or AdamW; the learning rate follows ``scheduler``: ``plateau``
    (ReduceLROnPlateau on the validation loss: ``scheduler_patience``,
    ``scheduler_factor``) or a schedule that spends the budget, ``cosine`` or ``linear``:
    linear warm-up over the first ``warmup`` fraction of the budget, then decay to
    ``min_lr`` when ``max_epochs`` or ``max_time`` runs out, whichever comes first
    (:mod:`mfgnn.training.schedule`); ``min_lr`` is the floor of every schedule. Early
    stopping after
    ``patience`` epochs without improvement (null: no early stopping; the best
    validation epoch is still the one saved), an exponential moving average of the weights
    (``ema_decay``, 0 turns it off; validation and the saved model use the EMA weights),
    gradient-norm clipping (``grad_clip``, 0 turns it off), ``max_time`` seconds of
    wall-clock budget (counted over resumes), and ``max_bad_steps`` consecutive
    non-finite losses before giving up. Splits of at most ``cache_structures``
    structures keep their graphs in memory.

    For data too large for whole epochs: ``max_steps`` caps the optimiser steps of the
    run (a budget like ``max_time``: the schedule decays over it), ``steps_per_epoch``
    makes an epoch (validation, checkpoint, metrics row) that many batches taken from
    successive shuffled passes, and ``valid_sample`` validates on a fixed random sample
    of that many validation structures (drawn once from the run seed). ``batch_size``
    is the global batch: a run under ``torchrun`` with N processes gives each
    ``batch_size / N`` structures of every batch, and the result does not depend on N
    (:mod:`mfgnn.training.distributed`). ``progress_every`` seconds (0: never) between
    progress lines within an epoch (steps/s, structures/s, ETA). ``num_workers``
    processes make training batches ahead (from a pack's memory maps, for instance);
    0 makes them in the training process, which is fastest for small molecules.

    ``batch_size: auto`` is the rule of ``mfgnn experiment``'s short CPU budgets, chosen
    from the training rows when the run starts (:func:`~mfgnn.training.setup.auto_batch_size`):
    32 structures when they hold fewer than 8 atoms on average, 8 from 8 atoms up. On
    one CPU core a step of 8 small molecules costs nearly what a step of 32 does, while
    on rMD17's 9–24-atom molecules it costs under half, so a fixed budget buys more steps
    (measured in the README's batch-size tables).

    ``refit_energy_heads`` (off by default): at the end, with the best weights loaded,
    refit the linear heads of every level trained on energies only in closed form (ridge
    around the trained weights on the training rows, strength chosen on the validation
    energies; :mod:`mfgnn.training.head_refit`), and keep the trained heads unless the
    refit lowers the validation energy error clearly. What it did is written to
    ``head_refit.json``.
    """

    max_epochs: int = 500
    batch_size: int | str = 64
    eval_batch_size: int = 256
    lr: float = 1.0e-3
    scheduler: str = "plateau"
    warmup: float = 0.05
    optimizer: str = "adam"
    weight_decay: float = 0.0
    scheduler_patience: int = 10
    scheduler_factor: float = 0.5
    min_lr: float = 1.0e-6
    patience: int | None = 25
    ema_decay: float = 0.99
    grad_clip: float = 10.0
    seed: int = 0
    max_time: float | None = None
    max_bad_steps: int = 20
    device: str = "auto"
    cache_structures: int = 200_000
    max_steps: int | None = None
    steps_per_epoch: int | None = None
    valid_sample: int | None = None
    progress_every: float = 60.0
    num_workers: int = 0
    refit_energy_heads: bool = False

    def __post_init__(self) -> None:
        w = "train."
        for name in ("max_epochs", "eval_batch_size", "max_bad_steps"):
            check_number(getattr(self, name), w + name, minimum=1, integer=True)
        if self.batch_size != "auto":
            check_number(self.batch_size, w + "batch_size", minimum=1, integer=True)
        for name in ("scheduler_patience", "seed", "cache_structures", "num_workers"):
            check_number(getattr(self, name), w + name, minimum=0, integer=True)
        check_number(self.patience, w + "patience", minimum=1, integer=True, optional=True)
        for name in ("max_steps", "steps_per_epoch", "valid_sample"):
            check_number(getattr(self, name), w + name, minimum=1, integer=True, optional=True)
        check_number(self.progress_every, w + "progress_every", minimum=0)
        check_number(self.lr, w + "lr", minimum=0, strict=True)
        check_number(self.min_lr, w + "min_lr", minimum=0)
        for name in ("weight_decay", "grad_clip"):
            check_number(getattr(self, name), w + name, minimum=0)
        check_number(self.max_time, w + "max_time", minimum=0, strict=True, optional=True)
        check_number(self.scheduler_factor, w + "scheduler_factor", minimum=0, strict=True)
        if self.scheduler_factor >= 1:
            raise ConfigError(f"train.scheduler_factor must be < 1, got {self.scheduler_factor}")
        check_number(self.ema_decay, w + "ema_decay", minimum=0)
        if self.ema_decay >= 1:
            raise ConfigError(f"train.ema_decay must be < 1 (0 turns it off), got {self.ema_decay}")
        if not isinstance(self.refit_energy_heads, bool):
            raise ConfigError(f"train.refit_energy_heads must be true or false, got "
                              f"{self.refit_energy_heads!r}")
        check_choice(self.optimizer, OPTIMIZERS, "train", "optimizer")
        check_choice(self.scheduler, SCHEDULERS, "train", "scheduler")
        check_number(self.warmup, w + "warmup", minimum=0)
        if self.warmup >= 1:
            raise ConfigError(f"train.warmup is a fraction of the budget (< 1), got {self.warmup}")
        if self.min_lr > self.lr:
            raise ConfigError(f"train.min_lr ({self.min_lr}) exceeds train.lr ({self.lr})")
        if not isinstance(self.device, str) or not (
                self.device in ("auto", "cpu") or self.device.startswith("cuda")):
            raise ConfigError(f"train.device must be auto, cpu or cuda[:N], got {self.device!r}")
