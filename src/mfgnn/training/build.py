"""From a run configuration to a :class:`~mfgnn.training.trainer.Trainer` with its parts.

:func:`build_trainer` is the one place that turns ``model:``, ``loss:`` and ``train:``
into a model, a masked loss (with its learned task weights, if any), an optimiser, a
schedule, an EMA and batch sources; other recipes build other parts and hand them to the
same loop. :func:`train` is the whole of ``mfgnn train`` as a function.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from ..config import RunConfig, load_config
from ..data.splits import sample_rows
from ..errors import CheckpointError, ConfigError
from ..loss import MultiFidelityLoss
from ..model_file import save_model
from ..nn import MultiFidelityHIPNN
from .batches import BatchSource, TrainingData
from .config import TrainConfig
from .distributed import (SINGLE, Distributed, restarted_by_torchrun, setup_distributed,
                          teardown_distributed)
from .ema import ExponentialMovingAverage
from .head_refit import MAX_ROWS, HeadRefitStep, energy_only_levels, refit_finishers
from .progress import STDERR, EpochProgress, StepProgress, say
from .run_folder import RunFolder
from .schedule import BudgetSchedule, PlateauScheduler
from .setup import RunSetup, setup_run
from .trainer import Trainer


def pick_device(name: str) -> torch.device:
    """``auto``: CUDA when available, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def build_model(setup: RunSetup) -> MultiFidelityHIPNN:
    """A fresh model for ``setup`` (seeded by ``train.seed``), with its target scales."""
    torch.manual_seed(setup.config.train.seed)
    model = MultiFidelityHIPNN(setup.config.model, setup.fidelities,
                               setup.dataset.elements, setup.self_energies)
    if setup.target_scales is not None:
        model.set_target_scales(setup.target_scales.shift, setup.target_scales.scale)
    return model


def build_optimizer(params, settings: TrainConfig) -> torch.optim.Optimizer:
    """Adam or AdamW over ``params`` (parameters or parameter groups)."""
    cls = torch.optim.AdamW if settings.optimizer == "adamw" else torch.optim.Adam
    return cls(params, lr=settings.lr, weight_decay=settings.weight_decay)


def loss_parameter_groups(loss: MultiFidelityLoss, settings: TrainConfig,
                          device: torch.device | str = "cpu") -> list[dict]:
    """The loss's own trainable parameters (``loss.weighting: uncertainty``: the log σ_t
    of :class:`~mfgnn.loss.TaskWeights`) as one parameter group at ``train.lr`` without
    weight decay, moved to ``device`` first; [] for a loss without parameters."""
    if loss.task_weights is None:
        return []
    loss.task_weights.to(device)
    return [{"params": list(loss.parameters()), "lr": settings.lr, "weight_decay": 0.0}]


def build_scheduler(optimizer: torch.optim.Optimizer, settings: TrainConfig):
    """The learning-rate schedule of ``train:``."""
    if settings.scheduler == "plateau":
        return PlateauScheduler(optimizer, settings.scheduler_factor,
                                settings.scheduler_patience, settings.min_lr)
    return BudgetSchedule(optimizer, settings.lr, settings.min_lr, warmup=settings.warmup,
                          shape=settings.scheduler)


def build_data(setup: RunSetup, dist: Distributed = SINGLE,
               device: torch.device | str | None = None) -> TrainingData:
    """Training (shuffled), validation and test batches of the run's split (this
    process's shares of them in a distributed run); validation on a fixed sample of
    ``train.valid_sample`` rows when set. On a CUDA ``device`` the in-memory batch
    stores are kept there when they fit; training batches are made by
    ``train.num_workers`` processes when > 0."""
    s = setup.config.train

    def source(rows, shuffle):
        return BatchSource(setup.dataset, rows, setup.columns,
                           s.batch_size if shuffle else s.eval_batch_size, shuffle=shuffle,
                           seed=s.seed, cache_limit=s.cache_structures,
                           steps_per_epoch=s.steps_per_epoch if shuffle else None, dist=dist,
                           num_workers=s.num_workers if shuffle else 0, device=device)

    return TrainingData(source(setup.split.train, True),
                        source(setup.split.valid if s.valid_sample is None else
                               sample_rows(setup.split.valid, s.valid_sample, s.seed), False),
                        source(setup.split.test, False))


