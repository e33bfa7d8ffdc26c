"""Frames: the structures and labels one data file provides, in eV and Å.

Every loader (npz, ANI HDF5, extxyz) returns a :class:`Frames` holding one or more
fidelities read from one file. :class:`InMemoryFrames` stores ragged flat arrays
(``ptr``/``z``/``pos``), the ANI loader keeps an index and reads rows lazily. The dataset
combines several Frames after :func:`check_same_geometries` has verified that they hold
the same geometries row by row.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError
from .graph import radius_graph

#: Two atoms of one structure closer than this (Å) are an error ("same position").
COINCIDENT_DISTANCE = 1.0e-2
#: Largest atomic number accepted (0 is padding and is removed).
MAX_ATOMIC_NUMBER = 118
#: Absolute tolerance (Å) when comparing the geometries of two level files.
GEOMETRY_ATOL = 1.0e-6
_BLOCK_ROWS = 65536


class Frames(ABC):
    """Geometries plus per-fidelity labels of one file, converted to eV, Å and eV/Å.

    Attributes:
        path: the file.
        n: number of rows (structures).
        fidelities: names of the fidelities read from this file.
        energy: fidelity -> (n,) float64 energies in eV, NaN = missing.
        has_forces: fidelity -> the file declares forces for it.
        has_force_rows: fidelity -> (n,) bool, the row has forces.
        coord_rtol: relative precision of the stored coordinates (float32 files are
            compared with a matching tolerance).
        provenance: human-readable record of conversions and clean-ups.
    """

    path: Path
    n: int
    fidelities: tuple[str, ...]
    energy: dict[str, np.ndarray]
    has_forces: dict[str, bool]
    has_force_rows: dict[str, np.ndarray]
    coord_rtol: float
    provenance: list[str]

    @abstractmethod
    def n_atoms(self) -> np.ndarray:
        """(n,) int64 atoms per row (padding removed)."""

    @abstractmethod
    def elements(self) -> tuple[int, ...]:
        """Sorted atomic numbers present."""

    @abstractmethod
    def element_counts(self, elements: tuple[int, ...], rows: np.ndarray | None = None) -> np.ndarray:
        """(n, len(elements)) int64 atoms of each element per row (only ``rows`` if given)."""

    @abstractmethod
    def geometry(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """(z (N,) int64, pos (N, 3) float64 Å) of row i."""

    @abstractmethod
    def forces_row(self, i: int, fidelity: str) -> np.ndarray | None:
        """(N, 3) float32 eV/Å forces of row i at ``fidelity``, or None when absent."""

    @abstractmethod
    def geometry_block(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(atoms per row (m,), z (M,), pos (M, 3) Å) of rows start..stop-1."""

    def describe_row(self, i: int) -> str:
        """How to find row i in the file, for error messages."""
        return f"row {i}"


