"""The training loop, handed its parts: model, loss, optimiser, schedule, batches, run
folder, and optionally an EMA of the weights and callbacks.

Each epoch: for every training batch forward → loss → backward → step (a batch with a
non-finite loss or gradient is skipped, see :class:`TrainingDiverged`); then the
validation loss of the (EMA) weights decides the best model and early stopping; a
checkpoint and ``metrics.csv`` are written atomically (learned task weights of the
loss, ``loss_fn.task_weights``, are part of the checkpoint and logged as σ_t). Shuffling
is seeded by the run seed and the epoch, so a resumed run repeats the uninterrupted one
exactly on CPU. Building the parts from a run configuration is
:func:`mfgnn.training.build.build_trainer`; other recipes (fine-tuning, meta-learning,
distributed training) hand in other parts.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Sequence

import torch

from ..errors import ConfigError, MfgnnError
from .batches import BatchSource, TrainingData
from .config import TrainConfig
from .distributed import SINGLE, Distributed, empty_share, kill_for_test
from .ema import ExponentialMovingAverage
from .evaluation import evaluate_model
from .progress import STDERR, say
from .run_folder import RunFolder, write_errors


class TrainingDiverged(MfgnnError):
    """``train.max_bad_steps`` consecutive non-finite losses or gradients (each one is
    skipped with a RuntimeWarning), or a non-finite validation loss; the last good
    checkpoint is kept."""


class Trainer:
    """Trains ``model`` on ``data`` and writes the run into ``folder``.

    Args:
        model: a :class:`~mfgnn.nn.MultiFidelityHIPNN` (already on ``device``).
        loss_fn: ``loss_fn(out, batch, hierarchicality, regularization) -> LossTerms``;
            its ``task_weights`` (an ``nn.Module`` of learned σ_t, or None/absent) are
            trained, checkpointed and logged as ``sigma_<fidelity>``.
        optimizer: a torch optimiser over the parameters to train (the loss's own
            parameters included: a ConfigError otherwise).
        scheduler: ``step_end(fraction)`` / ``epoch_end(valid_loss, fraction)`` /
            ``state_dict`` (see :mod:`mfgnn.training.schedule`).
        data: the training, validation and test batch sources.
        folder: the run folder (checkpoints, metrics, model, test metrics).
        settings: budget, early stopping, clipping, bad-step limit.
        ema: exponential moving average of the weights, or None.
        callbacks: called as ``callback(trainer, row)`` after every epoch (and the
            ``step_callbacks`` attribute's as ``callback(trainer, k, n)`` after step k of
            n of an epoch).
        write_model: ``write_model(path, model, info)`` saves the best model at the end.
        finishers: called as ``finisher(trainer)`` at the end with the best weights
            loaded, before the model is written (e.g. the closed-form head refit of
            :mod:`mfgnn.training.head_refit`).
        device: where batches go.
        log: where messages go (default: the current stderr; None silences them).
        dist: this process's place in a distributed run (:mod:`.distributed`): batches
            are this rank's shards of the global batches, the loss statistics are summed
            and the gradients averaged over ranks, and only rank 0 writes files.
    """

    def __init__(self, model, loss_fn, optimizer: torch.optim.Optimizer, scheduler,
                 data: TrainingData, folder: RunFolder, settings: TrainConfig,
                 ema: ExponentialMovingAverage | None = None,
                 callbacks: Sequence[Callable] = (), write_model: Callable | None = None,
                 finishers: Sequence[Callable] = (), device: torch.device | str = "cpu",
                 log=STDERR, dist: Distributed = SINGLE):
        self.model, self.loss_fn = model, loss_fn
        shares = loss_fn.trunk_gradient()
        self._trunk_gradient = {"trunk_gradient": shares} if shares else {}
        self.optimizer, self.scheduler = optimizer, scheduler
        self.data, self.folder, self.settings = data, folder, settings
        self.ema, self.callbacks, self.write_model = ema, list(callbacks), write_model
        self.step_callbacks: list[Callable] = []  # callback(trainer, k, n_batches)
        self.finishers = list(finishers)
        self.device, self.log = torch.device(device), log
        self.dist = dist
        self.epoch = 0
        self.step = 0  # optimiser steps taken (skipped ones included), over resumes
        self.first_step = 0  # steps taken before this session (a resumed run's)
        self._clock = 0.0  # elapsed seconds all ranks agreed on at the last step
        self.first_epoch = 0
        self.best_valid = math.inf
        self.best_state: dict | None = None
        self.bad_epochs = 0
        self.consecutive_bad = 0
        self.history: list[dict] = []
        self._elapsed_before = 0.0
        self._session_start = time.monotonic()
        self._epoch_part = 0.0  # share of the current epoch's steps done
        self.task_weights = getattr(loss_fn, "task_weights", None)
        if self.task_weights is not None:
            in_optimizer = {id(p) for g in optimizer.param_groups for p in g["params"]}
            if any(id(p) not in in_optimizer for p in self.task_weights.parameters()):
                raise ConfigError(
                    "loss.weighting: uncertainty: the learned task weights (log σ_t) are "
                    "not in the optimiser; this recipe does not train them (use "
                    "loss.weighting: fixed)")

    # ------------------------------------------------------------------ budget
    def session_seconds(self) -> float:
        return time.monotonic() - self._session_start

    def elapsed(self) -> float:
        """Training seconds of this run, over all its resumes."""
        return self._elapsed_before + self.session_seconds()

    def agreed_elapsed(self) -> float:
        """Elapsed training seconds as rank 0 measures them, on every rank (what budget
        decisions use, so that all ranks take the same ones)."""
        self._clock = self.dist.agree(self.elapsed())
        return self._clock

    def budget_fraction(self) -> float:
        """Share of the budget spent: epochs of ``max_epochs``, steps of ``max_steps``
        or seconds of ``max_time``, whichever is furthest along (at most 1)."""
        s = self.settings
        done = (self.epoch + self._epoch_part) / s.max_epochs
        if s.max_steps is not None:
            done = max(done, self.step / s.max_steps)
        if s.max_time is not None:
            done = max(done, self._clock / s.max_time)
        return min(done, 1.0)

    def out_of_budget(self) -> bool:
        """``max_steps`` or ``max_time`` is spent (the same answer on every rank)."""
        s = self.settings
        if s.max_steps is not None and self.step >= s.max_steps:
            return True
        return s.max_time is not None and self.agreed_elapsed() >= s.max_time

    # ------------------------------------------------------------------ steps
    def train_step(self, batch) -> float | None:
        """One optimiser step on ``batch`` (this rank's share of a global batch; None
        when the share is empty); the loss of the global batch, or None if the step
        was skipped."""
        flags, self._clock = self._shared_flags_and_clock(batch)
        force_fids = self.loss_fn.needs_forces(batch, flags)
        with_forces = {self.model.fidelity_index(f) for f in force_fids}
        if batch is None:
            stats = self.loss_fn.statistics(*empty_share(self.model, self.device),
                                            with_forces=with_forces)
        else:
            out = self.model(batch, forces=force_fids or False, training=True,
                             **self._trunk_gradient)
            stats = self.loss_fn.statistics(out, batch, self.model.hierarchicality(out),
                                            with_forces=with_forces)
        loss = self.loss_fn.combine(self.dist.sum_statistics(stats),
                                    self.model.head_regularization()).total
        self.step += 1
        if not torch.isfinite(loss):
            return self._bad_step("non-finite loss")
        self.optimizer.zero_grad(set_to_none=True)
        if loss.requires_grad:
            loss.backward()
        self.dist.average_gradients(self._trained_parameters())
        # the norm is needed anyway to catch non-finite gradients of a finite loss;
        # max_norm=inf leaves the gradients unchanged when clipping is off
        clip = self.settings.grad_clip if self.settings.grad_clip > 0 else math.inf
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
        if not torch.isfinite(norm):
            return self._bad_step("non-finite gradient")
        self.consecutive_bad = 0
        self.optimizer.step()
        if self.ema is not None:
            self.ema.update(self.model)
        self.scheduler.step_end(self.budget_fraction())
        return float(loss.detach())

    def _shared_flags_and_clock(self, batch) -> tuple[torch.Tensor, float]:
        """Which model columns have force labels in any rank's share, and rank 0's
        elapsed seconds: one small all-reduce per step (none in a single process)."""
        n = len(self.model.fidelities)
        local = (self.loss_fn.force_label_flags(batch).cpu() if batch is not None
                 else torch.zeros(n, dtype=torch.bool))
        if not self.dist.enabled:
            return local, self.elapsed()
        shared = torch.zeros(n + 1, dtype=torch.float64)
        shared[:n] = local.to(torch.float64)
        shared[n] = self.elapsed() if self.dist.is_main else 0.0
        shared = self.dist.sum_(shared)
        return shared[:n] > 0, float(shared[n])

    def _trained_parameters(self) -> list:
        return [p for g in self.optimizer.param_groups for p in g["params"]]

    def train_epoch(self) -> dict:
        self.model.train()
        losses, skipped = [], 0
        batches = self.data.train.batches(self.epoch)
        for k, batch in enumerate(batches):
            if self.settings.max_steps is not None and self.step >= self.settings.max_steps:
                break
            self._epoch_part = (k + 1) / max(len(batches), 1)
            loss = self.train_step(None if batch is None else batch.to(self.device))
            if loss is None:
                skipped += 1
            else:
                losses.append(loss)
            for callback in self.step_callbacks:
                callback(self, k + 1, len(batches))
            if k == 0:
                kill_for_test(self.dist, self.epoch)
        mean = sum(losses) / len(losses) if losses else 0.0
        return {"train_loss": mean, "skipped_steps": skipped}

    def _bad_step(self, what: str) -> None:
        """Skip the optimiser step of a batch with a non-finite loss or gradient; give up
        after ``train.max_bad_steps`` in a row (counted across epochs)."""
        limit = self.settings.max_bad_steps
        self.optimizer.zero_grad(set_to_none=True)
        self.consecutive_bad += 1
        warnings.warn(f"epoch {self.epoch + 1}: {what}, step skipped "
                      f"({self.consecutive_bad} in a row; train.max_bad_steps = {limit})",
                      RuntimeWarning, stacklevel=3)
        if self.consecutive_bad >= limit:
            raise TrainingDiverged(
                f"{limit} consecutive non-finite losses or gradients at epoch "
                f"{self.epoch + 1}; {self.folder.kept_checkpoint(self.epoch)} (lower the "
                "learning rate or check the data)")
        return None

    def evaluate(self, source: BatchSource) -> tuple[float, dict]:
        """Loss and per-fidelity metrics of the (EMA) weights on ``source``."""
        if self.ema is not None:
            with self.ema.applied(self.model):
                return evaluate_model(self.model, source.batches(), self.loss_fn,
                                      dist=self.dist)
        return evaluate_model(self.model, source.batches(), self.loss_fn, dist=self.dist)

    # ------------------------------------------------------------------ loop
    def fit(self) -> dict:
        """Train until ``max_epochs``, early stopping or ``max_time``; returns the test
        metrics of the best model (also written to ``test_metrics.json``)."""
        s = self.settings
        if self.dist.is_main:
            self.folder.create()
        self._session_start = time.monotonic()
        self.first_epoch, self.first_step = self.epoch, self.step
        while self.epoch < s.max_epochs and (s.patience is None or self.bad_epochs < s.patience):
            if self.out_of_budget():
                break
            t0 = time.monotonic()
            train = self.train_epoch()
            valid_loss, valid_metrics = self.evaluate(self.data.valid)
            if not math.isfinite(valid_loss):
                raise TrainingDiverged(
                    f"the validation loss is {valid_loss} after epoch {self.epoch + 1}; "
                    f"{self.folder.kept_checkpoint(self.epoch)} (lower the learning rate "
                    "or check the data)")
            self.epoch += 1
            self._epoch_part = 0.0
            self.scheduler.epoch_end(valid_loss, self.budget_fraction())
            if valid_loss < self.best_valid:
                self.best_valid, self.best_state, self.bad_epochs = (
                    valid_loss, self._eval_state(), 0)
            else:
                self.bad_epochs += 1
            row = self._history_row(train, valid_loss, valid_metrics, time.monotonic() - t0)
            self.history.append(row)
            if self.dist.is_main:
                self.folder.save_checkpoint(self.state_dict(), self.epoch)
                self.folder.write_metrics(self.history)
            for callback in self.callbacks:
                callback(self, row)
            if self.out_of_budget():
                say(self.log, "step budget reached" if s.max_steps is not None and
                    self.step >= s.max_steps else f"time budget of {s.max_time:.0f} s reached")
                break
        return self.finish()

    def finish(self) -> dict:
        """Save the best model and evaluate it on the test split."""
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state)
        self.ema = None  # best_state already holds the averaged weights
        for finisher in self.finishers:
            finisher(self)
        if self.write_model is not None and self.dist.is_main:
            with write_errors(self.folder.model):
                self.write_model(self.folder.model, self.model,
                                 {"best_valid_loss": self.best_valid, "epochs": self.epoch})
        result: dict = {}
        if self.data.test is not None and len(self.data.test):
            _, result = self.evaluate(self.data.test)
        if self.dist.is_main:
            self.folder.write_json("test_metrics.json", result)
        self.dist.barrier()  # the run's files exist when any rank returns
        return result

    # ------------------------------------------------------------------ state
    def _eval_state(self) -> dict:
        source = self.ema.shadow if self.ema is not None else self.model.state_dict()
        state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        state.update({k: v.detach().clone() for k, v in source.items()})
        return state

    def _history_row(self, train: dict, valid_loss: float, valid: dict, seconds: float) -> dict:
        row = {"epoch": self.epoch, "lr": self.optimizer.param_groups[0]["lr"],
               "train_loss": train["train_loss"], "valid_loss": valid_loss,
               "skipped_steps": train["skipped_steps"], "seconds": round(seconds, 3)}
        for fid, metrics in valid.items():
            for key, value in metrics.items():
                if not key.startswith("n_"):
                    row[f"valid_{fid}_{key}"] = value
        if self.task_weights is not None:
            row.update({f"sigma_{fid}": s for fid, s in self.task_weights.sigmas().items()})
        return row

    def state_dict(self) -> dict:
        """Everything a resumed run needs to continue exactly."""
        return {
            "epoch": self.epoch, "step": self.step, "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "best_valid": self.best_valid, "best_state": self.best_state,
            "bad_epochs": self.bad_epochs, "history": self.history,
            "consecutive_bad": self.consecutive_bad, "elapsed": self.elapsed(),
            "task_weights": (self.task_weights.state_dict()
                             if self.task_weights is not None else None),
        }

    def restore(self) -> None:
        """Continue from the run folder's checkpoint (temporaries of a killed write are
        removed first)."""
        if self.dist.is_main:
            self.folder.remove_stale_temporaries()
        self.dist.barrier()
        state = self.folder.load_checkpoint(self.device)
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            if self.ema is not None and state["ema"] is not None:
                self.ema.load_state_dict(state["ema"])
            if self.task_weights is not None:
                self.task_weights.load_state_dict(state["task_weights"])
            epoch, best_valid = int(state["epoch"]), float(state["best_valid"])
            best_state, bad_epochs = state["best_state"], int(state["bad_epochs"])
            history = list(state["history"])
            consecutive_bad = int(state.get("consecutive_bad", 0))
            elapsed = float(state.get("elapsed", 0.0))
            step = int(state.get("step", 0))
        except Exception as exc:  # from another model or configuration
            raise self.folder.cannot_resume(exc) from None
        self.epoch, self.best_valid, self.best_state = epoch, best_valid, best_state
        self.bad_epochs, self.history, self.consecutive_bad = bad_epochs, history, consecutive_bad
        self._elapsed_before, self.step = elapsed, step
        say(self.log, f"resumed {self.folder.path} after epoch {self.epoch}")

