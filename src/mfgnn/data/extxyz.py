"""extxyz loader via ``ase.io.read(path, index=":")``.

Per-fidelity labels: the energy is ``atoms.info[key]`` and the forces
``atoms.arrays[key]`` (defaults ``energy`` and ``forces``; ASE moves those two standard
names into a single-point calculator, where they are looked up as well). A frame without
the key has a missing (NaN) label. Periodic cells are ignored (molecules only).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import DataError
from ..units import energy_factor, force_factor, length_factor
from .frames import InMemoryFrames

if TYPE_CHECKING:
    from .spec import FidelitySpec


def _read_frames(path: Path) -> list:
    import ase.io

    if not path.is_file():
        raise DataError(f"data file not found: {path}")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: the file is empty")
    try:
        frames = ase.io.read(path, index=":", format="extxyz")
    except Exception as exc:  # ASE raises many types on malformed input
        raise DataError(f"{path}: not a readable extxyz file ({type(exc).__name__}: {exc}); "
                        "truncated or corrupt?") from None
    if not frames:
        raise DataError(f"{path}: the file holds no structures")
    return frames


def _calc_result(atoms, name: str):
    calc = atoms.calc
    if calc is None:
        return None
    return getattr(calc, "results", {}).get(name)


def _energy(atoms, key: str):
    if key in atoms.info:
        return atoms.info[key]
    return _calc_result(atoms, "energy") if key == "energy" else None


def _forces(atoms, key: str):
    if key in atoms.arrays:
        return atoms.arrays[key]
    return _calc_result(atoms, "forces") if key == "forces" else None


def read_extxyz(specs: list[FidelitySpec]) -> InMemoryFrames:
    """Read the fidelities ``specs`` from one extxyz file.

    Raises:
        DataError: empty/unreadable file, an energy key found in no frame (listing the
            info keys present), bad label shapes, and the checks of InMemoryFrames.
    """
    path = specs[0].path
    frames = _read_frames(path)
    counts = np.array([len(a) for a in frames], dtype=np.int64)
    ptr = np.concatenate([[0], np.cumsum(counts)])
    z = np.concatenate([a.numbers for a in frames]).astype(np.int64)
    lf = length_factor(specs[0].length_unit)
    pos = np.concatenate([a.positions for a in frames]).astype(np.float64) * lf
    provenance = [f"{path.name}: {len(frames)} frames read with ase.io (extxyz)"]
    if lf != 1.0:
        provenance.append(f"{path.name}: positions converted {specs[0].length_unit} -> "
                          f"Angstrom (x {lf:.15g})")
    if any(a.pbc.any() for a in frames):
        provenance.append(f"{path.name}: periodic cells ignored (molecules only)")
    fields = {"positions": "positions", "numbers": "numbers"}
    energy: dict[str, np.ndarray] = {}
    forces: dict[str, np.ndarray | None] = {}
    for spec in specs:
        ek = spec.keys.get("energy") or "energy"
        values = [_energy(a, ek) for a in frames]
        if all(v is None for v in values):
            info = sorted({k for a in frames[:100] for k in a.info})
            raise DataError(f"{path}: energy key {ek!r} (fidelity {spec.name!r}) is in no "
                            f"frame's info; info keys present: {', '.join(info) or 'none'}")
        e = np.full(len(frames), np.nan)
        for r, v in enumerate(values):
            if v is not None:
                try:
                    e[r] = float(np.asarray(v, dtype=np.float64).reshape(()))
                except (TypeError, ValueError):
                    raise DataError(f"{path}: frame {r}: energy {ek!r} is not a number: "
                                    f"{v!r}") from None
        ef = energy_factor(spec.energy_unit)
        energy[spec.name] = e * ef
        fields[f"energy:{spec.name}"] = ek
        provenance.append(f"{spec.name}: energies {ek!r} of {path.name} in {spec.energy_unit}"
                          + ("" if ef == 1.0 else f", converted -> eV (x {ef:.15g})"))
        fk = spec.keys["forces"] if "forces" in spec.keys else "forces"
        fvals = [None] * len(frames) if fk is None else [_forces(a, fk) for a in frames]
        if all(v is None for v in fvals):
            if fk is not None and "forces" in spec.keys:
                arrays = sorted({k for a in frames[:100] for k in a.arrays})
                raise DataError(f"{path}: forces key {fk!r} (fidelity {spec.name!r}) is in no "
                                f"frame's arrays; arrays present: {', '.join(arrays)}")
            forces[spec.name] = None
            provenance.append(f"{spec.name}: no forces")
            continue
        f = np.full((len(z), 3), np.nan)
        for r, v in enumerate(fvals):
            if v is None:
                continue
            v = np.asarray(v, dtype=np.float64)
            if v.shape != (counts[r], 3):
                raise DataError(f"{path}: frame {r}: forces {fk!r} have shape {v.shape}, "
                                f"expected ({counts[r]}, 3)")
            f[ptr[r]:ptr[r + 1]] = v
        ff = force_factor(spec.energy_unit, spec.length_unit)
        forces[spec.name] = (f * ff).astype(np.float32)
        fields[f"forces:{spec.name}"] = fk
        provenance.append(f"{spec.name}: forces {fk!r} in {spec.energy_unit}/{spec.length_unit}"
                          + ("" if ff == 1.0 else f", converted -> eV/Angstrom (x {ff:.15g})"))
    return InMemoryFrames(path, ptr, z, pos, energy, forces, fields, provenance=provenance,
                          row_word="frame")
