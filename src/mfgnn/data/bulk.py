"""Many rows of a dataset read at once as flat arrays, with the model's label columns
selected: what the batch stores of :mod:`mfgnn.data.collate` are built from.

:class:`LabelSelection` is :class:`~mfgnn.training.batches.SelectColumns` on flat arrays;
:func:`read_rows` reads the atoms, positions and labels of many rows of a
:class:`~mfgnn.data.dataset.MultiFidelityDataset` or
:class:`~mfgnn.data.packed.PackedDataset` (from the memory maps, in ascending row order)
without making one ``Data`` per structure.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from .dataset import DatasetSubset, MultiFidelityDataset
from .frames import InMemoryFrames
from .packed import PackedDataset, atom_index, open_arrays

#: Rows read from a pack at once while building a store.
READ_CHUNK_ROWS = 1 << 15
_KINDS = frozenset({"energy", "forces"})


class LabelSelection:
    """:class:`~mfgnn.training.batches.SelectColumns` on flat arrays: for each model
    fidelity t its dataset column ``columns[t]`` (None: all-NaN), keeping only the label
    kinds ``kinds[t]`` (a subset of {"energy", "forces"}; None keeps both)."""

    def __init__(self, columns: Sequence[int | None],
                 kinds: Sequence[Iterable[str]] | None = None) -> None:
        self.columns = [None if c is None else int(c) for c in columns]
        if kinds is not None and len(kinds) != len(self.columns):
            raise ValueError(f"{len(kinds)} label kinds for {len(self.columns)} columns")
        kinds = [_KINDS] * len(self.columns) if kinds is None else [frozenset(k) for k in kinds]
        if any(k - _KINDS for k in kinds):
            raise ValueError(f"label kinds must be among {sorted(_KINDS)}, got {kinds}")
        self.energy_columns = [c if c is not None and "energy" in k else None
                               for c, k in zip(self.columns, kinds)]
        self.force_columns = [c if c is not None and "forces" in k else None
                              for c, k in zip(self.columns, kinds)]

    @property
    def needs_forces(self) -> set[int]:
        """The dataset columns whose force labels are kept (none: forces are not read)."""
        return {c for c in self.force_columns if c is not None}

    @staticmethod
    def _take(values: np.ndarray | None, cols: list[int | None], shape: tuple) -> np.ndarray:
        out = np.full(shape, np.nan, dtype=np.float64 if len(shape) == 2 else np.float32)
        for t, c in enumerate(cols):
            if c is not None:
                out[:, t] = values[:, c]
        return out

    def energy(self, energy: np.ndarray) -> np.ndarray:
        """(m, F_model) float64 eV from the dataset's (m, F) energies."""
        return self._take(energy, self.energy_columns, (len(energy), len(self.columns)))

    def forces(self, forces: np.ndarray | None, n_atoms: int) -> np.ndarray:
        """(M, F_model, 3) float32 eV/Å from the dataset's (M, F, 3) forces (None when
        :attr:`needs_forces` is False)."""
        return self._take(forces, self.force_columns, (n_atoms, len(self.columns), 3))


# ------------------------------------------------------------------------ reading rows
def base_rows(dataset, rows) -> tuple[object, np.ndarray]:
    """(dataset, (n,) int64 rows) with subsets resolved to their underlying dataset
    (``Data.idx`` is that dataset's row); negative rows count from the end."""
    rows = np.asarray(rows, dtype=np.int64).reshape(-1)
    n = len(dataset)
    if rows.size and (rows.min() < -n or rows.max() >= n):
        raise IndexError(f"rows out of range for a dataset of {n} structures")
    rows = np.where(rows < 0, rows + n, rows)
    while isinstance(dataset, DatasetSubset):
        dataset, rows = dataset.dataset, np.asarray(dataset.rows)[rows]
    return dataset, rows


