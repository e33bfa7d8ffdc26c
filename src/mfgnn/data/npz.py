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
from typing import TYPE_CHECKING

import numpy as np

from ..errors import DataError
from ..units import energy_factor, force_factor, length_factor
from .frames import MAX_ATOMIC_NUMBER, InMemoryFrames

if TYPE_CHECKING:
    from .spec import FidelitySpec

#: Default field names of each convention.
CONVENTIONS: dict[str, dict[str, str]] = {
    "sgdml": {"positions": "R", "numbers": "Z", "energy": "E", "forces": "F"},
    "rmd17": {"positions": "coords", "numbers": "nuclear_charges", "energy": "energies",
              "forces": "forces"},
}


def _open_npz(path: Path):
    """Open an npz archive (a single call per file and load; tests count the calls)."""
    if not path.is_file():
        raise DataError(f"data file not found: {path}")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: the file is empty")
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


def _fmt(x: float) -> str:
    return f"{x:.15g}"


def read_npz(specs: list[FidelitySpec]) -> InMemoryFrames:
    """Read the fidelities ``specs`` (all naming the same file and geometry fields).

    Raises:
        DataError: missing key (listing the keys present), bad shapes, empty, truncated
            or corrupt file, NaN/inf coordinates, inf labels, coincident atoms.
    """
    path = specs[0].path
    archive = _open_npz(path)
    with archive:
        files = list(archive.files)
        defaults = CONVENTIONS.get(detect_convention(files) or "", {})
        cache: dict[str, np.ndarray] = {}

        def get(key: str, what: str, fidelity: str | None = None) -> np.ndarray:
            if key not in files:
                who = f" (fidelity {fidelity!r})" if fidelity else ""
                raise DataError(f"{path}: key {key!r} for {what}{who} not found; "
                                f"available keys: {', '.join(files) or 'none'}")
            if key not in cache:
                try:
                    cache[key] = archive[key]
                except Exception as exc:  # zlib.error, EOFError, BadZipFile, ValueError
                    raise DataError(f"{path}: cannot read key {key!r} ({exc}); "
                                    "truncated or corrupt file?") from None
            return cache[key]

        def key_of(spec: FidelitySpec, name: str) -> str | None:
            if name in spec.keys:
                return spec.keys[name]
            if name not in defaults:
                raise DataError(
                    f"{path}: cannot tell which key holds the {name} of fidelity "
                    f"{spec.name!r} (neither sGDML 'R'/'Z'/'E'/'F' nor rMD17 'coords'/"
                    f"'nuclear_charges'/... keys); available keys: {', '.join(files)}; "
                    "set keys: {positions, numbers, energy, forces} in the spec")
            return defaults[name]

        first = specs[0]
        pos_key, num_key = key_of(first, "positions"), key_of(first, "numbers")
        R = get(pos_key, "positions")
        Z = get(num_key, "atomic numbers")
        if R.ndim != 3 or R.shape[-1] != 3:
            raise DataError(f"{path}: key {pos_key!r} has shape {R.shape}, expected (n, N, 3)")
        n, n_col = R.shape[:2]
        if n == 0:
            raise DataError(f"{path}: the file holds no structures (key {pos_key!r} is empty)")
        if not np.issubdtype(Z.dtype, np.integer):
            if not (np.issubdtype(Z.dtype, np.floating) and np.all(Z == np.round(Z))):
                raise DataError(f"{path}: key {num_key!r} must hold integer atomic numbers, "
                                f"got dtype {Z.dtype}")
        if Z.shape not in ((n_col,), (n, n_col)):
            raise DataError(f"{path}: key {num_key!r} has shape {Z.shape}; expected ({n_col},) "
                            f"or ({n}, {n_col}) to match {pos_key!r} {R.shape}")
        Zb = np.broadcast_to(Z.astype(np.int64), (n, n_col))
        if (Zb < 0).any():
            r, k = np.argwhere(Zb < 0)[0]
            raise DataError(f"{path}: row {r}, atom {k}: negative atomic number {Zb[r, k]} "
                            f"(key {num_key!r})")
        if (Zb > MAX_ATOMIC_NUMBER).any():
            r, k = np.argwhere(Zb > MAX_ATOMIC_NUMBER)[0]
            raise DataError(f"{path}: row {r}, atom {k}: atomic number {Zb[r, k]} is not an "
                            f"element (1..{MAX_ATOMIC_NUMBER}; 0 = padding) (key {num_key!r})")
        mask = Zb != 0
        per_row = mask.sum(axis=1)
        ptr = np.concatenate([[0], np.cumsum(per_row)]).astype(np.int64)
        provenance: list[str] = []
        if not mask.all():
            lo, hi = int(per_row.min()), int(per_row.max())
            atoms = f"{lo}" if lo == hi else f"{lo}-{hi}"
            provenance.append(f"{path.name}: removed atomic-number-0 padding "
                              f"({n_col} columns -> {atoms} atoms per row)")
        lf = length_factor(first.length_unit)
        pos = R[mask].astype(np.float64) * lf
        if lf != 1.0:
            provenance.append(f"{path.name}: positions {pos_key!r} converted "
                              f"{first.length_unit} -> Angstrom (x {_fmt(lf)})")
        coord_rtol = 4 * float(np.finfo(R.dtype).eps) if R.dtype == np.float32 else 0.0
        fields = {"positions": pos_key, "numbers": num_key}

        energy: dict[str, np.ndarray] = {}
        forces: dict[str, np.ndarray | None] = {}
        for spec in specs:
            ek = key_of(spec, "energy")
            E = get(ek, "energies", spec.name)
            if E.size != n or E.ndim > 2:
                raise DataError(f"{path}: key {ek!r} has shape {E.shape}, expected ({n},) "
                                f"(one energy per row of {pos_key!r})")
            if not np.issubdtype(E.dtype, np.number):
                raise DataError(f"{path}: key {ek!r} must be numeric, got dtype {E.dtype}")
            ef = energy_factor(spec.energy_unit)
            energy[spec.name] = E.reshape(n).astype(np.float64) * ef
            fields[f"energy:{spec.name}"] = ek
            assumed = "" if spec.energy_unit_declared else " (energy_unit not declared: assumed)"
            conv = "unchanged" if ef == 1.0 else f"converted {spec.energy_unit} -> eV (x {_fmt(ef)})"
            provenance.append(f"{spec.name}: energies {ek!r} of {path.name} in "
                              f"{spec.energy_unit}{assumed}, {conv}")
            fk = spec.keys["forces"] if "forces" in spec.keys else defaults.get("forces")
            if fk is None or (fk not in files and "forces" not in spec.keys):
                forces[spec.name] = None
                why = "declared none" if "forces" in spec.keys else f"no key {fk!r} in the file"
                provenance.append(f"{spec.name}: no forces ({why})")
                continue
            F = get(fk, "forces", spec.name)
            if F.shape != R.shape:
                raise DataError(f"{path}: key {fk!r} has shape {F.shape}, expected {R.shape} "
                                f"like {pos_key!r}")
            ff = force_factor(spec.energy_unit, first.length_unit)
            forces[spec.name] = (F[mask].astype(np.float64) * ff).astype(np.float32)
            fields[f"forces:{spec.name}"] = fk
            conv = "unchanged" if ff == 1.0 else f"converted -> eV/Angstrom (x {_fmt(ff)})"
            provenance.append(f"{spec.name}: forces {fk!r} of {path.name} in "
                              f"{spec.energy_unit}/{first.length_unit}, {conv}")
    return InMemoryFrames(path, ptr, Zb[mask], pos, energy, forces, fields,
                          coord_rtol=coord_rtol, provenance=provenance)
