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
    column (a model fidelity the data lacks) becomes all-NaN labels.

    ``kinds`` (optional, one set per model column, e.g. ``{"energy"}``) keeps only those
    label kinds and blanks the others to NaN: rows from another data set (replay during
    fine-tuning) then carry exactly the labels they are trained with."""

    def __init__(self, columns: Sequence[int | None],
                 kinds: Sequence[set[str] | frozenset[str]] | None = None):
        self.columns = list(columns)
        self.kinds = None if kinds is None else [frozenset(k) for k in kinds]

    def __call__(self, data):
        energy, forces = data.energy, data.forces
        if list(range(energy.shape[1])) == self.columns and self.kinds is None:
            return data
        data = data.clone()
        data.energy = energy.new_full((energy.shape[0], len(self.columns)), float("nan"))
        data.forces = forces.new_full((forces.shape[0], len(self.columns), 3), float("nan"))
        for t, col in enumerate(self.columns):
            kinds = self.kinds[t] if self.kinds is not None else {"energy", "forces"}
            if col is not None and "energy" in kinds:
                data.energy[:, t] = energy[:, col]
            if col is not None and "forces" in kinds:
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
        kinds: label kinds kept per model column (see :class:`SelectColumns`).
    """

    dataset: object
    rows: Sequence[int]
    columns: Sequence[int | None]
    batch_size: int
    shuffle: bool = False
    seed: int = 0
    cache_limit: int = 200_000
    kinds: Sequence[set[str]] | None = None

    def __post_init__(self) -> None:
        self._items = None

    def __len__(self) -> int:
        return len(self.rows)

    def items(self):
        """The selected structures: a list when cached, else an on-demand dataset."""
        select = SelectColumns(self.columns, self.kinds)
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


class ReplayMix:
    """Training batches with a share of replayed rows: each structure of a batch comes
    from ``replay`` with probability ``fraction`` (the count per batch is binomial),
    otherwise from ``main``; an epoch is one pass over ``main``.

    Both sources are shuffled per epoch with generators seeded by the run seed and the
    epoch, so a resumed run draws the same batches.
    """

    def __init__(self, main: BatchSource, replay: BatchSource, fraction: float):
        if not 0.0 <= fraction < 1.0:
            raise ValueError(f"replay fraction must be in [0, 1), got {fraction}")
        self.main, self.replay, self.fraction = main, replay, float(fraction)

    def __len__(self) -> int:
        return len(self.main)

    def batches(self, epoch: int = 0) -> list:
        from torch_geometric.data import Batch

        g = torch.Generator().manual_seed(self.main.seed * 100003 + epoch + 7)
        main_items, replay_items = self.main.items(), self.replay.items()
        main_order = torch.randperm(len(main_items), generator=g).tolist()
        replay_order = torch.randperm(len(replay_items), generator=g).tolist()
        size, out, k, r = self.main.batch_size, [], 0, 0
        while k < len(main_order):
            n_replay = int(torch.binomial(torch.tensor(float(size)),
                                          torch.tensor(self.fraction), generator=g))
            n_main = min(size - n_replay, len(main_order) - k)
            items = [main_items[i] for i in main_order[k:k + max(n_main, 1)]]
            k += max(n_main, 1)
            for _ in range(n_replay if replay_order else 0):
                items.append(replay_items[replay_order[r % len(replay_order)]])
                r += 1
            out.append(Batch.from_data_list(items))
        return out