def head_refit_steps(setup: RunSetup, dist: Distributed = SINGLE,
                     device: torch.device | str | None = None) -> list[HeadRefitStep]:
    """The closed-form head refit at the end (``train.refit_energy_heads``), on the
    training rows: a pass of the training batches, or a sample of ``MAX_ROWS`` read on
    demand when the split is larger or an epoch is not a whole pass."""
    s, labels = setup.config.train, setup.config.labels
    rows = None
    if (s.refit_energy_heads and energy_only_levels(labels)
            and (s.steps_per_epoch is not None or len(setup.split.train) > MAX_ROWS)):
        rows = BatchSource(setup.dataset, sample_rows(setup.split.train, MAX_ROWS, s.seed),
                           setup.columns, s.eval_batch_size, cache_limit=0, dist=dist,
                           device=device)
    return refit_finishers(labels, s, setup.config.loss.per_atom_energy, rows)


def model_writer(setup: RunSetup):
    """``write_model(path, model, info)`` saving a self-describing ``model.pt``."""
    provenance = list(getattr(setup.dataset, "provenance", []))

    def write(path, model, info):
        device = next(model.parameters()).device
        save_model(path, model.cpu(), setup.config.labels, {**info, "provenance": provenance})
        model.to(device)

    return write


def build_trainer(setup: RunSetup, out_dir: str | Path, resume: bool = False,
                  log=STDERR, dist: Distributed = SINGLE) -> Trainer:
    """The trainer of ``setup`` writing into ``out_dir``; with ``resume`` it continues
    from the folder's checkpoint when there is one. ``dist``: this process's place in
    a distributed run (only rank 0 logs and writes)."""
    folder = RunFolder(out_dir, setup.config.to_dict(), setup.split)
    if folder.checkpoint.is_file() and not resume:
        raise CheckpointError(
            f"{folder.path} already holds a run (checkpoint.pt); pass --resume to "
            "continue it or choose another output folder")
    settings = setup.config.train
    if dist.enabled and settings.batch_size < dist.world_size:
        raise ConfigError(f"train.batch_size ({settings.batch_size}) is the global batch; "
                          f"it must be at least the number of processes ({dist.world_size})")
    log = log if dist.is_main else None
    device = pick_device(settings.device)
    model = build_model(setup).to(device)
    scales = model.target_scale.cpu() if setup.config.model.scale_targets else None
    loss = MultiFidelityLoss(setup.fidelities, setup.config.labels, setup.config.loss, scales)
    loss_groups = loss_parameter_groups(loss, settings, device)
    optimizer = build_optimizer(
        [{"params": list(model.parameters())}, *loss_groups] if loss_groups
        else model.parameters(), settings)
    for note in setup.notes:
        say(log, note)
    if dist.enabled:
        say(log, f"distributed: {dist.world_size} processes, global batch "
                 f"{settings.batch_size} ({settings.batch_size / dist.world_size:.4g} each)")
    trainer = Trainer(
        model, loss,
        optimizer, build_scheduler(optimizer, settings), build_data(setup, dist, device), folder,
        settings,
        ema=ExponentialMovingAverage(model, settings.ema_decay) if settings.ema_decay > 0 else None,
        callbacks=[EpochProgress(setup.fidelities, log)], write_model=model_writer(setup),
        finishers=head_refit_steps(setup, dist, device), device=device, log=log, dist=dist)
    if settings.progress_every > 0:
        trainer.step_callbacks.append(StepProgress(settings.progress_every, log))
    if resume and folder.checkpoint.is_file():
        trainer.restore()
    return trainer


def train(config: RunConfig | str | Path, out_dir: str | Path, resume: bool = False,
          log=STDERR) -> dict:
    """Train the run described by ``config`` into ``out_dir``; returns the test metrics.

    Under ``torchrun`` (several processes) this is one rank of a data-parallel run
    (:mod:`mfgnn.training.distributed`); a worker group restarted by
    ``torchrun --max-restarts`` resumes from the last checkpoint."""
    if not isinstance(config, RunConfig):
        config = load_config(config)
    if config.finetune is not None:
        raise ConfigError("the configuration has a finetune: section; run it with "
                          "mfgnn finetune BASE CONFIG --out DIR")
    dist, device = setup_distributed(config.train.device)
    try:
        if device != config.train.device:
            config.train = dataclasses.replace(config.train, device=device)
        setup = setup_run(config, Path(out_dir))
        resume = resume or restarted_by_torchrun()
        return build_trainer(setup, out_dir, resume=resume, log=log, dist=dist).fit()
    finally:
        teardown_distributed()