class InMemoryFrames(Frames):
    """Frames held in memory as ragged flat arrays.

    Args:
        path: the file.
        ptr: (n+1,) int64 row offsets into the atom arrays.
        z: (sum N,) int64 atomic numbers (no padding).
        pos: (sum N, 3) float64 positions in Å.
        energy: fidelity -> (n,) float64 eV.
        forces: fidelity -> (sum N, 3) float32 eV/Å, or None when the file has none.
        fields: names of the fields in the file, for messages: ``positions``,
            ``numbers``, ``energy:<fidelity>``, ``forces:<fidelity>``.
        coord_rtol: relative precision of the stored coordinates.
        row_word: what a row is called in messages ("row", "frame").
    """

    def __init__(self, path: Path, ptr: np.ndarray, z: np.ndarray, pos: np.ndarray,
                 energy: dict[str, np.ndarray], forces: dict[str, np.ndarray | None],
                 fields: dict[str, str], coord_rtol: float = 0.0,
                 provenance: list[str] | None = None, row_word: str = "row"):
        self.path = Path(path)
        self.ptr = np.asarray(ptr, dtype=np.int64)
        self.n = len(self.ptr) - 1
        self.z = np.asarray(z, dtype=np.int64)
        self.pos = np.asarray(pos, dtype=np.float64)
        self.fidelities = tuple(energy)
        self.energy = {k: np.asarray(v, dtype=np.float64) for k, v in energy.items()}
        self.forces = forces
        self.fields = fields
        self.coord_rtol = coord_rtol
        self.provenance = list(provenance or [])
        self.row_word = row_word
        self.has_forces = {k: forces.get(k) is not None for k in self.fidelities}
        self.has_force_rows = {}
        self._validate()

    # -- access ---------------------------------------------------------------------
    def n_atoms(self) -> np.ndarray:
        return np.diff(self.ptr)

    def elements(self) -> tuple[int, ...]:
        return tuple(int(e) for e in np.unique(self.z))

    def element_counts(self, elements: tuple[int, ...], rows: np.ndarray | None = None) -> np.ndarray:
        counts = counts_by_row(self.z, self.ptr, elements)
        return counts if rows is None else counts[rows]

    def geometry(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        a, b = self.ptr[i], self.ptr[i + 1]
        return self.z[a:b], self.pos[a:b]

    def forces_row(self, i: int, fidelity: str) -> np.ndarray | None:
        f = self.forces.get(fidelity)
        if f is None or not self.has_force_rows[fidelity][i]:
            return None
        return f[self.ptr[i]:self.ptr[i + 1]]

    def geometry_block(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        a, b = self.ptr[start], self.ptr[stop]
        return np.diff(self.ptr[start:stop + 1]), self.z[a:b], self.pos[a:b]

    def describe_row(self, i: int) -> str:
        return f"{self.row_word} {i}"

    # -- checks ---------------------------------------------------------------------
    def _row_of_atom(self, atom: int) -> tuple[int, int]:
        row = int(np.searchsorted(self.ptr, atom, side="right") - 1)
        return row, int(atom - self.ptr[row])

    def _fail(self, msg: str) -> DataError:
        return DataError(f"{self.path}: {msg}")

    def _validate(self) -> None:
        if self.n <= 0:
            raise self._fail("the file holds no structures")
        empty = np.flatnonzero(np.diff(self.ptr) == 0)
        if empty.size:
            raise self._fail(f"{self.describe_row(int(empty[0]))} has no atoms "
                             f"(field {self.fields.get('numbers', 'numbers')!r})")
        bad = np.flatnonzero(~np.isfinite(self.pos).all(axis=1))
        if bad.size:
            row, atom = self._row_of_atom(int(bad[0]))
            raise self._fail(f"{self.describe_row(row)}, atom {atom}: coordinate is "
                             f"{self.pos[bad[0]].tolist()} (field "
                             f"{self.fields.get('positions', 'positions')!r}); NaN/inf "
                             "coordinates are not allowed")
        check_coincident(self.pos, self.ptr, lambda r, i, j, d: self._fail(
            f"{self.describe_row(r)}: atoms {i} and {j} are at the same position "
            f"(distance {d:.3g} Å, field {self.fields.get('positions', 'positions')!r})"))
        n_atoms = self.n_atoms()
        for fid in self.fidelities:
            e = self.energy[fid]
            if e.shape != (self.n,):
                raise self._fail(f"field {self.fields[f'energy:{fid}']!r} has shape {e.shape}, "
                                 f"expected ({self.n},)")
            inf = np.flatnonzero(np.isinf(e))
            if inf.size:
                raise self._fail(f"{self.describe_row(int(inf[0]))}: energy is {e[inf[0]]} "
                                 f"(field {self.fields[f'energy:{fid}']!r}); inf labels are "
                                 "not allowed (NaN marks a missing label)")
            f = self.forces.get(fid)
            if f is None:
                self.has_force_rows[fid] = np.zeros(self.n, dtype=bool)
                continue
            inf = np.flatnonzero(np.isinf(f).any(axis=1))
            if inf.size:
                row, atom = self._row_of_atom(int(inf[0]))
                raise self._fail(f"{self.describe_row(row)}, atom {atom}: force is "
                                 f"{f[inf[0]].tolist()} (field {self.fields[f'forces:{fid}']!r}); "
                                 "inf labels are not allowed (NaN marks a missing label)")
            nan_atoms = np.isnan(f).any(axis=1).astype(np.int64)
            nan_rows = np.add.reduceat(nan_atoms, self.ptr[:-1]) > 0
            if nan_rows.any():
                # a row with any missing component counts as a row without forces
                f[np.repeat(nan_rows, n_atoms)] = np.nan
                self.provenance.append(
                    f"{fid}: {int(nan_rows.sum())} of {self.n} rows of {self.path.name} "
                    "have missing (NaN) forces")
            self.has_force_rows[fid] = ~nan_rows


def counts_by_row(z: np.ndarray, ptr: np.ndarray, elements: tuple[int, ...]) -> np.ndarray:
    """(n, len(elements)) int64 atom counts per row of a ragged atomic-number array."""
    n = len(ptr) - 1
    els = np.asarray(elements, dtype=np.int64)
    col = np.searchsorted(els, z)
    col = np.clip(col, 0, max(len(els) - 1, 0))
    known = els[col] == z if len(els) else np.zeros(len(z), bool)
    rows = np.repeat(np.arange(n), np.diff(ptr))
    flat = np.bincount(rows[known] * len(els) + col[known], minlength=n * len(els))
    return flat.reshape(n, len(els)).astype(np.int64)


def check_coincident(pos: np.ndarray, ptr: np.ndarray, error) -> None:
    """Raise ``error(row, atom_i, atom_j, distance)`` for the first pair of atoms of one
    row closer than :data:`COINCIDENT_DISTANCE` Å (vectorised over all rows)."""
    n = len(ptr) - 1
    if n == 0 or len(pos) < 2:
        return
    batch = torch.from_numpy(np.repeat(np.arange(n), np.diff(ptr)))
    edges = radius_graph(torch.from_numpy(pos), COINCIDENT_DISTANCE, batch).numpy()
    if edges.shape[1]:
        j, i = int(edges[0, 0]), int(edges[1, 0])
        row = int(np.searchsorted(ptr, i, side="right") - 1)
        d = float(np.linalg.norm(pos[i] - pos[j]))
        raise error(row, min(i, j) - int(ptr[row]), max(i, j) - int(ptr[row]), d)


def check_same_geometries(a: Frames, b: Frames) -> float:
    """Verify that ``b`` holds the geometries of ``a`` row by row (same atom counts,
    atomic numbers and positions within ~1e-6 Å). Returns the largest |ΔR| in Å.

    Raises:
        DataError naming both files and the first bad row.
    """
    if a.n != b.n:
        raise DataError(
            f"{a.path} has {a.n} structures but {b.path} has {b.n}; the levels of one "
            "dataset must hold the same geometries row by row")
    rtol = max(a.coord_rtol, b.coord_rtol)
    worst = 0.0
    for start in range(0, a.n, _BLOCK_ROWS):
        stop = min(start + _BLOCK_ROWS, a.n)
        ca, za, pa = a.geometry_block(start, stop)
        cb, zb, pb = b.geometry_block(start, stop)
        if not np.array_equal(ca, cb):
            r = int(np.flatnonzero(ca != cb)[0])
            raise DataError(
                f"geometries differ between {a.path} and {b.path}: {a.describe_row(start + r)} "
                f"has {ca[r]} atoms in the first and {cb[r]} in the second "
                "(after removing atomic-number-0 padding)")
        ptr = np.concatenate([[0], np.cumsum(ca)])
        if not np.array_equal(za, zb):
            k = int(np.flatnonzero(za != zb)[0])
            r = int(np.searchsorted(ptr, k, side="right") - 1)
            raise DataError(
                f"geometries differ between {a.path} and {b.path}: {a.describe_row(start + r)}, "
                f"atom {k - ptr[r]} has atomic number {za[k]} in the first and {zb[k]} in the second")
        diff = np.abs(pa - pb).max(axis=1) if len(pa) else np.zeros(0)
        tol = GEOMETRY_ATOL + rtol * np.abs(pa).max(axis=1) if len(pa) else 0.0
        bad = np.flatnonzero(~(diff <= tol))
        if bad.size:
            k = int(bad[0])
            r = int(np.searchsorted(ptr, k, side="right") - 1)
            raise DataError(
                f"geometries differ between {a.path} and {b.path}: {a.describe_row(start + r)}, "
                f"atom {k - ptr[r]}: |ΔR| = {diff[k]:.3g} Å (tolerance {GEOMETRY_ATOL:g} Å)")
        if len(diff):
            worst = max(worst, float(diff.max()))
    return worst
