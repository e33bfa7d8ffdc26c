"""ANI-1x / ANI-1ccx HDF5 loader (also COMP6v2-style files): lazy, index + per-block reads.

Layout: one group per formula (groups may be nested); in each group ``coordinates``
(n, N, 3) Å, ``atomic_numbers`` (N,) (or per-row (n, N), e.g. COMP6v2 ``species``),
``{method}.energy`` (n,) hartree, ``{method}.forces`` (n, N, 3) hartree/Å; NaN marks a
missing label. Any set of energy keys can be chosen as fidelities.

The full ANI-1x file has about 4.9 M conformers, so it is never loaded whole. Opening
reads only the per-row energies (an (n, F) float64 table) and per-group metadata.
Coordinates and forces are read when an item is requested: single rows for random access,
blocks of :data:`BLOCK_ROWS` rows (kept in a small LRU cache, bounded memory) when rows
are read in order. Forces availability per row is inferred without reading the forces: a
row has forces at a fidelity when its group has that fidelity's forces dataset and the
row has that fidelity's energy. Coordinate and force checks (finite values, coincident
atoms) happen when a row is read. Reading and checking the index: :mod:`.ani_h5_index`.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING

import h5py
import numpy as np

from ..errors import DataError
from ..units import force_factor, length_factor
from .ani_h5_index import AniIndex, describe_row, energy_in_ev, read_index
from .files import check_readable_file, fmt_factor
from .frames import COINCIDENT_DISTANCE, Frames

if TYPE_CHECKING:
    from .spec import FidelitySpec

BLOCK_ROWS = 256
CACHE_BLOCKS = 16


class AniH5Frames(Frames):
    """Lazy frames of an ANI-layout HDF5 file (see module docstring)."""

    def __init__(self, specs: list[FidelitySpec]) -> None:
        first = specs[0]
        self.path = Path(first.path)
        self.fidelities = tuple(s.name for s in specs)
        self.provenance: list[str] = []
        self._pos_key = first.keys.get("positions") or "coordinates"
        self._num_key = first.keys.get("numbers") or "atomic_numbers"
        self._lf = length_factor(first.length_unit)
        self._reset_handles()
        check_readable_file(self.path, "ANI HDF5")
        index = read_index(self._file(), self.path, specs, self._pos_key, self._num_key)
        self._set_index(index)
        if any((m is not None and not m.all()) for m in self._masks):
            self.provenance.append(f"{self.path.name}: removed atomic-number-0 padding")
        if self._lf != 1.0:
            self.provenance.append(f"{self.path.name}: positions converted "
                                   f"{first.length_unit} -> Angstrom (x {fmt_factor(self._lf)})")
        self.energy, self.has_forces, self.has_force_rows = {}, {}, {}
        self._ff: dict[str, float] = {}
        for s in specs:
            self._set_labels(index, s)

    # -- index --------------------------------------------------------------------
    def _set_index(self, index: AniIndex) -> None:
        """Keep the group metadata (row offsets, compositions, forces fields)."""
        self._groups, self._sizes, self._start = index.groups, index.sizes, index.start
        self.n = index.n
        self._natoms_group, self._masks = index.natoms, index.masks
        self._gcounts, self._rowcomp = index.counts, index.rowcomp
        self._fkeys = index.forces_keys
        self.coord_rtol = 4 * float(np.finfo(np.float32).eps)

    def _set_labels(self, index: AniIndex, s: FidelitySpec) -> None:
        """Energies in eV, forces availability and provenance of fidelity ``s``."""
        e, note = energy_in_ev(self.path, index, s)
        self.energy[s.name] = e
        self.provenance.append(note)
        gf = index.group_forces[s.name]
        self.has_forces[s.name] = bool(gf.any())
        self.has_force_rows[s.name] = np.repeat(gf, self._sizes) & np.isfinite(e)
        self._ff[s.name] = force_factor(s.energy_unit, s.length_unit)
        fk = self._fkeys[s.name]
        if gf.any():
            self.provenance.append(
                f"{s.name}: forces {fk!r} in {s.energy_unit}/{s.length_unit}, converted "
                f"-> eV/Angstrom (x {fmt_factor(self._ff[s.name])}); a row has forces when its "
                "group has them and the row has this energy")
        else:
            self.provenance.append(f"{s.name}: no forces" + (f" ({fk!r} absent)" if fk else ""))

    # -- file handle (one per process; safe with DataLoader workers) ------------------
    def _reset_handles(self) -> None:
        self._h5, self._pid = None, None
        self._cache, self._datasets = OrderedDict(), {}
        self._last, self._row_id, self._row = None, None, None

    def _file(self) -> h5py.File:
        if self._h5 is None or self._pid != os.getpid():
            self._reset_handles()
            try:
                self._h5 = h5py.File(self.path, "r")
            except OSError as exc:
                raise DataError(f"{self.path}: not a readable HDF5 file ({exc}); "
                                "truncated or corrupt?") from None
            self._pid = os.getpid()
        return self._h5

    def _dataset(self, g: int, key: str) -> h5py.Dataset | None:
        """Cached dataset handle (h5py lookups by name cost ~0.1 ms each)."""
        f = self._file()
        if (g, key) not in self._datasets:
            grp = f[self._groups[g]]
            self._datasets[(g, key)] = grp[key] if key in grp else None
        return self._datasets[(g, key)]

    def close(self) -> None:
        """Close the HDF5 handle (reopened on the next read)."""
        if self._h5 is not None and self._pid == os.getpid():
            try:
                self._h5.close()
            except Exception:
                pass
        self._reset_handles()

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state.update(_h5=None, _pid=None, _cache=OrderedDict(), _datasets={}, _last=None,
                     _row_id=None, _row=None)
        return state

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    # -- access ---------------------------------------------------------------------
    def _locate(self, i: int) -> tuple[int, int]:
        if not 0 <= i < self.n:
            raise IndexError(f"row {i} out of range for {self.n} rows")
        g = int(np.searchsorted(self._start, i, side="right") - 1)
        return g, int(i - self._start[g])

    def describe_row(self, i: int) -> str:
        self._locate(i)  # range check
        return describe_row(self._groups, self._start, i)

    def n_atoms(self) -> np.ndarray:
        out = np.repeat(self._natoms_group, self._sizes)
        for g, (_, _, natoms) in self._rowcomp.items():
            out[self._start[g]:self._start[g + 1]] = natoms
        return out

    def elements(self) -> tuple[int, ...]:
        total = self._gcounts.sum(axis=0)
        for comps, _, _ in self._rowcomp.values():
            total = total + comps.sum(axis=0)
        return tuple(int(e) for e in np.flatnonzero(total))

    def element_counts(self, elements: tuple[int, ...],
                       rows: np.ndarray | None = None) -> np.ndarray:
        els = list(elements)
        if rows is not None:
            rows = np.asarray(rows, dtype=np.int64)
            group = np.searchsorted(self._start, rows, side="right") - 1
            out = self._gcounts[:, els][group]
            for g, (comps, inverse, _) in self._rowcomp.items():
                sel = np.flatnonzero(group == g)
                out[sel] = comps[inverse[rows[sel] - self._start[g]]][:, els]
            return out
        out = np.repeat(self._gcounts[:, els], self._sizes, axis=0)
        for g, (comps, inverse, _) in self._rowcomp.items():
            out[self._start[g]:self._start[g + 1]] = comps[inverse][:, els]
        return out

    def _read(self, g: int, lo: int, hi: int, with_forces: bool) -> dict:
        """Rows lo..hi-1 of group g: positions (Å, float64), numbers, forces (eV/Å)."""
        try:
            block = {"pos": self._dataset(g, self._pos_key)[lo:hi].astype(np.float64) * self._lf}
            zd = self._dataset(g, self._num_key)
            block["z"] = (zd[()] if zd.ndim == 1 else zd[lo:hi]).astype(np.int64)
            block["forces"] = {}
            if with_forces:
                for fid in self.fidelities:
                    fk = self._fkeys[fid]
                    ds = self._dataset(g, fk) if fk is not None else None
                    if ds is not None:
                        f = ds[lo:hi].astype(np.float64) * self._ff[fid]
                        block["forces"][fid] = f.astype(np.float32)
        except (OSError, RuntimeError, KeyError) as exc:
            raise DataError(f"{self.path}: cannot read group {self._groups[g]!r} rows "
                            f"{lo}-{hi - 1} ({exc}); truncated or corrupt file?") from None
        return block

    def _fetch(self, i: int) -> tuple[int, dict, int]:
        """(group, block, row in block) holding row i. Sequential access reads blocks of
        BLOCK_ROWS rows into a small LRU cache; random access reads single rows."""
        self._file()  # new process: fresh handles and caches
        if self._row_id == i:
            return self._row
        g, r = self._locate(i)
        b = r // BLOCK_ROWS
        if (g, b) in self._cache:
            self._cache.move_to_end((g, b))
            out = (g, self._cache[(g, b)], r - b * BLOCK_ROWS)
        elif self._last == (g, r - 1):
            lo = b * BLOCK_ROWS
            self._cache[(g, b)] = self._read(g, lo, min(lo + BLOCK_ROWS, int(self._sizes[g])), True)
            if len(self._cache) > CACHE_BLOCKS:
                self._cache.popitem(last=False)
            out = (g, self._cache[(g, b)], r - lo)
        else:
            out = (g, self._read(g, r, r + 1, True), 0)
        self._last, self._row_id, self._row = (g, r), i, out
        return out

    def _row_mask(self, g: int, z: np.ndarray) -> np.ndarray:
        m = self._masks[g]
        return m if m is not None else z > 0

    def geometry(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        g, block, k = self._fetch(i)
        z = block["z"] if block["z"].ndim == 1 else block["z"][k]
        m = self._row_mask(g, z)
        pos = block["pos"][k][m]
        if not np.isfinite(pos).all():
            a = int(np.flatnonzero(~np.isfinite(pos).all(axis=1))[0])
            raise DataError(f"{self.path}: {self.describe_row(i)}, atom {a}: coordinate is "
                            f"{pos[a].tolist()} (field {self._pos_key!r}); NaN/inf coordinates "
                            "are not allowed")
        if len(pos) > 1:
            d = np.sqrt(((pos[:, None] - pos[None]) ** 2).sum(-1))
            d[np.diag_indices(len(pos))] = np.inf
            if d.min() < COINCIDENT_DISTANCE:
                a, b = np.unravel_index(int(np.argmin(d)), d.shape)
                raise DataError(f"{self.path}: {self.describe_row(i)}: atoms {min(a, b)} and "
                                f"{max(a, b)} are at the same position (distance {d[a, b]:.3g} Å, "
                                f"field {self._pos_key!r})")
        return z[m], pos

    def forces_row(self, i: int, fidelity: str) -> np.ndarray | None:
        if not self.has_force_rows[fidelity][i]:
            return None
        g, block, k = self._fetch(i)
        f = block["forces"].get(fidelity)
        if f is None:
            return None
        z = block["z"] if block["z"].ndim == 1 else block["z"][k]
        row = f[k][self._row_mask(g, z)]
        if np.isinf(row).any():
            a = int(np.flatnonzero(np.isinf(row).any(axis=1))[0])
            raise DataError(f"{self.path}: {self.describe_row(i)}, atom {a}: force is "
                            f"{row[a].tolist()} (field {self._fkeys[fidelity]!r}); inf labels "
                            "are not allowed (NaN marks a missing label)")
        return row

    def geometry_block(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        counts, zs, ps = [], [], []
        i = start
        while i < stop:
            g, r = self._locate(i)
            hi = min(int(self._sizes[g]), r + (stop - i))
            block = self._read(g, r, hi, with_forces=False)
            z = block["z"]
            if z.ndim == 1:
                m = self._row_mask(g, z)
                zs.append(np.tile(z[m], hi - r))
                ps.append(block["pos"][:, m].reshape(-1, 3))
                counts.append(np.full(hi - r, int(m.sum())))
            else:
                m = z > 0
                zs.append(z[m])
                ps.append(block["pos"][m])
                counts.append(m.sum(axis=1))
            i += hi - r
        return (np.concatenate(counts).astype(np.int64), np.concatenate(zs),
                np.concatenate(ps))


def read_ani_h5(specs: list[FidelitySpec]) -> AniH5Frames:
    """Open an ANI-layout HDF5 file lazily for the fidelities ``specs``."""
    return AniH5Frames(specs)
