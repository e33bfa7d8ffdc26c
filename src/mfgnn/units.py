"""Unit conversion into the package's internal units: eV for energies, Å for lengths.

Constants are CODATA 2018 as used by ASE (``ase.units``), so values agree with ASE
calculators to machine precision.
"""

from __future__ import annotations

from ase import units as _ase_units

from .errors import DataError

#: Energy of one unit, in eV.
ENERGY_UNITS: dict[str, float] = {
    "eV": 1.0,
    "meV": 1.0e-3,
    "hartree": _ase_units.Hartree,
    "Ha": _ase_units.Hartree,
    "kcal/mol": _ase_units.kcal / _ase_units.mol,
    "kJ/mol": _ase_units.kJ / _ase_units.mol,
}

#: Length of one unit, in Å.
LENGTH_UNITS: dict[str, float] = {
    "Angstrom": 1.0,
    "A": 1.0,
    "Å": 1.0,
    "bohr": _ase_units.Bohr,
    "Bohr": _ase_units.Bohr,
}


def energy_factor(unit: str) -> float:
    """Factor that converts energies in ``unit`` to eV (E_eV = factor * E_unit)."""
    try:
        return ENERGY_UNITS[unit]
    except KeyError:
        raise DataError(
            f"unknown energy unit {unit!r}; allowed: {', '.join(ENERGY_UNITS)}"
        ) from None


def length_factor(unit: str) -> float:
    """Factor that converts lengths in ``unit`` to Å (x_Å = factor * x_unit)."""
    try:
        return LENGTH_UNITS[unit]
    except KeyError:
        raise DataError(
            f"unknown length unit {unit!r}; allowed: {', '.join(LENGTH_UNITS)}"
        ) from None


def force_factor(energy_unit: str, length_unit: str = "Angstrom") -> float:
    """Factor that converts forces in ``energy_unit``/``length_unit`` to eV/Å."""
    return energy_factor(energy_unit) / length_factor(length_unit)
