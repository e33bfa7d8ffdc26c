"""MultiFidelityDataset: levels of theory of one or more datasets -> PyG ``Data``.

The dataset concatenates :class:`~mfgnn.data.blocks.DatasetBlock` s, one per dataset of
the spec; within a block every level holds the same geometries row by row. The fidelities
are the union over the blocks (lowest level first); a fidelity a block lacks is NaN
there. Item ``i`` is a ``torch_geometric.data.Data`` with

* ``z`` (N,) long atomic numbers, ``pos`` (N, 3) float32 Å,
* ``energy`` (1, F) float64 eV and ``forces`` (N, F, 3) float32 eV/Å, NaN = missing,
* ``idx`` (1,) long (the row in this dataset), ``dataset`` (1,) long (its block, an index
  into ``names``),
* ``edge_index`` (2, E) long, only when the dataset has a graph step (e.g.
  :class:`~mfgnn.data.transforms.RadiusGraph`), which ``__getitem__`` applies to each item
  (edges are never stored at load time).

PyG's ``DataLoader`` batches ``energy`` to (B, F), ``forces`` to (sum N, F, 3) and
``dataset`` to (B,).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.utils.data import Dataset, Subset
from torch_geometric.data import Data

from .blocks import DatasetBlock, Rows, block_offsets, group_rows
from .fidelity_order import merge_orders
from .frames import Frames
from .transforms import GraphTransform

if TYPE_CHECKING:
    from .spec import DatasetSpec


def _as_blocks(levels, spec) -> list[DatasetBlock]:
    """Blocks as given, or one block from a list of (frames, fidelity) pairs."""
    levels = list(levels)
    if levels and all(isinstance(b, DatasetBlock) for b in levels):
        return levels
    if any(isinstance(b, DatasetBlock) for b in levels):
        raise TypeError("pass either DatasetBlocks or (frames, fidelity) pairs, not both")
    datasets = getattr(spec, "datasets", ())
    name = datasets[0].name if len(datasets) == 1 else "data"
    return [DatasetBlock(name, levels)]


def checked_row(i: int, n: int) -> int:
    """Row ``i`` of a dataset of ``n`` rows (negative counts from the end); IndexError
    naming both when it is out of range."""
    i = int(i)
    if i < 0:
        i += n
    if not 0 <= i < n:
        raise IndexError(f"index {i} out of range for a dataset of {n} structures")
    return i


class MultiFidelityDataset(Dataset):
    """Fidelities (lowest level first) of the structures of one or more datasets.

    Args:
        levels: the datasets as :class:`~mfgnn.data.blocks.DatasetBlock` s (rows are
            concatenated in this order), or, for one dataset, its (frames, fidelity name)
            pairs in spec order. Within a dataset the first frames provide the geometries;
            all its frames must already be checked to hold the same geometries (see
            :func:`mfgnn.data.frames.check_same_geometries`).
        graph: the graph step, a callable ``Data -> Data`` that adds ``edge_index`` (e.g.
            :class:`~mfgnn.data.transforms.RadiusGraph`); None: items have no edges.
        provenance: conversions and clean-ups made while loading.
        spec: the :class:`~mfgnn.data.spec.DatasetSpec` the levels come from, if any.
        fidelities: the order of the union of the blocks' fidelities, lowest level
            first; None merges the blocks' orders
            (:func:`~mfgnn.data.fidelity_order.merge_orders`).

    Attributes:
        fidelities: names, low -> high.
        has_forces: fidelity -> some dataset declares forces for it.
        elements: sorted atomic numbers present (union over the datasets).
        energies: (n, F) float64 eV, NaN = missing.
        has_force_rows: (n, F) bool, the row has forces at that fidelity.
        n_atoms: (n,) int64 atoms per structure.
        names: dataset names, in row order.
        dataset_index: (n,) int64, the dataset (index into ``names``) of each row.
        provenance: list of human-readable strings.
        graph: the graph step or None.
        cutoff: the graph's cutoff (Å): ``graph.cutoff``, None without a graph (or for a
            graph that declares no cutoff).
        spec: the DatasetSpec it was loaded from (None when built directly).
    """

    def __init__(self, levels: Sequence[tuple[Frames, str]] | Sequence[DatasetBlock],
                 graph: GraphTransform | None = None,
                 provenance: Sequence[str] | None = None,
                 spec: DatasetSpec | None = None,
                 fidelities: Sequence[str] | None = None) -> None:
        if not levels:
            raise ValueError("a dataset needs at least one fidelity")
        if graph is not None and not callable(graph):
            raise TypeError(f"graph must be a callable Data -> Data or None, got {graph!r}")
        self._blocks = _as_blocks(levels, spec)
        self.names = tuple(b.name for b in self._blocks)
        if len(set(self.names)) != len(self.names):
            raise ValueError(f"dataset names must be unique, got {self.names}")
        if fidelities is None:
            fidelities = merge_orders({b.name: b.fidelities for b in self._blocks})
        self.fidelities = tuple(fidelities)
        union = {fid for b in self._blocks for fid in b.fidelities}
        if set(self.fidelities) != union or len(self.fidelities) != len(union):
            raise ValueError(f"fidelities {self.fidelities} must list each fidelity of the "
                             f"datasets once: {sorted(union)}")
        self._offsets = block_offsets(self._blocks)
        n, n_fid = int(self._offsets[-1]), len(self.fidelities)
        self.dataset_index = np.repeat(np.arange(len(self._blocks), dtype=np.int64),
                                       [b.n for b in self._blocks])
        self.energies = np.full((n, n_fid), np.nan, dtype=np.float64)
        self.has_force_rows = np.zeros((n, n_fid), dtype=bool)
        self.has_forces = {fid: False for fid in self.fidelities}
        #: per block: (frames, fidelity, column) of each of its levels
        self._columns: list[list[tuple[Frames, str, int]]] = []
        owner: dict[int, int] = {}
        for b, block in enumerate(self._blocks):
            a, z = self._offsets[b], self._offsets[b + 1]
            cols = []
            for fr, fid in block.levels:
                k = self.fidelities.index(fid)
                cols.append((fr, fid, k))
                self.has_forces[fid] = self.has_forces[fid] or bool(fr.has_forces[fid])
                self.energies[a:z, k] = fr.energy[fid]
                self.has_force_rows[a:z, k] = fr.has_force_rows[fid]
                if owner.setdefault(id(fr), b) == b:  # share memory: one copy of the table
                    fr.energy[fid] = self.energies[a:z, k]
                    fr.has_force_rows[fid] = self.has_force_rows[a:z, k]
            self._columns.append(cols)
        self.n_atoms = np.concatenate([b.frames.n_atoms() for b in self._blocks]).astype(np.int64)
        self.elements = tuple(sorted({int(e) for b in self._blocks for e in b.frames.elements()}))
        self.provenance = list(provenance or [])
        self.graph = graph
        cutoff = getattr(graph, "cutoff", None)
        self.cutoff: float | None = None if cutoff is None else float(cutoff)
        self.spec = spec
        self._counts: np.ndarray | None = None

    def __len__(self) -> int:
        return self.energies.shape[0]

    def _locate(self, i: int) -> tuple[int, int]:
        """(block, row within the block) of dataset row ``i`` (IndexError when out of range)."""
        i = checked_row(i, len(self))
        b = 0 if len(self._blocks) == 1 else int(self.dataset_index[i])
        return b, i - int(self._offsets[b])

    def __getitem__(self, i: int) -> Data:
        b, j = self._locate(i)
        i = j + int(self._offsets[b])
        z, pos = self._blocks[b].frames.geometry(j)
        forces = np.full((len(z), len(self.fidelities), 3), np.nan, dtype=np.float32)
        for frames, fid, k in self._columns[b]:
            if self.has_force_rows[i, k]:
                f = frames.forces_row(j, fid)
                if f is not None:
                    forces[:, k] = f
        data = Data(
            z=torch.from_numpy(np.ascontiguousarray(z, dtype=np.int64)),
            pos=torch.from_numpy(np.ascontiguousarray(pos, dtype=np.float32)),
            energy=torch.from_numpy(self.energies[i:i + 1].copy()),
            forces=torch.from_numpy(forces),
            idx=torch.tensor([i], dtype=torch.long),
            dataset=torch.tensor([b], dtype=torch.long),
        )
        return data if self.graph is None else self.graph(data)

    def geometry(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Atomic numbers (N,) and positions (N, 3) Å of row ``i``, without labels or graph."""
        b, j = self._locate(i)
        return self._blocks[b].frames.geometry(j)

    def row_blocks(self, rows: Rows):
        """For bulk readers: yield, for each dataset block that ``rows`` touch, (its
        geometry frames, its label columns as (frames, fidelity, dataset column k), the
        positions in ``rows``, the block-local rows)."""
        for b, where, local in group_rows(self.dataset_index, self._offsets, rows):
            yield self._blocks[b].frames, self._columns[b], where, local

    def rows_of(self, name: str) -> np.ndarray:
        """(n_d,) int64 rows of the dataset called ``name``."""
        if name not in self.names:
            raise KeyError(f"no dataset {name!r}; the datasets are {', '.join(self.names)}")
        b = self.names.index(name)
        return np.arange(self._offsets[b], self._offsets[b + 1], dtype=np.int64)

    def force_rms(self, rows: Rows) -> np.ndarray:
        """(F,) RMS of the labelled force components of each fidelity over ``rows``
        (eV/Å; NaN for a fidelity without force labels there), streamed row by row."""
        sq = np.zeros(len(self.fidelities))
        count = np.zeros(len(self.fidelities))
        for b, _, local in group_rows(self.dataset_index, self._offsets, rows):
            for frames, fid, k in self._columns[b]:
                for j in local:
                    if self.has_force_rows[j + self._offsets[b], k]:
                        f = frames.forces_row(int(j), fid)
                        if f is not None:
                            f = np.asarray(f, dtype=np.float64)
                            ok = np.isfinite(f)
                            sq[k] += float(np.square(f[ok]).sum())
                            count[k] += int(ok.sum())
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(count > 0, np.sqrt(sq / np.maximum(count, 1)), np.nan)

    def element_counts(self) -> np.ndarray:
        """(n, len(elements)) int64: atoms of each element in each row (cached)."""
        if self._counts is None:
            self._counts = np.concatenate(
                [b.frames.element_counts(self.elements) for b in self._blocks]).astype(np.int64)
        return self._counts

    def element_counts_of(self, rows: Rows) -> np.ndarray:
        """(len(rows), len(elements)) int64 atom counts of some rows, without building the
        full table (useful for samples of very large datasets)."""
        if self._counts is not None:
            return self._counts[rows]
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        out = np.zeros((len(rows), len(self.elements)), dtype=np.int64)
        for b, where, local in group_rows(self.dataset_index, self._offsets, rows):
            out[where] = self._blocks[b].frames.element_counts(self.elements, local)
        return out

    def subset(self, indices: Rows) -> DatasetSubset:
        """A view on some rows (``Data.idx`` keeps the row of this dataset)."""
        return DatasetSubset(self, indices)

    def close(self) -> None:
        """Close open file handles (lazy HDF5 sources); reading reopens them."""
        for block in self._blocks:
            block.close()

    def __repr__(self) -> str:
        datasets = "" if len(self.names) == 1 else f", datasets={self.names}"
        return (f"MultiFidelityDataset(n={len(self)}, fidelities={self.fidelities}, "
                f"elements={self.elements}{datasets}, graph={self.graph!r})")


