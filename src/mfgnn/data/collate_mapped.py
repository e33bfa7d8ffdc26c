"""Memory-bounded batches of a large pack: per-row tables in memory, atoms read per batch.

:class:`MappedStructureStore` has the interface of
:class:`~mfgnn.data.collate.StructureStore` (``len``, ``batch(positions)``, ``to``,
``loader``) and gives the same batches, but keeps only per-row tables ((n,) pack rows,
first atoms, atom counts and datasets). Each batch reads the atoms and labels of its rows
from the pack's memory maps (in ascending row order, so pages are read sequentially),
selects the label columns and builds the batch's radius graph at once with a batch
vector. The memory maps are opened per process and never pickled: ``DataLoader`` workers
(see :meth:`MappedStructureStore.loader`) reopen them, so a worker costs a batch, not the
pack.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import torch
from torch_geometric.data import Batch

from .bulk import LabelSelection, base_rows, read_pack
from .collate import FROM_DATASET, batch_loader, graph_cutoff, make_batch, positions_array
from .graph import radius_graph
from .packed import PackedDataset, open_arrays


#: Batches read through one opening of the pack's memory maps.
REMAP_BATCHES = 8


class MappedStructureStore:
    """Rows of a :class:`~mfgnn.data.packed.PackedDataset` served as batches straight
    from its memory maps.

    Args:
        dataset: a PackedDataset or a subset of one.
        rows: (n,) dataset rows; position p of a batch is structure ``rows[p]``.
        columns: for each model fidelity its column in the pack's labels, or None.
        kinds: per model column the label kinds kept ({"energy", "forces"}); None: both.
        cutoff: graph radius in Å; default the dataset's graph (none without one).

    Attributes: ``path`` and ``meta`` of the pack, ``rows`` (n,) int64 pack rows,
    ``n_atoms`` (n,) int64 atoms per row, ``cutoff`` (Å or None), ``device`` (where
    batches are built; the CPU by default). Memory: 16 bytes per row, whatever the atoms.
    """

    def __init__(self, dataset, rows, columns: Sequence[int | None],
                 kinds: Sequence[Iterable[str]] | None = None, *,
                 cutoff: float | None | str = FROM_DATASET) -> None:
        self.cutoff = graph_cutoff(dataset, cutoff)
        self.select = LabelSelection(columns, kinds)
        pack, self.rows = base_rows(dataset, rows)
        if not isinstance(pack, PackedDataset):
            raise TypeError(f"a mapped store reads a PackedDataset (or a subset of one), "
                            f"got {type(pack).__name__}")
        self.path, self.meta = pack.path, pack.meta
        self.n_atoms = np.asarray(pack.n_atoms[self.rows], dtype=np.int64)
        self.device = torch.device("cpu")
        self._arrays: dict[str, np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.rows)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_arrays"] = None  # each process maps the files itself
        return state

    def _maps(self) -> dict[str, np.ndarray]:
        if self._arrays is None:
            self._arrays = open_arrays(self.path, self.meta)
        return self._arrays

    def close(self) -> None:
        """Drop the memory maps (reopened by the next batch)."""
        self._arrays, self._reads = None, 0

    def to(self, device) -> MappedStructureStore:
        """Build batches (their radius graph included) on ``device`` from now on; the
        atoms are still read on the CPU. Returns the store (changed in place)."""
        self.device = torch.device(device)
        return self

    def batch(self, positions) -> Batch:
        """The ``Batch`` of the structures at ``positions`` (B,) (ints, array or tensor),
        equal to PyG's collation of their selected ``Data`` items, on :attr:`device`."""
        p = positions_array(positions, len(self))
        data = read_pack(self._maps(), self.rows[p], bool(self.select.needs_forces))
        # short-lived maps: the pages read leave this process's resident set every
        # REMAP_BATCHES batches (they stay in the page cache), so RSS does not grow with
        # the pages read; opening the maps costs ~2 ms, hence not after every batch
        self._reads = getattr(self, "_reads", 0) + 1
        if self._reads >= REMAP_BATCHES:
            self.close()
        n_atoms = np.diff(data["ptr"])
        dev = self.device
        fields = {
            "z": torch.from_numpy(data["z"]).to(dev),
            "pos": torch.from_numpy(data["pos"]).to(dev),
            "energy": torch.from_numpy(self.select.energy(data["energy"])).to(dev),
            "forces": torch.from_numpy(
                self.select.forces(data["forces"], int(data["ptr"][-1]))).to(dev),
            "idx": torch.from_numpy(self.rows[p].copy()).to(dev),
            "dataset": torch.from_numpy(data["dataset"]).to(dev),
        }
        n_edges = None
        if self.cutoff is not None:
            graph = torch.repeat_interleave(torch.arange(len(p)), torch.from_numpy(n_atoms))
            edges = radius_graph(fields["pos"], self.cutoff, graph.to(dev))
            n_edges = np.bincount(graph[edges[1].cpu()].numpy(), minlength=len(p))
            fields["edge_index"] = edges
        return make_batch(fields, n_atoms, n_edges, dev)

    def loader(self, batches: Sequence, num_workers: int = 0, **loader_args):
        """Batches of each position array of ``batches``, in order; workers (CPU store
        only) reopen the memory maps (see :func:`~mfgnn.data.collate.batch_loader`)."""
        return batch_loader(self, batches, num_workers, **loader_args)
