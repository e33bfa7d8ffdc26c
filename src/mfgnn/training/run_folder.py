"""The files of a run folder, each written atomically (:mod:`mfgnn.fileio`).

``config.yaml`` and ``split.json`` (once, at the start), ``metrics.csv`` (one row per
epoch, rewritten whole), ``checkpoint.pt`` (after every epoch), ``model.pt`` (the best
weights, at the end) and ``test_metrics.json``. A failed write (disk full, permissions)
is a CheckpointError naming the file; the previous version of the file is intact.
"""

from __future__ import annotations

import contextlib
import csv
import io
from pathlib import Path

import torch
import yaml

from ..errors import CheckpointError
from ..fileio import (remove_stale_temporaries, write_json_atomic, write_text_atomic,
                      write_torch_atomic)
from ..model_file import brief

#: Files of a run folder written through atomic writes.
RUN_FILES = ("checkpoint.pt", "metrics.csv", "model.pt", "test_metrics.json", "config.yaml",
             "split.json")


@contextlib.contextmanager
def write_errors(path: Path):
    """Turn an OS error while writing a run file into a CheckpointError naming the file."""
    try:
        yield
    except OSError as exc:
        raise CheckpointError(f"could not write {path}: {exc.strerror or exc}; its previous "
                              "version (if any) is intact") from exc


class RunFolder:
    """Reads and writes the files of the run folder ``path``.

    ``config`` (a plain mapping) and ``split`` (a :class:`~mfgnn.data.Split`), when
    given, are written as ``config.yaml`` and ``split.json`` by :meth:`create` unless the
    folder already holds them (a resumed run keeps its own).
    """

    def __init__(self, path: str | Path, config: dict | None = None, split=None):
        self.path = Path(path)
        self.checkpoint = self.path / "checkpoint.pt"
        self.model = self.path / "model.pt"
        self.config, self.split = config, split

    def create(self) -> None:
        """Make the folder and write the run's configuration and split."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CheckpointError(f"cannot create the run folder {self.path}: "
                                  f"{exc.strerror or exc}") from None
        if self.config is not None:
            self.write_once("config.yaml", yaml.safe_dump(self.config, sort_keys=False))
        if self.split is not None:
            self.write_split(self.split)

    def remove_stale_temporaries(self) -> None:
        """Delete temporaries an interrupted write left behind (resume)."""
        remove_stale_temporaries(self.path, RUN_FILES)

    def write_once(self, name: str, text: str) -> None:
        """Write ``name`` unless it exists (config and split of a resumed run stay)."""
        path = self.path / name
        if not path.exists():
            with write_errors(path):
                write_text_atomic(path, text)

    def write_split(self, split) -> None:
        path = self.path / "split.json"
        if not path.exists():
            with write_errors(path):
                split.save(path)

    def write_metrics(self, history: list[dict]) -> None:
        """``metrics.csv``: every epoch's row, with the union of all columns."""
        keys: list[str] = []
        for row in history:
            keys += [k for k in row if k not in keys]
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=keys)
        writer.writeheader()
        writer.writerows(history)
        path = self.path / "metrics.csv"
        with write_errors(path):
            write_text_atomic(path, buffer.getvalue())

    def write_json(self, name: str, obj) -> None:
        path = self.path / name
        with write_errors(path):
            write_json_atomic(path, obj)

    def save_checkpoint(self, state: dict, epoch: int) -> None:
        existed = self.checkpoint.is_file()
        try:
            write_torch_atomic(self.checkpoint, state)
        except OSError as exc:
            kept = ("the previous checkpoint is intact" if existed
                    else "no checkpoint was written yet")
            raise CheckpointError(
                f"could not write checkpoint {self.checkpoint} after epoch {epoch}: "
                f"{exc.strerror or exc}; {kept}") from exc

    def load_checkpoint(self, device) -> dict:
        try:
            return torch.load(self.checkpoint, map_location=device, weights_only=True)
        except Exception as exc:  # truncated or corrupt
            raise self.cannot_resume(exc) from None

    def cannot_resume(self, exc: BaseException) -> CheckpointError:
        return CheckpointError(
            f"{self.checkpoint}: cannot resume ({brief(exc)}); "
            "the checkpoint is corrupt or belongs to another configuration")

    def kept_checkpoint(self, epoch: int) -> str:
        """What is left on disk to resume from, for error messages."""
        if self.checkpoint.is_file():
            return f"the last good checkpoint {self.checkpoint} (epoch {epoch}) is intact"
        return f"no checkpoint was written yet in {self.path}"