class DatasetSubset(Subset):
    """``torch.utils.data.Subset`` with the dataset attributes restricted to its rows."""

    def __init__(self, dataset: MultiFidelityDataset | DatasetSubset, indices: Rows) -> None:
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        n = len(dataset)
        if idx.size and (idx.min() < -n or idx.max() >= n):
            raise IndexError(f"subset indices out of range for a dataset of {n} structures")
        idx = np.where(idx < 0, idx + n, idx)
        super().__init__(dataset, idx)  # a numpy array: no python list of n ints
        self.rows = idx
        self.fidelities = dataset.fidelities
        self.has_forces = dataset.has_forces
        self.elements = dataset.elements
        self.provenance = dataset.provenance
        self.graph = dataset.graph
        self.cutoff = dataset.cutoff
        self.spec = getattr(dataset, "spec", None)
        self.energies = dataset.energies[idx]
        self.has_force_rows = dataset.has_force_rows[idx]
        self.n_atoms = dataset.n_atoms[idx]
        self.names = dataset.names
        self.dataset_index = dataset.dataset_index[idx]

    def element_counts(self) -> np.ndarray:
        """(len(self), len(elements)) int64 atom counts of the subset's rows."""
        return self.dataset.element_counts()[self.rows]

    def subset(self, indices: Rows) -> DatasetSubset:
        """A subset of this subset."""
        return DatasetSubset(self, indices)
