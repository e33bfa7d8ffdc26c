"""MultiFidelityDataset: aligned levels of theory on the same geometries -> PyG ``Data``.

Item ``i`` is a ``torch_geometric.data.Data`` with

* ``z`` (N,) long atomic numbers, ``pos`` (N, 3) float32 Å,
* ``energy`` (1, F) float64 eV and ``forces`` (N, F, 3) float32 eV/Å, NaN = missing,
* ``idx`` (1,) long (the row in this dataset),
* ``edge_index`` (2, E) long, only when the dataset has a graph step (e.g.
  :class:`~mfgnn.data.transforms.RadiusGraph`), which ``__getitem__`` applies to each item
  (edges are never stored at load time).

PyG's ``DataLoader`` batches ``energy`` to (B, F) and ``forces`` to (sum N, F, 3).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.utils.data import Dataset, Subset
from torch_geometric.data import Data

from .frames import Frames
from .transforms import GraphTransform

if TYPE_CHECKING:
    from .spec import DatasetSpec

#: Row indices: a sequence of ints or an integer array.
Rows = Sequence[int] | np.ndarray


class MultiFidelityDataset(Dataset):
    """Fidelities (lowest level first) of the same structures, row by row.

    Args:
        levels: one (frames, fidelity name) pair per fidelity, in spec order. The first
            frames provide the geometries; all frames must already be checked to hold the
            same geometries (see :func:`mfgnn.data.frames.check_same_geometries`).
        graph: the graph step, a callable ``Data -> Data`` that adds ``edge_index`` (e.g.
            :class:`~mfgnn.data.transforms.RadiusGraph`); None: items have no edges.
        provenance: conversions and clean-ups made while loading.
        spec: the :class:`~mfgnn.data.spec.DatasetSpec` the levels come from, if any.

    Attributes:
        fidelities: names, low -> high.
        has_forces: fidelity -> the source declares forces.
        elements: sorted atomic numbers present.
        energies: (n, F) float64 eV, NaN = missing.
        has_force_rows: (n, F) bool, the row has forces at that fidelity.
        n_atoms: (n,) int64 atoms per structure.
        provenance: list of human-readable strings.
        graph: the graph step or None.
        cutoff: the graph's cutoff (Å): ``graph.cutoff``, None without a graph (or for a
            graph that declares no cutoff).
        spec: the DatasetSpec it was loaded from (None when built directly).
    """

    def __init__(self, levels: Sequence[tuple[Frames, str]], graph: GraphTransform | None = None,
                 provenance: Sequence[str] | None = None,
                 spec: DatasetSpec | None = None) -> None:
        if not levels:
            raise ValueError("a dataset needs at least one fidelity")
        if graph is not None and not callable(graph):
            raise TypeError(f"graph must be a callable Data -> Data or None, got {graph!r}")
        self._levels = list(levels)
        self._geometry = self._levels[0][0]
        self.fidelities = tuple(fid for _, fid in self._levels)
        self.has_forces = {fid: bool(fr.has_forces[fid]) for fr, fid in self._levels}
        n = self._geometry.n
        self.energies = np.empty((n, len(self._levels)), dtype=np.float64)
        self.has_force_rows = np.empty((n, len(self._levels)), dtype=bool)
        for k, (fr, fid) in enumerate(self._levels):
            self.energies[:, k] = fr.energy[fid]
            fr.energy[fid] = self.energies[:, k]  # share memory: one copy of the table
            self.has_force_rows[:, k] = fr.has_force_rows[fid]
            fr.has_force_rows[fid] = self.has_force_rows[:, k]
        self.n_atoms = self._geometry.n_atoms()
        self.elements = self._geometry.elements()
        self.provenance = list(provenance or [])
        self.graph = graph
        cutoff = getattr(graph, "cutoff", None)
        self.cutoff: float | None = None if cutoff is None else float(cutoff)
        self.spec = spec
        self._counts: np.ndarray | None = None

    def __len__(self) -> int:
        return self.energies.shape[0]

    def __getitem__(self, i: int) -> Data:
        n = len(self)
        i = int(i)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"index {i} out of range for a dataset of {n} structures")
        z, pos = self._geometry.geometry(i)
        n_at, n_fid = len(z), len(self.fidelities)
        forces = np.full((n_at, n_fid, 3), np.nan, dtype=np.float32)
        for k, (frames, fid) in enumerate(self._levels):
            if self.has_force_rows[i, k]:
                f = frames.forces_row(i, fid)
                if f is not None:
                    forces[:, k] = f
        data = Data(
            z=torch.from_numpy(np.ascontiguousarray(z, dtype=np.int64)),
            pos=torch.from_numpy(np.ascontiguousarray(pos, dtype=np.float32)),
            energy=torch.from_numpy(self.energies[i:i + 1].copy()),
            forces=torch.from_numpy(forces),
            idx=torch.tensor([i], dtype=torch.long),
        )
        return data if self.graph is None else self.graph(data)

    def geometry(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Atomic numbers (N,) and positions (N, 3) Å of row ``i``, without labels or graph."""
        return self._geometry.geometry(int(i))

    def force_rms(self, rows: Rows) -> np.ndarray:
        """(F,) RMS of the labelled force components of each fidelity over ``rows``
        (eV/Å; NaN for a fidelity without force labels there), streamed row by row."""
        sq = np.zeros(len(self.fidelities))
        count = np.zeros(len(self.fidelities))
        for k, (frames, fid) in enumerate(self._levels):
            for i in np.asarray(rows, dtype=np.int64):
                if self.has_force_rows[i, k]:
                    f = frames.forces_row(int(i), fid)
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
            self._counts = self._geometry.element_counts(self.elements)
        return self._counts

    def element_counts_of(self, rows: Rows) -> np.ndarray:
        """(len(rows), len(elements)) int64 atom counts of some rows, without building the
        full table (useful for samples of very large datasets)."""
        if self._counts is not None:
            return self._counts[rows]
        return self._geometry.element_counts(self.elements, np.asarray(rows, dtype=np.int64))

    def subset(self, indices: Rows) -> DatasetSubset:
        """A view on some rows (``Data.idx`` keeps the row of this dataset)."""
        return DatasetSubset(self, indices)

    def close(self) -> None:
        """Close open file handles (lazy HDF5 sources); reading reopens them."""
        for frames, _ in self._levels:
            close = getattr(frames, "close", None)
            if close is not None:
                close()

    def __repr__(self) -> str:
        return (f"MultiFidelityDataset(n={len(self)}, fidelities={self.fidelities}, "
                f"elements={self.elements}, graph={self.graph!r})")


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

    def element_counts(self) -> np.ndarray:
        """(len(self), len(elements)) int64 atom counts of the subset's rows."""
        return self.dataset.element_counts()[self.rows]

    def subset(self, indices: Rows) -> DatasetSubset:
        """A subset of this subset."""
        return DatasetSubset(self, indices)
