"""Progress lines of a training run: one line per epoch with losses, per-fidelity
validation errors, the learning rate, and elapsed / remaining time."""

from __future__ import annotations

import sys
import time

#: Default progress stream: ``sys.stderr`` as it is when a line is written (not when
#: this module was imported, so redirecting or capturing stderr later works).
STDERR = "stderr"


def say(log, text: str) -> None:
    """Print ``text`` to ``log`` (``STDERR``: the current stderr; None: nowhere)."""
    if log is not None:
        print(text, file=sys.stderr if log is STDERR else log, flush=True)


def clock(seconds: float) -> str:
    """``mm:ss`` or ``h:mm:ss``."""
    seconds = int(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class EpochProgress:
    """A trainer callback that prints one line per epoch."""

    def __init__(self, fidelities, log=STDERR):
        self.fidelities, self.log = tuple(fidelities), log

    def __call__(self, trainer, row: dict) -> None:
        s = trainer.settings
        elapsed = trainer.elapsed()
        done = max(trainer.epoch - trainer.first_epoch, 1)
        remaining = (s.max_epochs - trainer.epoch) * trainer.session_seconds() / done
        if s.max_steps is not None:
            steps = max(trainer.step - trainer.first_step, 1)
            remaining = min(remaining, max(s.max_steps - trainer.step, 0)
                            * trainer.session_seconds() / steps)
        if s.max_time is not None:
            remaining = min(remaining, max(s.max_time - elapsed, 0.0))
        parts = [f"epoch {trainer.epoch}/{s.max_epochs}",
                 f"loss {row['train_loss']:.4g}/{row['valid_loss']:.4g}"]
        for fid in self.fidelities:
            e = row.get(f"valid_{fid}_energy_rmse")
            f = row.get(f"valid_{fid}_forces_rmse")
            seg = fid
            if e is not None:
                seg += f" E {e:.2f}"
            if f is not None:
                seg += f" F {f:.1f}"
            parts.append(seg)
        parts.append(f"lr {row['lr']:.1e}")
        parts.append(f"[{clock(elapsed)}<{clock(remaining)}]")
        say(self.log, "  ".join(parts))


class StepProgress:
    """A step callback printing, at most every ``every`` seconds within an epoch, the
    step, steps/s, structures/s and the epoch's ETA (for long epochs)."""

    def __init__(self, every: float = 60.0, log=STDERR):
        self.every, self.log = float(every), log
        self._epoch, self._start, self._last = None, 0.0, 0.0

    def __call__(self, trainer, k: int, n: int) -> None:
        now = time.monotonic()
        if self._epoch != trainer.epoch:
            self._epoch, self._start, self._last = trainer.epoch, now, now
            return
        if now - self._last < self.every or k >= n:
            return
        self._last = now
        rate = (k - 1) / max(now - self._start, 1e-9)
        size = trainer.data.train.batch_size
        say(self.log, f"  epoch {trainer.epoch + 1} step {k}/{n}  {rate:.3g} steps/s  "
                      f"{rate * size:.4g} structures/s  [ETA {clock((n - k) / max(rate, 1e-9))}]")
