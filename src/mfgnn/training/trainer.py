"""The training loop: Adam(W), ReduceLROnPlateau, early stopping, EMA, gradient clipping,
per-epoch metrics, atomic checkpoints and resume.

A run folder holds ``config.yaml``, ``split.json``, ``metrics.csv``, ``checkpoint.pt``
(written atomically after every epoch) and, at the end, ``model.pt`` (the best EMA
weights) and ``test_metrics.json``. Shuffling uses a generator seeded from the run seed
and the epoch, so a resumed run repeats the uninterrupted one exactly on CPU.

Faults: every file is written atomically, so a run killed at any moment resumes from its
last completed epoch (``--resume`` also removes temporaries a killed write left behind);
a failed write (disk full) is a CheckpointError naming the file. A batch with a
non-finite loss or gradient is skipped; see :class:`TrainingDiverged`.
"""

from __future__ import annotations

import contextlib
import csv
import io
import math
import sys
import time
import warnings
from pathlib import Path

import torch
import yaml
from torch_geometric.loader import DataLoader

from ..errors import CheckpointError, MfgnnError
from ..io import atomic_json_dump, atomic_torch_save, atomic_write, brief, save_model
from ..loss import MultiFidelityLoss
from .ema import ExponentialMovingAverage
from .evaluation import evaluate_model
from .setup import RunSetup, build_model, select_columns


#: Default progress stream: ``sys.stderr`` as it is when a line is written (not when
#: this module was imported, so redirecting or capturing stderr later works).
STDERR = "stderr"


