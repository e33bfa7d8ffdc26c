"""What the training loop iterates over: batches whose label columns are already the
model's, in the model's order.

Label-column selection is a data step (:class:`SelectColumns`, applied once per
structure), so the loop, the evaluation and the metrics see labels of shape (B, F_model)
and (ΣN, F_model, 3) and never index columns themselves.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch_geometric.data import Batch

from ..data.collate import loader_order
from .distributed import SINGLE, Distributed


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

    A pass is planned as *global* batches of ``batch_size`` positions into ``rows``
    (:meth:`plan`); each process of a distributed run collates only its shard of every
    global batch (``dist``, :meth:`Distributed.shard
    <mfgnn.training.distributed.Distributed.shard>`), so the batches a run trains on
    do not depend on the number of processes.

    Args:
        dataset: a :class:`~mfgnn.data.MultiFidelityDataset` or
            :class:`~mfgnn.data.PackedDataset` (items are PyG ``Data``).
        rows: dataset rows to serve.
        columns: for each model fidelity, its column in the dataset's labels (or None).
        batch_size: structures per (global) batch.
        shuffle: reshuffle every pass with a generator seeded by ``seed`` and the pass,
            so a resumed run repeats the uninterrupted one.
        seed: the run seed.
        cache_limit: keep the selected structures (with their graphs) in memory as one
            :class:`~mfgnn.data.collate.StructureStore` when there are at most this
            many; more rows of a pack are read per batch from its memory maps
            (:class:`~mfgnn.data.collate_mapped.MappedStructureStore`: bounded memory),
            of another dataset item by item.
        kinds: label kinds kept per model column (see :class:`SelectColumns`).
        steps_per_epoch: an "epoch" is this many batches, taken in order from
            successive shuffled passes (for data too large for whole epochs); None: one
            whole pass.
        dist: this process's place in a distributed run (default: a single process).
        num_workers: worker processes that collate batches ahead (0: in this process).
        device: keep an in-memory store on this device when it fits (a CUDA device:
            batches are then made there by index arithmetic).
    """

    dataset: object
    rows: Sequence[int]
    columns: Sequence[int | None]
    batch_size: int
    shuffle: bool = False
    seed: int = 0
    cache_limit: int = 200_000
    kinds: Sequence[set[str]] | None = None
    steps_per_epoch: int | None = None
    dist: Distributed = SINGLE
    num_workers: int = 0
    device: str | torch.device | None = None

    def __post_init__(self) -> None:
        self._items = None
        self._store = None
        self._pass_cache: tuple[int, list[np.ndarray]] | None = None

    def store(self):
        """The batch store of these rows (built on first use), or None when the dataset
        has a graph step other than a radius graph (then items are collated by PyG)."""
        if self._store is None:
            from ..data.collate import StructureStore, base_rows
            from ..data.collate_mapped import MappedStructureStore
            from ..data.packed import PackedDataset

            base, _ = base_rows(self.dataset, [])
            try:
                if isinstance(base, PackedDataset) and len(self.rows) > self.cache_limit:
                    self._store = MappedStructureStore(self.dataset, self.rows, self.columns,
                                                       self.kinds)
                elif len(self.rows) <= self.cache_limit:
                    self._store = StructureStore(self.dataset, self.rows, self.columns,
                                                 self.kinds)
                    if self.device is not None and torch.device(self.device).type == "cuda":
                        self._store.to(self.device)
                else:
                    self._store = False
            except TypeError:  # another graph step: the PyG path
                self._store = False
        return self._store or None

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

    # ------------------------------------------------------------------ plans
    def batches_per_pass(self) -> int:
        return -(-len(self.rows) // self.batch_size)

    def pass_plan(self, index: int) -> list[np.ndarray]:
        """Global batches (positions into ``rows``) of pass ``index``: in order, or a
        permutation seeded by the run seed and the pass."""
        if self._pass_cache is not None and self._pass_cache[0] == index:
            return self._pass_cache[1]
        n = len(self.rows)
        generator = (torch.Generator().manual_seed(self.seed * 100003 + index)
                     if self.shuffle else None)
        plan = [b.numpy() for b in loader_order(n, self.batch_size, self.shuffle, generator)]
        self._pass_cache = (index, plan)
        return plan

    def plan(self, epoch: int = 0) -> list[np.ndarray]:
        """Global batches of epoch ``epoch``: pass ``epoch``, or with ``steps_per_epoch``
        the steps epoch·S … (epoch + 1)·S − 1 of the sequence of passes."""
        if self.steps_per_epoch is None:
            return self.pass_plan(epoch)
        per_pass = max(self.batches_per_pass(), 1)
        out = []
        for step in range(epoch * self.steps_per_epoch, (epoch + 1) * self.steps_per_epoch):
            out.append(self.pass_plan(step // per_pass)[step % per_pass])
        return out

    # ------------------------------------------------------------------ batches
    def collate(self, positions) -> Batch | None:
        """This process's share of the global batch ``positions`` as a PyG ``Batch``;
        None when the share is empty."""
        mine = self.dist.shard(positions)
        if len(mine) == 0:
            return None
        store = self.store()
        if store is not None:
            return store.batch(mine)
        items = self.items()
        return Batch.from_data_list([items[int(k)] for k in mine])

    def batches(self, epoch: int = 0):
        """The batches of epoch ``epoch`` (one per global batch; None for an empty
        share), collated as they are iterated (ahead, by ``num_workers`` processes)."""
        return _Collated(self, self.plan(epoch))


class _Collated:
    """A planned epoch: ``len`` global batches, collated on iteration."""

    def __init__(self, source: BatchSource, plan: list[np.ndarray]):
        self.source, self.plan = source, plan

    def __len__(self) -> int:
        return len(self.plan)

    def __iter__(self):
        source = self.source
        store = source.store() if source.num_workers > 0 else None
        if store is None or store.device.type != "cpu":
            return (source.collate(positions) for positions in self.plan)
        return self._from_workers(store)

    def _from_workers(self, store):
        shares = [self.source.dist.shard(positions) for positions in self.plan]
        made = iter(store.loader([s for s in shares if len(s)],
                                 num_workers=self.source.num_workers))
        for share in shares:
            yield next(made) if len(share) else None


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
