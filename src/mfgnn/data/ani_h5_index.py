"""The index of an ANI-layout HDF5 file: what :class:`~mfgnn.data.ani_h5.AniH5Frames` reads
when it opens a file (the layout is described in :mod:`mfgnn.data.ani_h5`).

Opening reads, per group, the shapes, the atomic numbers and the energies of each
fidelity, never the coordinates or forces. :func:`read_index` checks them (shapes,
atomic numbers, an energy key found in some group) and returns an :class:`AniIndex`;
:func:`energy_in_ev` converts one fidelity's energies and rejects inf labels. Errors are
:class:`~mfgnn.errors.DataError` naming the file, the group (and row) and the field.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import h5py
import numpy as np

from ..errors import DataError
from ..units import energy_factor
from .files import fmt_factor
from .frames import MAX_ATOMIC_NUMBER

if TYPE_CHECKING:
    from .spec import FidelitySpec

#: Columns of the element-count tables (atomic numbers 0..118).
N_Z = MAX_ATOMIC_NUMBER + 1
_READ_ERRORS = (OSError, RuntimeError, KeyError)


def default_forces_key(energy_key: str) -> str | None:
    """``wb97x_dz.energy`` -> ``wb97x_dz.forces``; ``energies`` -> ``forces``; else None."""
    if energy_key.endswith(".energy"):
        return energy_key[: -len("energy")] + "forces"
    if energy_key == "energies":
        return "forces"
    return None


def forces_key(spec: FidelitySpec) -> str | None:
    """The forces field of a fidelity: set in the spec, else derived from its energy key."""
    if "forces" in spec.keys:
        return spec.keys["forces"]
    return default_forces_key(spec.keys["energy"])


@dataclass
class AniIndex:
    """Per-group metadata and per-row energies (as stored) of an ANI file.

    Attributes:
        groups: HDF5 names of the groups holding structures, in file order.
        sizes: (G,) rows per group; ``start`` (G+1,) the first dataset row of each group.
        natoms: (G,) atoms per row of groups with one atomic-number row (0 otherwise).
        masks: per group, the (N,) real-atom mask, or None for per-row atomic numbers.
        counts: (G, N_Z) atoms of each element per row of one-composition groups.
        rowcomp: per-row groups: (compositions (C, N_Z), composition of each row, atoms
            per row).
        energy: fidelity -> (n,) float64 energies in the file's unit, NaN = missing.
        missing: fidelity -> groups without its energy field.
        group_forces: fidelity -> (G,) bool, the group has its forces field.
        forces_keys: fidelity -> forces field name (None: no forces field).
    """

    groups: list[str]
    sizes: np.ndarray
    start: np.ndarray
    natoms: np.ndarray
    masks: list[np.ndarray | None]
    counts: np.ndarray
    rowcomp: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]
    energy: dict[str, np.ndarray]
    missing: dict[str, int]
    group_forces: dict[str, np.ndarray]
    forces_keys: dict[str, str | None]

    @property
    def n(self) -> int:
        """Rows (structures) in the file."""
        return int(self.start[-1])


def describe_row(groups: list[str], start: np.ndarray, i: int) -> str:
    """``group '/name', row r (dataset row i)``, for error messages."""
    g = int(np.searchsorted(start, i, side="right") - 1)
    return f"group {groups[g]!r}, row {i - int(start[g])} (dataset row {i})"


def _corrupt(path: Path, what: str, exc: Exception) -> DataError:
    return DataError(f"{path}: cannot read {what} ({exc}); truncated or corrupt file?")


# -- geometry -----------------------------------------------------------------------------


def find_groups(f: h5py.File, path: Path, pos_key: str) -> list[str]:
    """Names of the groups (at any depth) that hold a ``pos_key`` dataset, in file order."""
    out: list[str] = []

    def walk(g: h5py.Group) -> None:
        try:
            if pos_key in g and isinstance(g[pos_key], h5py.Dataset):
                out.append(g.name)
                return
            for k in g:
                item = g.get(k)
                if isinstance(item, h5py.Group):
                    walk(item)
        except _READ_ERRORS as exc:
            raise _corrupt(path, f"group {g.name!r}", exc) from None

    walk(f)
    if not out:
        raise DataError(f"{path}: no group holds a {pos_key!r} dataset "
                        f"(top-level keys: {', '.join(list(f.keys())[:20]) or 'none'})")
    return out


def _group_sizes(f: h5py.File, path: Path, groups: list[str], pos_key: str) -> np.ndarray:
    try:
        return np.array([f[g][pos_key].shape[0] for g in groups], dtype=np.int64)
    except _READ_ERRORS as exc:
        raise _corrupt(path, "the group index", exc) from None


def _group_numbers(path: Path, g: h5py.Group, pos_key: str, num_key: str,
                   n_g: int) -> tuple[np.ndarray, tuple[int, ...]]:
    """(atomic numbers (N,) or (n_g, N) int64, coordinates shape) of a group, checked."""
    c = g[pos_key]
    if c.ndim != 3 or c.shape[2] != 3:
        raise DataError(f"{path}: group {g.name!r}: {pos_key!r} has shape {c.shape}, "
                        "expected (n, N, 3)")
    n_col = c.shape[1]
    if num_key not in g:
        raise DataError(f"{path}: group {g.name!r} has no {num_key!r}; "
                        f"keys: {', '.join(g.keys())}")
    zd = g[num_key]
    if zd.shape not in ((n_col,), (n_g, n_col)):
        raise DataError(f"{path}: group {g.name!r}: {num_key!r} has shape {zd.shape}; "
                        f"expected ({n_col},) or ({n_g}, {n_col})")
    z = zd[()].astype(np.int64)
    bad = (z < 0) | (z > MAX_ATOMIC_NUMBER)
    if bad.any():
        raise DataError(f"{path}: group {g.name!r}: atomic number {z[bad].reshape(-1)[0]} is "
                        f"not an element (1..{MAX_ATOMIC_NUMBER}; 0 = padding) (field "
                        f"{num_key!r})")
    return z, c.shape


def _row_compositions(z: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-row atomic numbers (n_g, N): (distinct element counts (C, N_Z), composition of
    each row (n_g,), atoms per row (n_g,))."""
    n_g, n_col = z.shape
    rows = np.repeat(np.arange(n_g), n_col)[z.reshape(-1) > 0]
    cnt = np.zeros((n_g, N_Z), dtype=np.int32)
    np.add.at(cnt, (rows, z[z > 0]), 1)
    comps, inverse = np.unique(cnt, axis=0, return_inverse=True)
    return comps, inverse.reshape(-1), (z > 0).sum(axis=1)