def read_pack(arrays: dict[str, np.ndarray], rows: np.ndarray, forces: bool) -> dict:
    """Atoms and labels of pack ``rows`` (any order, repeats allowed) from its memory
    maps, read in ascending row order: ``z`` (ΣN,) int64, ``pos`` (ΣN, 3) float32,
    ``energy`` (n, F) float64, ``forces`` (ΣN, F, 3) float32 (None unless ``forces``),
    ``ptr`` (n + 1,) int64, ``dataset`` (n,) int64."""
    order = np.argsort(rows, kind="stable")
    sorted_rows = rows[order]
    src, sorted_ptr = atom_index(arrays["offsets"], sorted_rows)
    inverse = np.empty_like(order)
    inverse[order] = np.arange(len(order))
    back, ptr = atom_index(sorted_ptr, inverse)  # atoms of row k sit at sorted slot inverse[k]
    return {"z": arrays["z"][src][back].astype(np.int64),
            "pos": np.asarray(arrays["pos"][src][back], dtype=np.float32),
            "energy": np.asarray(arrays["energy"][sorted_rows][inverse], dtype=np.float64),
            "forces": np.asarray(arrays["forces"][src][back], dtype=np.float32) if forces else None,
            "ptr": ptr,
            "dataset": np.asarray(arrays["dataset_index"][sorted_rows][inverse], dtype=np.int64)}


def _read_levels(dataset: MultiFidelityDataset, rows: np.ndarray, forces: set[int]) -> dict:
    """What ``MultiFidelityDataset.__getitem__`` gives for ``rows``, in bulk: in-memory
    frames by index arithmetic, lazy frames (HDF5) row by row (still no ``Data``); force
    labels of the dataset columns ``forces`` only (the others stay NaN)."""
    ptr = np.concatenate([[0], np.cumsum(dataset.n_atoms[rows])]).astype(np.int64)
    n_fid = len(dataset.fidelities)
    z = np.zeros(ptr[-1], dtype=np.int64)
    pos = np.zeros((ptr[-1], 3), dtype=np.float32)
    out_f = np.full((ptr[-1], n_fid, 3), np.nan, dtype=np.float32) if forces else None
    for frames, columns, where, local in dataset.row_blocks(rows):
        dest, _ = atom_index(ptr, where)
        if isinstance(frames, InMemoryFrames):
            src, _ = atom_index(frames.ptr, local)
            z[dest], pos[dest] = frames.z[src], frames.pos[src]
        else:
            for w, j in zip(where, local):
                zj, pj = frames.geometry(int(j))
                z[ptr[w]:ptr[w + 1]], pos[ptr[w]:ptr[w + 1]] = zj, pj
        for fr, fid, k in columns:
            if k not in forces:
                continue
            ok = dataset.has_force_rows[rows[where], k]
            if isinstance(fr, InMemoryFrames):  # forces_row: None without the row's forces
                flat = fr.forces.get(fid)
                if flat is not None:
                    ok = ok & fr.has_force_rows[fid][local]
                    out_f[atom_index(ptr, where[ok])[0], k] = flat[atom_index(fr.ptr, local[ok])[0]]
                continue
            for w, j in zip(where[ok], local[ok]):
                f = fr.forces_row(int(j), fid)
                if f is not None:
                    out_f[ptr[w]:ptr[w + 1], k] = f
    return {"z": z, "pos": pos, "energy": np.asarray(dataset.energies[rows], dtype=np.float64),
            "forces": out_f, "ptr": ptr,
            "dataset": np.asarray(dataset.dataset_index[rows], dtype=np.int64)}


def read_rows(dataset, rows: np.ndarray, forces: set[int]) -> dict:
    """Flat atoms and labels of dataset ``rows`` (see :func:`read_pack`), plus ``idx``;
    ``forces``: the dataset columns whose force labels are needed (none: ``forces`` is
    None; a pack reads all its columns).

    Raises:
        TypeError: not a MultiFidelityDataset, PackedDataset or a subset of one."""
    if isinstance(dataset, PackedDataset):
        arrays = open_arrays(dataset.path, dataset.meta)
        parts = [read_pack(arrays, rows[s:s + READ_CHUNK_ROWS], bool(forces))
                 for s in range(0, max(len(rows), 1), READ_CHUNK_ROWS)]
        out = {k: (None if parts[0][k] is None else np.concatenate([p[k] for p in parts]))
               for k in ("z", "pos", "energy", "forces", "dataset")}
        out["ptr"] = np.concatenate([[0], np.cumsum(dataset.n_atoms[rows])]).astype(np.int64)
    elif isinstance(dataset, MultiFidelityDataset):
        out = _read_levels(dataset, rows, forces)
    else:
        raise TypeError(f"a store reads a MultiFidelityDataset or a PackedDataset (or a "
                        f"subset of one), got {type(dataset).__name__}")
    out["idx"] = rows.astype(np.int64)
    return out
