r"""Reptile meta-learning across levels of theory or datasets, then fine-tuning on the
target level (Nichol, Achiam & Schulman 2018; Allen et al., "Learning together", seed
paper 004, Algorithm 2).

**Meta stage.** The training rows are split into tasks τ = 1..T (``meta.tasks``):

* ``fidelities``: one task per trained level t, the training rows that have a label of
  t, served with only t's labels (the other columns NaN, so the masked loss trains the
  shared trunk and t's head): :class:`~mfgnn.training.batches.BatchSource` with
  ``kinds``;
* ``datasets``: one task per dataset k of a multi-dataset spec, the training rows with
  ``dataset.dataset_index == k`` with all their selected labels.

Each outer step n samples a task uniformly (a generator seeded by ``train.seed``) and
takes k optimiser steps on its batches (each batch: forward → masked loss → backward →
gradient clipping ``train.grad_clip`` → Adam/AdamW step at ``meta.inner_lr``):

.. math::

    \tau_n \sim \mathcal U\{1..T\}, \qquad \theta^{(0)} = \theta_n,

    \theta^{(j)} = \theta^{(j-1)}
        - \mathrm{Adam}\big(\nabla_\theta L_{\tau_n}(\theta^{(j-1)}; b_j)\big),
        \quad j = 1..k,

    \theta_{n+1} = \theta_n + \varepsilon\,\big(\theta^{(k)} - \theta_n\big).

The interpolation is ``torch.lerp``, exact at ε = 1 (θ_{n+1} = θ^{(k)} bit for bit).
Only trained parameters move (buffers such as self-energies and target scales are
fixed). **Optimiser:** one inner optimiser is kept across outer steps (its Adam moments
carry over, as in Nichol et al.'s implementation); ``reset_optimizer: true`` makes a
fresh one for every outer step instead. The meta stage has a constant learning rate
and no EMA. With k = 1 and ε = 1 it is therefore *joint training*: exactly the
trainer's optimiser steps on the sampled tasks' batches, i.e. SGD on the expected task
loss (with a single task that holds every label, ordinary training step for step).
Learned task weights (``loss.weighting: uncertainty``) are meta-trained and
interpolated like the model's parameters, but fine-tuning starts its own.

**Budget.** The meta stage ends after ``meta.outer_steps`` outer steps (default: as many
inner steps as ``train.max_epochs`` passes over every task's rows,
⌈max_epochs · Σ_τ ⌈n_τ / B⌉ / k⌉) or ``meta_share`` of ``train.max_time``, whichever
comes first. **Fine-tuning** (:func:`mfgnn.training.finetune_build.finetune` on the
saved meta model, no frozen groups) trains the target level's labels for the rest of
``train.max_time`` and at most ``meta.finetune_epochs`` epochs (150, the paper's
retraining limit for k > 1; also capped by ``train.max_epochs``).

Files of ``OUT`` (:func:`reptile_finetune`): ``meta/`` (``model.pt`` of the
meta-trained weights, ``meta.json`` with the options and every outer step, ``split.json``,
``config.yaml``), and the fine-tune run folder itself (``config.yaml``, ``split.json``,
``checkpoint.pt``, ``metrics.csv``, ``model.pt``, ``test_metrics.json``). A finished
meta stage is reused on resume; an interrupted one starts again (it has no checkpoint);
fine-tuning resumes from its checkpoint.
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from ..config import RunConfig, load_config
from ..config_checks import build_section, check_choice, check_number
from ..errors import CheckpointError, ConfigError, DataError
from ..fileio import write_json_atomic, write_text_atomic
from ..loss import MultiFidelityLoss
from ..model_file import save_model
from .batches import BatchSource
from .build import build_model, build_optimizer, loss_parameter_groups, pick_device
from .config import TrainConfig
from .evaluation import evaluate_model
from .finetune import FinetuneConfig
from .progress import STDERR, say
from .setup import RunSetup, setup_run
from .trainer import TrainingDiverged

#: Choices of :attr:`MetaConfig.tasks`.
TASK_KINDS = ("fidelities", "datasets")


@dataclass
class MetaConfig:
    """Options of the Reptile recipe (the ``meta:`` section).

    Attributes:
        tasks: ``fidelities`` (one task per trained level) or ``datasets`` (one per
            dataset of a multi-dataset spec).
        k: inner optimiser steps per outer step (k = 1: joint training).
        epsilon: outer step size ε, 0 < ε ≤ 1 (θ ← θ + ε(θ' − θ); the paper uses 1).
        outer_steps: outer steps of the meta stage (None: see the module text).
        inner_lr: learning rate of the inner steps (None: ``train.lr``).
        reset_optimizer: a fresh inner optimiser for every outer step (default: one
            optimiser kept across outer steps).
        meta_share: fraction of ``train.max_time`` for the meta stage; fine-tuning gets
            the rest.
        finetune_epochs: most epochs of fine-tuning (None: ``train.max_epochs``).
    """

    tasks: str = "fidelities"
    k: int = 5
    epsilon: float = 1.0
    outer_steps: int | None = None
    inner_lr: float | None = None
    reset_optimizer: bool = False
    meta_share: float = 2.0 / 3.0
    finetune_epochs: int | None = 150

    def __post_init__(self) -> None:
        check_choice(self.tasks, TASK_KINDS, "meta", "tasks")
        check_number(self.k, "meta.k", minimum=1, integer=True)
        check_number(self.epsilon, "meta.epsilon", minimum=0, strict=True)
        if self.epsilon > 1:
            raise ConfigError(f"meta.epsilon must be in (0, 1], got {self.epsilon}")
        check_number(self.outer_steps, "meta.outer_steps", minimum=1, integer=True,
                     optional=True)
        check_number(self.inner_lr, "meta.inner_lr", minimum=0, strict=True, optional=True)
        if not isinstance(self.reset_optimizer, bool):
            raise ConfigError("meta.reset_optimizer must be true or false")
        check_number(self.meta_share, "meta.meta_share", minimum=0, strict=True)
        if self.meta_share >= 1:
            raise ConfigError(f"meta.meta_share is the meta stage's fraction of "
                              f"train.max_time (0 < meta_share < 1), got {self.meta_share}")
        check_number(self.finetune_epochs, "meta.finetune_epochs", minimum=1, integer=True,
                     optional=True)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class Task:
    """One task: its name and an endless stream of its batches (``source.batches(epoch)``
    for epoch 0, 1, …, each reshuffled by the source's seed and the epoch)."""

    def __init__(self, name: str, source) -> None:
        self.name, self.source = name, source
        self.epoch, self._batches = 0, None

    def __len__(self) -> int:
        return len(self.source)

    def passes(self) -> int:
        """Batches in one pass over the task's rows."""
        return max(1, math.ceil(len(self.source) / self.source.batch_size))

    def next_batch(self):
        for _ in range(2):
            if self._batches is None:
                self._batches = iter(self.source.batches(self.epoch))
            try:
                return next(self._batches)
            except StopIteration:
                self._batches, self.epoch = None, self.epoch + 1
        raise DataError(f"task {self.name!r} has no batches")


def make_tasks(setup: RunSetup, meta: MetaConfig) -> list[Task]:
    """The tasks of ``setup``'s training rows (see the module text); a task without
    training rows is left out."""
    s, data, labels = setup.config.train, setup.dataset, setup.config.labels
    rows = np.asarray(setup.split.train, dtype=np.int64)
    tasks: list[Task] = []

    def source(task_rows, kinds=None):
        return BatchSource(data, task_rows.tolist(), setup.columns, s.batch_size,
                           shuffle=True, seed=s.seed + 1000 * (len(tasks) + 1),
                           cache_limit=s.cache_structures, kinds=kinds)

    if meta.tasks == "fidelities":
        for t, (name, col) in enumerate(zip(setup.fidelities, setup.columns)):
            wanted = set(labels.get(name, []))
            has = np.zeros(len(rows), dtype=bool)
            if "energy" in wanted:
                has |= np.isfinite(np.asarray(data.energies)[rows, col])
            if "forces" in wanted:
                has |= np.asarray(data.has_force_rows)[rows, col]
            if has.any():
                kinds = [wanted if j == t else set() for j in range(len(setup.fidelities))]
                tasks.append(Task(name, source(rows[has], kinds)))
    else:
        index = np.asarray(data.dataset_index)[rows]
        for k, name in enumerate(data.names):
            if (index == k).any():
                tasks.append(Task(name, source(rows[index == k])))
    if not tasks:
        raise DataError("meta: no task has training rows")
    return tasks


class Reptile:
    """The meta stage: ``outer_step()`` as in the module text, ``run()`` until a budget.

    Args:
        model: the model to meta-train (already on ``device``).
        loss_fn: the masked loss over every task's labels (its own parameters, learned
            task weights, are trained and interpolated like the model's).
        tasks: objects with ``name`` and ``next_batch()`` (:class:`Task`).
        meta: the Reptile options.
        settings: optimiser type, ``lr`` (unless ``meta.inner_lr``), ``weight_decay``,
            ``grad_clip``, ``max_bad_steps``, ``seed`` (task sampling).
    """

    def __init__(self, model, loss_fn, tasks, meta: MetaConfig, settings: TrainConfig,
                 device: torch.device | str = "cpu", log=STDERR) -> None:
        self.model, self.loss_fn, self.tasks = model, loss_fn, list(tasks)
        shares = loss_fn.trunk_gradient()
        self._trunk_gradient = {"trunk_gradient": shares} if shares else {}
        self.meta, self.settings, self.device, self.log = meta, settings, device, log
        self.inner = dataclasses.replace(settings, lr=meta.inner_lr or settings.lr)
        self.groups = ([{"params": [p for p in model.parameters() if p.requires_grad]}]
                       + loss_parameter_groups(loss_fn, self.inner, device))
        self.params = [p for g in self.groups for p in g["params"]]
        self.optimizer = build_optimizer(self.groups, self.inner)
        self.generator = torch.Generator().manual_seed(settings.seed)
        self.steps, self.consecutive_bad, self.history = 0, 0, []

    def inner_step(self, batch) -> float | None:
        """One optimiser step on ``batch``, as the trainer takes it; None if skipped."""
        force_fids = self.loss_fn.needs_forces(batch)
        out = self.model(batch, forces=force_fids or False, training=True,
                         **self._trunk_gradient)
        loss = self.loss_fn(out, batch, self.model.hierarchicality(out),
                            self.model.head_regularization()).total
        self.optimizer.zero_grad(set_to_none=True)
        if torch.isfinite(loss):
            loss.backward()
            clip = self.settings.grad_clip if self.settings.grad_clip > 0 else math.inf
            norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
            if torch.isfinite(norm):
                self.optimizer.step()
                self.consecutive_bad = 0
                return float(loss.detach())
        self.optimizer.zero_grad(set_to_none=True)
        self.consecutive_bad += 1
        warnings.warn(f"meta step {self.steps + 1}: non-finite loss or gradient, inner step "
                      f"skipped ({self.consecutive_bad} in a row)", RuntimeWarning, stacklevel=2)
        if self.consecutive_bad >= self.settings.max_bad_steps:
            raise TrainingDiverged(f"{self.consecutive_bad} consecutive non-finite losses or "
                                   "gradients in the meta stage (lower meta.inner_lr)")
        return None

    def outer_step(self, task: int | None = None) -> dict:
        """Sample a task (or take ``task``), k inner steps from θ, θ ← θ + ε(θ' − θ)."""
        if task is None:
            task = int(torch.randint(len(self.tasks), (1,), generator=self.generator))
        if self.meta.reset_optimizer:
            self.optimizer = build_optimizer(self.groups, self.inner)
        self.model.train()
        start = [p.detach().clone() for p in self.params]
        losses = [self.inner_step(self.tasks[task].next_batch().to(self.device))
                  for _ in range(self.meta.k)]
        with torch.no_grad():
            for p, p0 in zip(self.params, start):
                p.copy_(torch.lerp(p0, p, self.meta.epsilon))
        self.steps += 1
        done = [x for x in losses if x is not None]
        row = {"step": self.steps, "task": self.tasks[task].name,
               "loss": sum(done) / len(done) if done else float("nan")}
        self.history.append(row)
        return row

    def run(self, outer_steps: int, max_time: float | None = None) -> list[dict]:
        """Outer steps until ``outer_steps`` or ``max_time`` seconds; the history."""
        start, report = time.monotonic(), time.monotonic()
        while self.steps < outer_steps:
            if max_time is not None and time.monotonic() - start >= max_time:
                say(self.log, f"meta stage: time budget of {max_time:.0f} s reached")
                break
            row = self.outer_step()
            if time.monotonic() - report > 10 or self.steps == outer_steps:
                report = time.monotonic()
                say(self.log, f"meta step {self.steps}/{outer_steps}  task {row['task']}  "
                    f"loss {row['loss']:.4g}  [{report - start:.0f} s]")
        return self.history


def default_outer_steps(tasks: list[Task], meta: MetaConfig, max_epochs: int) -> int:
    """⌈max_epochs · Σ_τ ⌈n_τ / B⌉ / k⌉: the inner steps of ``max_epochs`` passes over
    every task's rows."""
    return max(1, math.ceil(max_epochs * sum(t.passes() for t in tasks) / meta.k))


def meta_train(config: RunConfig, meta: MetaConfig, out_dir: str | Path,
               log=STDERR) -> Path:
    """The meta stage of ``config`` (labels of every task; its split; ``train.max_time``
    is the meta stage's own budget) into ``out_dir``: ``model.pt`` of the meta-trained
    weights, ``meta.json``, ``split.json``, ``config.yaml``. Returns the model path."""
    out = Path(out_dir)
    setup = setup_run(config, out)
    out.mkdir(parents=True, exist_ok=True)
    setup.split.save(out / "split.json")
    write_text_atomic(out / "config.yaml", yaml.safe_dump(setup.config.to_dict(), sort_keys=False))
    settings = setup.config.train
    device = pick_device(settings.device)
    model = build_model(setup).to(device)
    scales = model.target_scale.cpu() if setup.config.model.scale_targets else None
    loss = MultiFidelityLoss(setup.fidelities, setup.config.labels, setup.config.loss, scales)
    tasks = make_tasks(setup, meta)
    steps = meta.outer_steps or default_outer_steps(tasks, meta, settings.max_epochs)
    say(log, f"meta stage (Reptile k {meta.k}, ε {meta.epsilon}): tasks "
        + ", ".join(f"{t.name} ({len(t)} rows)" for t in tasks)
        + f"; {steps} outer steps" + (f" or {settings.max_time:.0f} s" if settings.max_time
                                      else ""))
    t0 = time.monotonic()
    learner = Reptile(model, loss, tasks, meta, settings, device=device, log=log)
    learner.run(steps, settings.max_time)
    seconds = time.monotonic() - t0
    valid = BatchSource(setup.dataset, setup.split.valid, setup.columns,
                        settings.eval_batch_size, cache_limit=settings.cache_structures)
    valid_loss, valid_metrics = evaluate_model(model, valid.batches(), loss)
    record = {"options": meta.to_dict(), "tasks": [t.name for t in tasks],
              "outer_steps": learner.steps, "planned_outer_steps": steps,
              "seconds": round(seconds, 3), "valid_loss": valid_loss,
              "valid_metrics": valid_metrics, "history": learner.history}
    write_json_atomic(out / "meta.json", record)
    save_model(out / "model.pt", model.cpu(), setup.config.labels,
               {"reptile": {k: v for k, v in record.items() if k != "history"},
                "provenance": list(getattr(setup.dataset, "provenance", []))})
    return out / "model.pt"


def reptile_finetune(config: RunConfig | str | Path, meta: MetaConfig | dict | None,
                     out_dir: str | Path, target: str | None = None, resume: bool = False,
                     log=STDERR) -> dict:
    """Reptile over ``config``'s labels (``OUT/meta``), then fine-tuning on ``target``'s
    labels (default: the highest trained level) into ``OUT``; returns the test metrics.

    ``train.max_time`` is split: ``meta.meta_share`` for the meta stage, the rest for
    fine-tuning; fine-tuning trains at most ``meta.finetune_epochs`` epochs."""
    from .finetune_build import finetune

    if not isinstance(config, RunConfig):
        config = load_config(config)
    if config.finetune is not None:
        raise ConfigError("the configuration has a finetune: section; Reptile sets its "
                          "own fine-tuning (meta.finetune_epochs)")
    meta = meta if isinstance(meta, MetaConfig) else build_section(MetaConfig, meta, "meta")
    trained = [f for f, kinds in config.labels.items() if kinds]
    target = target or (trained[-1] if trained else None)
    if target not in trained:
        raise ConfigError(f"Reptile: the target level {target!r} has no labels in the "
                          f"configuration (trained: {', '.join(trained)})")
    out = Path(out_dir)
    budget, s = config.train.max_time, config.train
    t_meta = None if budget is None else budget * meta.meta_share
    meta_dir = out / "meta"
    if (meta_dir / "model.pt").is_file() and not resume:
        raise CheckpointError(f"{out} already holds a Reptile run (meta/model.pt); pass "
                              "resume=True to continue it or choose another folder")
    if not (meta_dir / "model.pt").is_file():
        meta_config = dataclasses.replace(config, train=dataclasses.replace(s, max_time=t_meta))
        meta_train(meta_config, meta, meta_dir, log=log)
    else:
        say(log, f"meta stage: reusing {meta_dir / 'model.pt'}")
    epochs = min(s.max_epochs, meta.finetune_epochs or s.max_epochs)
    ft_config = dataclasses.replace(
        config, labels={target: list(config.labels[target])},
        split=dataclasses.replace(config.split, file=str((meta_dir / "split.json").resolve())),
        train=dataclasses.replace(s, max_epochs=epochs,
                                  max_time=None if budget is None else budget - t_meta),
        finetune=FinetuneConfig())
    say(log, f"fine-tuning {target} {config.labels[target]} -> {out}"
        + (f" ({budget - t_meta:.0f} s)" if budget else ""))
    return finetune(meta_dir / "model.pt", ft_config, out,
                    resume=resume and (out / "checkpoint.pt").is_file(), log=log)
