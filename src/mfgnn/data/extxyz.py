"""extxyz loader via ``ase.io.read(path, index=":")``.

Per-fidelity labels: the energy is ``atoms.info[key]`` and the forces
``atoms.arrays[key]`` (defaults ``energy`` and ``forces``; ASE moves those two standard
names into a single-point calculator, where they are looked up as well). A frame without
the key has a missing (NaN) label. Periodic cells are ignored (molecules only).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import DataError
from ..units import energy_factor, force_factor, length_factor
from .files import check_readable_file, fmt_factor
from .frames import InMemoryFrames

if TYPE_CHECKING:
    from ase import Atoms

    from .spec import FidelitySpec


def _read_frames(path: Path) -> list[Atoms]:
    """All frames of the file (a list of ``ase.Atoms``), at least one."""
    import ase.io

    check_readable_file(path, "extxyz")
    try:
        frames = ase.io.read(path, index=":", format="extxyz")
    except Exception as exc:  # ASE raises many types on malformed input
        raise DataError(f"{path}: not a readable extxyz file ({type(exc).__name__}: {exc}); "
                        "truncated or corrupt?") from None
    if not frames:
        raise DataError(f"{path}: the file holds no structures")
    return frames


def _calc_result(atoms: Atoms, name: str) -> Any:
    calc = atoms.calc
    if calc is None:
        return None
    return getattr(calc, "results", {}).get(name)


def _frame_energy(atoms: Atoms, key: str) -> Any:
    """``atoms.info[key]``, or the calculator's energy for the standard name; else None."""
    if key in atoms.info:
        return atoms.info[key]
    return _calc_result(atoms, "energy") if key == "energy" else None


def _frame_forces(atoms: Atoms, key: str) -> Any:
    """``atoms.arrays[key]``, or the calculator's forces for the standard name; else None."""
    if key in atoms.arrays:
        return atoms.arrays[key]
    return _calc_result(atoms, "forces") if key == "forces" else None


# -- geometry -----------------------------------------------------------------------------


