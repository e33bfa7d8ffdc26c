"""npz loader: one file holds the geometries and one or more fidelities.

Two conventions are detected from the keys present:

* sGDML / Meuwly: ``R`` (n, N, 3), ``Z`` (N,) or (n, N), ``E`` (n,), ``F`` (n, N, 3);
* rMD17: ``coords``, ``nuclear_charges``, ``energies``, ``forces`` (plus ``old_energies``
  / ``old_forces``, the original MD17 labels: a second fidelity in the same file).

Atomic number 0 is padding and is removed (per row, so molecules of different sizes can
share one file). Energies are converted to float64 eV, positions to Å, forces to eV/Å.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from ..errors import DataError
from ..units import energy_factor, force_factor, length_factor
from .files import check_readable_file, fmt_factor
from .frames import MAX_ATOMIC_NUMBER, InMemoryFrames

if TYPE_CHECKING:
    from .spec import FidelitySpec

#: Default field names of each convention.
CONVENTIONS: dict[str, dict[str, str]] = {
    "sgdml": {"positions": "R", "numbers": "Z", "energy": "E", "forces": "F"},
    "rmd17": {"positions": "coords", "numbers": "nuclear_charges", "energy": "energies",
              "forces": "forces"},
}


def _open_npz(path: Path) -> np.lib.npyio.NpzFile:
    """Open an npz archive (a single call per file and load; tests count the calls)."""
    check_readable_file(path, "npz")
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: not a readable npz file ({exc}); truncated or corrupt?") from None


def detect_convention(files: list[str]) -> str | None:
    """``sgdml`` when ``R`` is present, ``rmd17`` when ``coords`` is, else None."""
    if "R" in files:
        return "sgdml"
    if "coords" in files:
        return "rmd17"
    return None


class _Archive:
    """The keys of one open npz file: each array read at most once, field names resolved
    from the spec or the detected convention; errors name the file and the key."""

    def __init__(self, archive: np.lib.npyio.NpzFile, path: Path) -> None:
        self.archive, self.path = archive, path
        self.files = list(archive.files)
        self.defaults = CONVENTIONS.get(detect_convention(self.files) or "", {})
        self._cache: dict[str, np.ndarray] = {}

    def get(self, key: str, what: str, fidelity: str | None = None) -> np.ndarray:
        """The array under ``key`` (``what`` and ``fidelity`` name it in messages)."""
        if key not in self.files:
            who = f" (fidelity {fidelity!r})" if fidelity else ""
            raise DataError(f"{self.path}: key {key!r} for {what}{who} not found; "
                            f"available keys: {', '.join(self.files) or 'none'}")
        if key not in self._cache:
            try:
                self._cache[key] = self.archive[key]
            except Exception as exc:  # zlib.error, EOFError, BadZipFile, ValueError
                raise DataError(f"{self.path}: cannot read key {key!r} ({exc}); "
                                "truncated or corrupt file?") from None
        return self._cache[key]

    def key_of(self, spec: FidelitySpec, name: str) -> str | None:
        """The key holding field ``name`` of ``spec``: given in the spec, else the default."""
        if name in spec.keys:
            return spec.keys[name]
        if name not in self.defaults:
            raise DataError(
                f"{self.path}: cannot tell which key holds the {name} of fidelity "
                f"{spec.name!r} (neither sGDML 'R'/'Z'/'E'/'F' nor rMD17 'coords'/"
                f"'nuclear_charges'/... keys); available keys: {', '.join(self.files)}; "
                "set keys: {positions, numbers, energy, forces} in the spec")
        return self.defaults[name]


class _Geometry(NamedTuple):
    """Geometries of a file, padding removed: ``mask`` (n, N) selects the real atoms."""

    pos_key: str
    shape: tuple[int, ...]
    mask: np.ndarray
    z: np.ndarray
    ptr: np.ndarray
    pos: np.ndarray
    coord_rtol: float


# -- checks -------------------------------------------------------------------------------


def _check_positions(path: Path, R: np.ndarray, key: str) -> None:
    """Positions must be (n, N, 3) with n > 0."""
    if R.ndim != 3 or R.shape[-1] != 3:
        raise DataError(f"{path}: key {key!r} has shape {R.shape}, expected (n, N, 3)")
    if R.shape[0] == 0:
        raise DataError(f"{path}: the file holds no structures (key {key!r} is empty)")


def _check_numbers(path: Path, Z: np.ndarray, key: str, n: int, n_col: int,
                   pos_key: str) -> np.ndarray:
    """(n, N) int64 atomic numbers from ``Z`` (N,) or (n, N): integers in 0..118."""
    if not np.issubdtype(Z.dtype, np.integer):
        if not (np.issubdtype(Z.dtype, np.floating) and np.all(Z == np.round(Z))):
            raise DataError(f"{path}: key {key!r} must hold integer atomic numbers, "
                            f"got dtype {Z.dtype}")
    if Z.shape not in ((n_col,), (n, n_col)):
        raise DataError(f"{path}: key {key!r} has shape {Z.shape}; expected ({n_col},) "
                        f"or ({n}, {n_col}) to match {pos_key!r} ({n}, {n_col}, 3)")
    Zb = np.broadcast_to(Z.astype(np.int64), (n, n_col))
    if (Zb < 0).any():
        r, k = np.argwhere(Zb < 0)[0]
        raise DataError(f"{path}: row {r}, atom {k}: negative atomic number {Zb[r, k]} "
                        f"(key {key!r})")
    if (Zb > MAX_ATOMIC_NUMBER).any():
        r, k = np.argwhere(Zb > MAX_ATOMIC_NUMBER)[0]
        raise DataError(f"{path}: row {r}, atom {k}: atomic number {Zb[r, k]} is not an "
                        f"element (1..{MAX_ATOMIC_NUMBER}; 0 = padding) (key {key!r})")
    return Zb


def _check_energy(path: Path, E: np.ndarray, key: str, n: int, pos_key: str) -> None:
    """Energies must be numeric, one per row."""
    if E.size != n or E.ndim > 2:
        raise DataError(f"{path}: key {key!r} has shape {E.shape}, expected ({n},) "
                        f"(one energy per row of {pos_key!r})")
    if not np.issubdtype(E.dtype, np.number):
        raise DataError(f"{path}: key {key!r} must be numeric, got dtype {E.dtype}")


# -- geometry -----------------------------------------------------------------------------


def _padding_note(path: Path, n_col: int, per_row: np.ndarray) -> str:
    lo, hi = int(per_row.min()), int(per_row.max())
    atoms = f"{lo}" if lo == hi else f"{lo}-{hi}"
    return (f"{path.name}: removed atomic-number-0 padding "
            f"({n_col} columns -> {atoms} atoms per row)")


def _read_geometry(src: _Archive, first: FidelitySpec,
                   provenance: list[str]) -> tuple[_Geometry, dict[str, str]]:
    """Checked geometries in Å (padding removed) and the field names used."""
    path = src.path
    pos_key, num_key = src.key_of(first, "positions"), src.key_of(first, "numbers")
    R = src.get(pos_key, "positions")
    Z = src.get(num_key, "atomic numbers")
    _check_positions(path, R, pos_key)
    n, n_col = R.shape[:2]
    Zb = _check_numbers(path, Z, num_key, n, n_col, pos_key)
    mask = Zb != 0
    per_row = mask.sum(axis=1)
    if not mask.all():
        provenance.append(_padding_note(path, n_col, per_row))
    lf = length_factor(first.length_unit)
    if lf != 1.0:
        provenance.append(f"{path.name}: positions {pos_key!r} converted "
                          f"{first.length_unit} -> Angstrom (x {fmt_factor(lf)})")
    geom = _Geometry(
        pos_key=pos_key, shape=R.shape, mask=mask, z=Zb[mask],
        ptr=np.concatenate([[0], np.cumsum(per_row)]).astype(np.int64),
        pos=R[mask].astype(np.float64) * lf,
        coord_rtol=4 * float(np.finfo(R.dtype).eps) if R.dtype == np.float32 else 0.0)
    return geom, {"positions": pos_key, "numbers": num_key}


# -- labels -------------------------------------------------------------------------------


def _read_energy(src: _Archive, spec: FidelitySpec, geom: _Geometry) -> tuple[np.ndarray, str, str]:
    """(energies (n,) float64 eV, key, provenance note) of one fidelity."""
    n = geom.shape[0]
    key = src.key_of(spec, "energy")
    E = src.get(key, "energies", spec.name)
    _check_energy(src.path, E, key, n, geom.pos_key)
    ef = energy_factor(spec.energy_unit)
    assumed = "" if spec.energy_unit_declared else " (energy_unit not declared: assumed)"
    conv = "unchanged" if ef == 1.0 else f"converted {spec.energy_unit} -> eV (x {fmt_factor(ef)})"
    note = (f"{spec.name}: energies {key!r} of {src.path.name} in "
            f"{spec.energy_unit}{assumed}, {conv}")
    return E.reshape(n).astype(np.float64) * ef, key, note


def _read_forces(src: _Archive, spec: FidelitySpec, geom: _Geometry,
                 length_unit: str) -> tuple[np.ndarray | None, str | None, str]:
    """(forces (sum N, 3) float32 eV/Å or None, key, provenance note) of one fidelity. A
    default key absent from the file means no forces; a key given in the spec must exist."""
    declared = "forces" in spec.keys
    key = spec.keys["forces"] if declared else src.defaults.get("forces")
    if key is None or (key not in src.files and not declared):
        why = "declared none" if declared else f"no key {key!r} in the file"
        return None, None, f"{spec.name}: no forces ({why})"
    F = src.get(key, "forces", spec.name)
    if F.shape != geom.shape:
        raise DataError(f"{src.path}: key {key!r} has shape {F.shape}, expected {geom.shape} "
                        f"like {geom.pos_key!r}")
    ff = force_factor(spec.energy_unit, length_unit)
    conv = "unchanged" if ff == 1.0 else f"converted -> eV/Angstrom (x {fmt_factor(ff)})"
    note = (f"{spec.name}: forces {key!r} of {src.path.name} in "
            f"{spec.energy_unit}/{length_unit}, {conv}")
    return (F[geom.mask].astype(np.float64) * ff).astype(np.float32), key, note


def read_npz(specs: list[FidelitySpec]) -> InMemoryFrames:
    """Read the fidelities ``specs`` (all naming the same file and geometry fields).

    Raises:
        DataError: missing key (listing the keys present), bad shapes, empty, truncated
            or corrupt file, NaN/inf coordinates, inf labels, coincident atoms.
    """
    path = specs[0].path
    provenance: list[str] = []
    energy: dict[str, np.ndarray] = {}
    forces: dict[str, np.ndarray | None] = {}
    with _open_npz(path) as archive:
        src = _Archive(archive, path)
        geom, fields = _read_geometry(src, specs[0], provenance)
        for spec in specs:
            energy[spec.name], key, note = _read_energy(src, spec, geom)
            fields[f"energy:{spec.name}"] = key
            provenance.append(note)
            forces[spec.name], key, note = _read_forces(src, spec, geom, specs[0].length_unit)
            if key is not None:
                fields[f"forces:{spec.name}"] = key
            provenance.append(note)
    return InMemoryFrames(path, geom.ptr, geom.z, geom.pos, energy, forces, fields,
                          coord_rtol=geom.coord_rtol, provenance=provenance)
