"""Energy-scale check: warn when a declared energy unit makes the energies absurd.

Energies in eV per atom fall into two plausible bands:

* total (all-electron) energies: close to the sum of the free-atom energies of the
  composition (ratio between 0.8 and 1.25; checked only for elements H..Ar, where
  all-electron calculations are the rule);
* energies relative to free atoms or to any other reference: at most ~20 eV per atom.

A ``UserWarning`` names the file, fidelity, unit and median |E| per atom when the energies
(after conversion to eV) fall in neither band, exceed 1e5 eV per atom, or are below
1e-3 eV per atom while not all zero. Valence-only methods (semi-empirical, pseudopotential)
can trigger the warning legitimately; it never stops loading.
"""

from __future__ import annotations

import warnings

import numpy as np
from ase.units import Hartree

#: Non-relativistic ground-state energies of the free atoms H..Ar, in hartree.
FREE_ATOM_HARTREE = {
    1: -0.5, 2: -2.9037, 3: -7.4781, 4: -14.6674, 5: -24.6539, 6: -37.8450, 7: -54.5892,
    8: -75.0673, 9: -99.7339, 10: -128.9376, 11: -162.2546, 12: -200.0530, 13: -242.3460,
    14: -289.3590, 15: -341.2590, 16: -398.1100, 17: -460.1480, 18: -527.5400,
}
MAX_EV_PER_ATOM = 1.0e5
MIN_EV_PER_ATOM = 1.0e-3
RELATIVE_EV_PER_ATOM = 20.0
TOTAL_RATIO = (0.8, 1.25)


def energy_scale_problem(energy_ev: np.ndarray, counts: np.ndarray,
                         elements: tuple[int, ...]) -> str | None:
    """Why the energies look implausible (a sentence), or None when they look fine.

    Args:
        energy_ev: (n,) float64 energies in eV (NaN = missing, ignored).
        counts: (n, len(elements)) atoms of each element per row.
        elements: atomic numbers of the columns of ``counts``.
    """
    ok = np.isfinite(energy_ev)
    if not ok.any():
        return None
    e = energy_ev[ok]
    c = counts if ok.all() else counts[ok]
    n_atoms = np.maximum(c.sum(axis=1), 1)
    per_atom = float(np.median(np.abs(e) / n_atoms))
    if not np.any(e != 0):
        return None
    if per_atom > MAX_EV_PER_ATOM:
        return f"median |E| per atom is {per_atom:.4g} eV (> {MAX_EV_PER_ATOM:g} eV)"
    if per_atom < MIN_EV_PER_ATOM:
        return f"median |E| per atom is {per_atom:.4g} eV (< {MIN_EV_PER_ATOM:g} eV)"
    if per_atom <= RELATIVE_EV_PER_ATOM or any(z not in FREE_ATOM_HARTREE for z in elements):
        return None
    atoms = c @ np.array([FREE_ATOM_HARTREE[z] * Hartree for z in elements])
    ratio = float(np.median(np.abs(e) / np.abs(atoms)))
    if TOTAL_RATIO[0] <= ratio <= TOTAL_RATIO[1]:
        return None
    expected = float(np.median(np.abs(atoms) / n_atoms))
    return (f"median |E| per atom is {per_atom:.4g} eV: neither a total energy (about "
            f"{expected:.4g} eV per atom for this composition) nor an energy relative to free "
            f"atoms (below {RELATIVE_EV_PER_ATOM:g} eV per atom)")


def warn_energy_scale(energy_ev: np.ndarray, counts: np.ndarray, elements: tuple[int, ...],
                      path: str, fidelity: str, unit: str) -> str | None:
    """Issue a UserWarning when :func:`energy_scale_problem` finds one; returns it."""
    problem = energy_scale_problem(energy_ev, counts, elements)
    if problem:
        warnings.warn(f"{path}: fidelity {fidelity!r} with energy_unit {unit!r}: {problem}; "
                      "is the declared energy_unit right?", UserWarning, stacklevel=3)
    return problem