# -- labels -------------------------------------------------------------------------------


def _group_energy(path: Path, g: h5py.Group, key: str, n_g: int) -> np.ndarray | None:
    """(n_g,) energies of a group as stored, or None when the group lacks ``key``."""
    if key not in g:
        return None
    e = g[key][()]
    if e.size != n_g:
        raise DataError(f"{path}: group {g.name!r}: {key!r} has shape {e.shape}, "
                        f"expected ({n_g},)")
    return e.reshape(n_g)


def _group_has_forces(path: Path, g: h5py.Group, key: str | None,
                      coord_shape: tuple[int, ...]) -> bool:
    """The group holds the forces field ``key`` (shaped like its coordinates)."""
    if key is None or key not in g:
        return False
    if g[key].shape != coord_shape:
        raise DataError(f"{path}: group {g.name!r}: {key!r} has shape {g[key].shape}, "
                        f"expected {coord_shape}")
    return True


def _check_energy_found(path: Path, f: h5py.File, index: AniIndex,
                        specs: list[FidelitySpec]) -> None:
    for s in specs:
        if index.missing[s.name] == len(index.groups):
            keys = ", ".join(f[index.groups[0]].keys())
            raise DataError(f"{path}: energy key {s.keys['energy']!r} of fidelity {s.name!r} "
                            f"is in no group; keys of group {index.groups[0]!r}: {keys}")