def _read_geometry(path: Path, frames: list[Atoms], length_unit: str,
                   provenance: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ptr (n+1,), z (sum N,), pos (sum N, 3) Å) of all frames."""
    counts = np.array([len(a) for a in frames], dtype=np.int64)
    ptr = np.concatenate([[0], np.cumsum(counts)])
    z = np.concatenate([a.numbers for a in frames]).astype(np.int64)
    lf = length_factor(length_unit)
    pos = np.concatenate([a.positions for a in frames]).astype(np.float64) * lf
    provenance.append(f"{path.name}: {len(frames)} frames read with ase.io (extxyz)")
    if lf != 1.0:
        provenance.append(f"{path.name}: positions converted {length_unit} -> "
                          f"Angstrom (x {fmt_factor(lf)})")
    if any(a.pbc.any() for a in frames):
        provenance.append(f"{path.name}: periodic cells ignored (molecules only)")
    return ptr, z, pos


# -- labels -------------------------------------------------------------------------------


def _key_in_no_frame(path: Path, frames: list[Atoms], key: str, spec: FidelitySpec,
                     label: str) -> DataError:
    """The error for a ``label`` ("energy" / "forces") key that no frame has, listing the
    info keys (energies) or per-atom arrays (forces) that are present."""
    where, present = ("info", "info keys") if label == "energy" else ("arrays", "arrays")
    names = sorted({k for a in frames[:100] for k in getattr(a, where)})
    return DataError(f"{path}: {label} key {key!r} (fidelity {spec.name!r}) is in no frame's "
                     f"{where}; {present} present: {', '.join(names) or 'none'}")


def _energies(path: Path, values: list[Any], key: str) -> np.ndarray:
    """(n,) float64 energies as stored, NaN where a frame has none."""
    e = np.full(len(values), np.nan)
    for r, v in enumerate(values):
        if v is None:
            continue
        try:
            e[r] = float(np.asarray(v, dtype=np.float64).reshape(()))
        except (TypeError, ValueError):
            raise DataError(f"{path}: frame {r}: energy {key!r} is not a number: {v!r}") from None
    return e


def _forces(path: Path, values: list[Any], key: str, ptr: np.ndarray) -> np.ndarray:
    """(sum N, 3) float64 forces as stored, NaN rows where a frame has none."""
    f = np.full((int(ptr[-1]), 3), np.nan)
    for r, v in enumerate(values):
        if v is None:
            continue
        v = np.asarray(v, dtype=np.float64)
        n_atoms = int(ptr[r + 1] - ptr[r])
        if v.shape != (n_atoms, 3):
            raise DataError(f"{path}: frame {r}: forces {key!r} have shape {v.shape}, "
                            f"expected ({n_atoms}, 3)")
        f[ptr[r]:ptr[r + 1]] = v
    return f


def _read_energy(path: Path, frames: list[Atoms],
                 spec: FidelitySpec) -> tuple[np.ndarray, str, str]:
    """(energies (n,) float64 eV, key, provenance note) of one fidelity."""
    key = spec.keys.get("energy") or "energy"
    values = [_frame_energy(a, key) for a in frames]
    if all(v is None for v in values):
        raise _key_in_no_frame(path, frames, key, spec, "energy")
    ef = energy_factor(spec.energy_unit)
    note = (f"{spec.name}: energies {key!r} of {path.name} in {spec.energy_unit}"
            + ("" if ef == 1.0 else f", converted -> eV (x {fmt_factor(ef)})"))
    return _energies(path, values, key) * ef, key, note


def _read_forces(path: Path, frames: list[Atoms], spec: FidelitySpec,
                 ptr: np.ndarray) -> tuple[np.ndarray | None, str | None, str]:
    """(forces (sum N, 3) float32 eV/Å or None, key, provenance note) of one fidelity. The
    default key absent from every frame means no forces; a key set in the spec must exist."""
    key = spec.keys["forces"] if "forces" in spec.keys else "forces"
    values = [None] * len(frames) if key is None else [_frame_forces(a, key) for a in frames]
    if all(v is None for v in values):
        if key is not None and "forces" in spec.keys:
            raise _key_in_no_frame(path, frames, key, spec, "forces")
        return None, None, f"{spec.name}: no forces"
    ff = force_factor(spec.energy_unit, spec.length_unit)
    note = (f"{spec.name}: forces {key!r} in {spec.energy_unit}/{spec.length_unit}"
            + ("" if ff == 1.0 else f", converted -> eV/Angstrom (x {fmt_factor(ff)})"))
    return (_forces(path, values, key, ptr) * ff).astype(np.float32), key, note


def read_extxyz(specs: list[FidelitySpec]) -> InMemoryFrames:
    """Read the fidelities ``specs`` from one extxyz file.

    Raises:
        DataError: empty/unreadable file, an energy key found in no frame (listing the
            info keys present), bad label shapes, and the checks of InMemoryFrames.
    """
    path = specs[0].path
    frames = _read_frames(path)
    provenance: list[str] = []
    ptr, z, pos = _read_geometry(path, frames, specs[0].length_unit, provenance)
    fields = {"positions": "positions", "numbers": "numbers"}
    energy: dict[str, np.ndarray] = {}
    forces: dict[str, np.ndarray | None] = {}
    for spec in specs:
        energy[spec.name], key, note = _read_energy(path, frames, spec)
        fields[f"energy:{spec.name}"] = key
        provenance.append(note)
        forces[spec.name], key, note = _read_forces(path, frames, spec, ptr)
        if key is not None:
            fields[f"forces:{spec.name}"] = key
        provenance.append(note)
    return InMemoryFrames(path, ptr, z, pos, energy, forces, fields, provenance=provenance,
                          row_word="frame")