class TrainingDiverged(MfgnnError):
    """``train.max_bad_steps`` consecutive non-finite losses or gradients (each one is
    skipped with a RuntimeWarning), or a non-finite validation loss; the last good
    checkpoint is kept."""


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class Trainer:
    """Trains the model of ``setup`` and writes the run into ``out_dir``.

    Args:
        setup: data, split and self-energies (see :func:`~mfgnn.training.setup.setup_run`).
        out_dir: the run folder.
        resume: continue from ``out_dir/checkpoint.pt`` when it exists.
        log: where progress lines go (default: the current ``sys.stderr``; ``None``
            silences them).
    """

    def __init__(self, setup: RunSetup, out_dir: str | Path, resume: bool = False,
                 log=STDERR):
        self.setup = setup
        self.config = setup.config
        self.out_dir = Path(out_dir)
        self.log = log
        self.device = pick_device(self.config.train.device)
        tc = self.config.train
        self.model = build_model(setup).to(self.device)
        self.loss_fn = MultiFidelityLoss(setup.fidelities, self.config.labels, self.config.loss)
        opt_cls = torch.optim.AdamW if tc.optimizer == "adamw" else torch.optim.Adam
        self.optimizer = opt_cls(self.model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            self.optimizer, factor=tc.scheduler_factor, patience=tc.scheduler_patience,
            min_lr=tc.min_lr)
        self.ema = ExponentialMovingAverage(self.model, tc.ema_decay) if tc.ema_decay > 0 else None
        self.epoch = 0
        self.best_valid = math.inf
        self.best_state: dict | None = None
        self.bad_epochs = 0
        self.consecutive_bad = 0
        self._cache: dict[tuple, list] = {}
        self.history: list[dict] = []
        self.checkpoint_path = self.out_dir / "checkpoint.pt"
        if resume:
            self._remove_stale_temporaries()
        if resume and self.checkpoint_path.is_file():
            self._load_checkpoint()
        elif self.checkpoint_path.is_file():
            raise CheckpointError(
                f"{self.out_dir} already holds a run (checkpoint.pt); pass --resume to "
                "continue it or choose another output folder")

    # ------------------------------------------------------------------ data
    def _loader(self, indices, shuffle: bool, epoch: int = 0) -> DataLoader:
        tc = self.config.train
        generator = None
        if shuffle:
            generator = torch.Generator().manual_seed(tc.seed * 100003 + epoch)
        size = tc.batch_size if shuffle else tc.eval_batch_size
        return DataLoader(self._items(indices), batch_size=size, shuffle=shuffle,
                          generator=generator)

    def _items(self, indices):
        """The structures of ``indices``: built once and kept in memory when there are at
        most ``train.cache_structures`` of them, else read from the dataset on the fly."""
        key = tuple(map(int, indices))
        if len(key) > self.config.train.cache_structures:
            return torch.utils.data.Subset(self.setup.dataset, list(key))
        cache = self._cache.get(key)
        if cache is None:
            cache = [self.setup.dataset[i] for i in key]
            self._cache[key] = cache
        return cache

    def _to_device(self, batch):
        return select_columns(batch, self.setup.columns).to(self.device)

    # ------------------------------------------------------------------ steps
    def _train_epoch(self) -> dict:
        self.model.train()
        tc = self.config.train
        sums, n_batches, bad = 0.0, 0, 0
        for batch in self._loader(self.setup.split.train, shuffle=True, epoch=self.epoch):
            batch = self._to_device(batch)
            force_fids = self.loss_fn.needs_forces(batch)
            out = self.model(batch, forces=force_fids or False, training=True)
            terms = self.loss_fn(out, batch, self.model.hierarchicality(out),
                                 self.model.head_regularization())
            loss = terms.total
            if not torch.isfinite(loss):
                bad += 1
                self._bad_step("non-finite loss")
                continue
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            # the norm is needed anyway to catch non-finite gradients of a finite loss;
            # max_norm=inf leaves the gradients unchanged when clipping is off
            norm = torch.nn.utils.clip_grad_norm_(
                self.model.parameters(), tc.grad_clip if tc.grad_clip > 0 else math.inf)
            if not torch.isfinite(norm):
                bad += 1
                self._bad_step("non-finite gradient")
                continue
            self.consecutive_bad = 0
            self.optimizer.step()
            if self.ema is not None:
                self.ema.update(self.model)
            sums += float(loss.detach())
            n_batches += 1
        return {"train_loss": sums / max(n_batches, 1), "skipped_steps": bad}

    def _bad_step(self, what: str) -> None:
        """Skip the optimiser step of a batch with a non-finite loss or gradient; give up
        after ``train.max_bad_steps`` in a row (counted across epochs)."""
        tc = self.config.train
        self.optimizer.zero_grad(set_to_none=True)
        self.consecutive_bad += 1
        warnings.warn(f"epoch {self.epoch + 1}: {what}, step skipped "
                      f"({self.consecutive_bad} in a row; train.max_bad_steps = "
                      f"{tc.max_bad_steps})", RuntimeWarning, stacklevel=3)
        if self.consecutive_bad >= tc.max_bad_steps:
            raise TrainingDiverged(
                f"{tc.max_bad_steps} consecutive non-finite losses or gradients at epoch "
                f"{self.epoch + 1}; {self._kept_checkpoint()} (lower the learning rate or "
                "check the data)")

    def _kept_checkpoint(self) -> str:
        """What is left on disk to resume from, for error messages."""
        if self.checkpoint_path.is_file():
            return (f"the last good checkpoint {self.checkpoint_path} (epoch {self.epoch}) is "
                    "intact")
        return f"no checkpoint was written yet in {self.out_dir}"

    def evaluate(self, indices) -> tuple[float, dict]:
        """Loss and per-fidelity metrics of the (EMA) model on ``indices``."""
        loader = self._loader(indices, shuffle=False)
        if self.ema is not None:
            with self.ema.applied(self.model):
                return evaluate_model(self.model, loader, self.setup.columns, self.loss_fn)
        return evaluate_model(self.model, loader, self.setup.columns, self.loss_fn)

    # ------------------------------------------------------------------ loop
    def fit(self) -> dict:
        """Train until ``max_epochs``, early stopping or ``max_time``; returns the test
        metrics of the best model (also written to ``test_metrics.json``)."""
        tc = self.config.train
        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CheckpointError(f"cannot create the run folder {self.out_dir}: "
                                  f"{exc.strerror or exc}") from None
        self._write_run_files()
        start = time.monotonic()
        first_epoch = self.epoch
        while self.epoch < tc.max_epochs and self.bad_epochs < tc.patience:
            t0 = time.monotonic()
            train = self._train_epoch()
            valid_loss, valid_metrics = self.evaluate(self.setup.split.valid)
            if not math.isfinite(valid_loss):
                raise TrainingDiverged(
                    f"the validation loss is {valid_loss} after epoch {self.epoch + 1}; "
                    f"{self._kept_checkpoint()} (lower the learning rate or check the data)")
            self.epoch += 1
            self.scheduler.step(valid_loss)
            improved = valid_loss < self.best_valid
            if improved:
                self.best_valid = valid_loss
                self.best_state = self._eval_state()
                self.bad_epochs = 0
            else:
                self.bad_epochs += 1
            row = self._history_row(train, valid_loss, valid_metrics, time.monotonic() - t0)
            self.history.append(row)
            self._save_checkpoint()
            self._append_metrics(row)
            self._progress(row, start, first_epoch)
            if tc.max_time is not None and time.monotonic() - start > tc.max_time:
                self._say(f"time budget of {tc.max_time:.0f} s reached")
                break
        return self.finish()

    def finish(self) -> dict:
        """Save the best model and evaluate it on the test split."""
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state)
        self.ema = None  # best_state already holds the averaged weights
        model_path = self.out_dir / "model.pt"
        with _write_errors(model_path):
            save_model(model_path, self.model.cpu(), self.config.labels,
                       {"best_valid_loss": self.best_valid, "epochs": self.epoch,
                        "provenance": list(getattr(self.setup.dataset, "provenance", []))})
        self.model.to(self.device)
        result: dict = {}
        if len(self.setup.split.test):
            _, result = self.evaluate(self.setup.split.test)
        with _write_errors(self.out_dir / "test_metrics.json"):
            atomic_json_dump(result, self.out_dir / "test_metrics.json")
        return result

    # ------------------------------------------------------------------ files
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
        return row

    def _append_metrics(self, row: dict) -> None:
        path = self.out_dir / "metrics.csv"
        keys = list(self.history[0].keys())
        for r in self.history:
            keys += [k for k in r if k not in keys]

        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=keys)
        writer.writeheader()
        writer.writerows(self.history)
        text = buffer.getvalue()
        with _write_errors(path):
            atomic_write(path, lambda handle: handle.write(text.encode()))

    def _write_run_files(self) -> None:
        config_path = self.out_dir / "config.yaml"
        if not config_path.exists():
            text = yaml.safe_dump(self.config.to_dict(), sort_keys=False)
            with _write_errors(config_path):
                atomic_write(config_path, lambda h: h.write(text.encode()))
        split_path = self.out_dir / "split.json"
        if not split_path.exists():
            with _write_errors(split_path):
                self.setup.split.save(split_path)

    def _save_checkpoint(self) -> None:
        state = {
            "epoch": self.epoch, "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "best_valid": self.best_valid, "best_state": self.best_state,
            "bad_epochs": self.bad_epochs, "history": self.history,
            "consecutive_bad": self.consecutive_bad,
        }
        existed = self.checkpoint_path.is_file()
        try:
            atomic_torch_save(state, self.checkpoint_path)
        except OSError as exc:
            kept = ("the previous checkpoint is intact" if existed
                    else "no checkpoint was written yet")
            raise CheckpointError(
                f"could not write checkpoint {self.checkpoint_path} after epoch {self.epoch}: "
                f"{exc.strerror or exc}; {kept}") from exc

    def _load_checkpoint(self) -> None:
        try:
            state = torch.load(self.checkpoint_path, map_location=self.device,
                               weights_only=True)
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            if self.ema is not None and state["ema"] is not None:
                self.ema.load_state_dict(state["ema"])
            epoch, best_valid = int(state["epoch"]), float(state["best_valid"])
            best_state, bad_epochs = state["best_state"], int(state["bad_epochs"])
            history = list(state["history"])
            consecutive_bad = int(state.get("consecutive_bad", 0))
        except Exception as exc:  # truncated, corrupt, or from another model/config
            raise CheckpointError(
                f"{self.checkpoint_path}: cannot resume ({brief(exc)}); "
                "the checkpoint is corrupt or belongs to another configuration") from None
        self.epoch, self.best_valid, self.best_state = epoch, best_valid, best_state
        self.bad_epochs, self.history, self.consecutive_bad = bad_epochs, history, consecutive_bad
        self._say(f"resumed {self.out_dir} after epoch {self.epoch}")

    def _remove_stale_temporaries(self) -> None:
        """Delete temporary files an interrupted atomic write left behind (a run killed
        while writing its checkpoint or metrics); the files they were meant to replace are
        intact."""
        for path in self.out_dir.glob(".*.tmp"):
            name = path.name[1:]
            if any(name.startswith(f"{target}.") for target in _RUN_FILES):
                try:
                    path.unlink()
                except OSError:
                    pass

    # ------------------------------------------------------------------ output
    def _say(self, text: str) -> None:
        if self.log is not None:
            print(text, file=sys.stderr if self.log is STDERR else self.log, flush=True)

    def _progress(self, row: dict, start: float, first_epoch: int) -> None:
        tc = self.config.train
        done = self.epoch - first_epoch
        elapsed = time.monotonic() - start
        remaining = (tc.max_epochs - self.epoch) * elapsed / max(done, 1)
        if tc.max_time is not None:
            remaining = min(remaining, max(tc.max_time - elapsed, 0.0))
        parts = [f"epoch {self.epoch}/{tc.max_epochs}",
                 f"loss {row['train_loss']:.4g}/{row['valid_loss']:.4g}"]
        for fid in self.setup.fidelities:
            e = row.get(f"valid_{fid}_energy_rmse")
            f = row.get(f"valid_{fid}_forces_rmse")
            seg = fid
            if e is not None:
                seg += f" E {e:.2f}"
            if f is not None:
                seg += f" F {f:.1f}"
            parts.append(seg)
        parts.append(f"lr {row['lr']:.1e}")
        parts.append(f"[{_clock(elapsed)}<{_clock(remaining)}]")
        self._say("  ".join(parts))


#: Files of a run folder written through atomic writes.
_RUN_FILES = ("checkpoint.pt", "metrics.csv", "model.pt", "test_metrics.json", "config.yaml",
              "split.json")


@contextlib.contextmanager
def _write_errors(path: Path):
    """Turn an OS error (disk full, permissions) while writing a run file into a
    CheckpointError naming the file; the atomic write left its previous version intact."""
    try:
        yield
    except OSError as exc:
        raise CheckpointError(f"could not write {path}: {exc.strerror or exc}; its previous "
                              "version (if any) is intact") from exc


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"