# -- index --------------------------------------------------------------------------------


def _empty_index(groups: list[str], sizes: np.ndarray, specs: list[FidelitySpec]) -> AniIndex:
    start = np.concatenate([[0], np.cumsum(sizes)])
    n, n_groups = int(start[-1]), len(groups)
    return AniIndex(
        groups=groups, sizes=sizes, start=start, natoms=np.zeros(n_groups, dtype=np.int64),
        masks=[], counts=np.zeros((n_groups, N_Z), dtype=np.int64), rowcomp={},
        energy={s.name: np.full(n, np.nan) for s in specs},
        missing={s.name: 0 for s in specs},
        group_forces={s.name: np.zeros(n_groups, dtype=bool) for s in specs},
        forces_keys={s.name: forces_key(s) for s in specs})


def _index_group(index: AniIndex, gi: int, g: h5py.Group, path: Path,
                 specs: list[FidelitySpec], pos_key: str, num_key: str) -> None:
    """Fill group ``gi`` of ``index``: composition, energies, forces availability."""
    lo, n_g = int(index.start[gi]), int(index.sizes[gi])
    z, coord_shape = _group_numbers(path, g, pos_key, num_key, n_g)
    if z.ndim == 1:
        index.masks.append(z > 0)
        index.natoms[gi] = int((z > 0).sum())
        index.counts[gi] = np.bincount(z[z > 0], minlength=N_Z)[:N_Z]
    else:
        index.masks.append(None)
        index.rowcomp[gi] = _row_compositions(z)
    for s in specs:
        e = _group_energy(path, g, s.keys["energy"], n_g)
        if e is None:
            index.missing[s.name] += 1
        else:
            index.energy[s.name][lo:lo + n_g] = e
        fk = index.forces_keys[s.name]
        index.group_forces[s.name][gi] = _group_has_forces(path, g, fk, coord_shape)


def read_index(f: h5py.File, path: Path, specs: list[FidelitySpec], pos_key: str,
               num_key: str) -> AniIndex:
    """Read and check the index of an open ANI file for the fidelities ``specs``.

    Raises:
        DataError: no group with ``pos_key``, no structures, bad shapes or atomic numbers,
            an energy key in no group, unreadable groups (truncated or corrupt file).
    """
    groups = find_groups(f, path, pos_key)
    index = _empty_index(groups, _group_sizes(f, path, groups, pos_key), specs)
    if index.n == 0:
        raise DataError(f"{path}: the file holds no structures")
    for gi, gname in enumerate(groups):
        try:
            _index_group(index, gi, f[gname], path, specs, pos_key, num_key)
        except _READ_ERRORS as exc:
            raise _corrupt(path, f"group {gname!r}", exc) from None
    _check_energy_found(path, f, index, specs)
    return index


def energy_in_ev(path: Path, index: AniIndex, spec: FidelitySpec) -> tuple[np.ndarray, str]:
    """(energies (n,) float64 eV of ``spec``, provenance note); inf labels are an error."""
    ek = spec.keys["energy"]
    ef = energy_factor(spec.energy_unit)
    e = index.energy[spec.name] * ef
    inf = np.flatnonzero(np.isinf(e))
    if inf.size:
        raise DataError(f"{path}: {describe_row(index.groups, index.start, int(inf[0]))}: "
                        f"energy is {e[inf[0]]} (field {ek!r}); inf labels are not allowed "
                        "(NaN marks a missing label)")
    conv = "unchanged" if ef == 1.0 else f"converted {spec.energy_unit} -> eV (x {fmt_factor(ef)})"
    missing = index.missing[spec.name]
    note = f", absent in {missing} groups" if missing else ""
    return e, (f"{spec.name}: energies {ek!r} of {path.name} in {spec.energy_unit}, "
               f"{conv}{note}")
