"""What the training loop iterates over: batches whose label columns are already the
model's, in the model's order.

Label-column selection is a data step (:class:`SelectColumns`, applied once per
structure), so the loop, the evaluation and the metrics see labels of shape (B, F_model)
and (ΣN, F_model, 3) and never index columns themselves.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch_geometric.loader import DataLoader


class SelectColumns:
    """Keep the label columns of the model's fidelities, in the model's order; a ``None``
    column (a model fidelity the data lacks) becomes all-NaN labels."""

    def __init__(self, columns: Sequence[int | None]):
        self.columns = list(columns)

    def __call__(self, data):
        energy, forces = data.energy, data.forces
        if list(range(energy.shape[1])) == self.columns:
            return data
        data = data.clone()
        data.energy = energy.new_full((energy.shape[0], len(self.columns)), float("nan"))
        data.forces = forces.new_full((forces.shape[0], len(self.columns), 3), float("nan"))
        for t, col in enumerate(self.columns):
            if col is not None:
                data.energy[:, t] = energy[:, col]
                data.forces[:, t] = forces[:, col]
        return data


class _Selected(torch.utils.data.Dataset):
    """Rows of a dataset with their label columns selected, read on demand."""

    def __init__(self, dataset, rows: Sequence[int], select: SelectColumns):
        self.dataset, self.rows, self.select = dataset, list(map(int, rows)), select

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, k: int):
        return self.select(self.dataset[self.rows[k]])


@dataclass
class BatchSource:
    """Rows of a dataset served as batches in the model's label columns.

    Args:
        dataset: a :class:`~mfgnn.data.MultiFidelityDataset` (items are PyG ``Data``).
        rows: dataset rows to serve.
        columns: for each model fidelity, its column in the dataset's labels (or None).
        batch_size: structures per batch.
        shuffle: reshuffle every epoch with a generator seeded by ``seed`` and the epoch,
            so a resumed run repeats the uninterrupted one.
        seed: the run seed.
        cache_limit: keep the selected structures (with their graphs) in memory when
            there are at most this many; else read them on every pass.
    """

    dataset: object
    rows: Sequence[int]
    columns: Sequence[int | None]
    batch_size: int
    shuffle: bool = False
    seed: int = 0
    cache_limit: int = 200_000

    def __post_init__(self) -> None:
        self._items = None

    def __len__(self) -> int:
        return len(self.rows)

    def items(self):
        """The selected structures: a list when cached, else an on-demand dataset."""
        select = SelectColumns(self.columns)
        if len(self.rows) > self.cache_limit:
            return _Selected(self.dataset, self.rows, select)
        if self._items is None:
            self._items = [select(self.dataset[int(i)]) for i in self.rows]
        return self._items

    def batches(self, epoch: int = 0) -> DataLoader:
        """The batches of one pass (epoch ``epoch`` sets the shuffle)."""
        generator = None
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed * 100003 + epoch)
        return DataLoader(self.items(), batch_size=self.batch_size, shuffle=self.shuffle,
                          generator=generator)


@dataclass
class TrainingData:
    """The batch sources of a run: ``train`` (shuffled), ``valid`` and ``test``."""

    train: BatchSource
    valid: BatchSource
    test: BatchSource | None = None
