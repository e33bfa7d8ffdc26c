"""Labels of the test split and the "just use the low level" baselines.

The raw gap of two levels on the same geometries is the error of using the low level's
labels as high-level labels: forces RMS(F_low − F_high) (meV/Å); energies after shifting
by the difference of the levels' self-energies, fitted on the *training* split only:
E_low + Σ_a (ε_high(Z_a) − ε_low(Z_a)) − E_high (meV).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..data import Split, fit_self_energies
from ..metrics import (energy_above_minimum, error_summary, errors_by_energy,
                       labelled_errors)


@dataclass
class LevelReferences:
    """Energy (n, F) and force (Σ atoms, F, 3) labels of ``rows``, and their composition
    groups (rows with the same element counts share a group; the ΔE metric pairs them)."""

    fidelities: tuple[str, ...]
    energy: np.ndarray
    forces: np.ndarray
    groups: np.ndarray
    n_atoms: np.ndarray

    def of(self, fidelity: str) -> tuple[np.ndarray, np.ndarray]:
        t = self.fidelities.index(fidelity)
        return self.energy[:, t], self.forces[:, t]


def level_references(dataset, rows) -> LevelReferences:
    """Every fidelity's labels on ``rows`` of ``dataset``, read once."""
    rows = np.asarray(rows, dtype=np.int64)
    forces = [dataset[int(i)].forces.double().numpy() for i in rows]
    forces = (np.concatenate(forces) if forces
              else np.zeros((0, len(dataset.fidelities), 3)))
    _, groups = np.unique(dataset.element_counts_of(rows), axis=0, return_inverse=True)
    return LevelReferences(tuple(dataset.fidelities), dataset.energies[rows], forces,
                           groups.reshape(-1), np.asarray(dataset.n_atoms)[rows])


def self_energy_shift(dataset, fit_rows, rows, low: str, high: str) -> np.ndarray:
    """Σ_a (ε_high(Z_a) − ε_low(Z_a)) for each of ``rows`` (eV), with the self-energies
    fitted on ``fit_rows`` (the training split)."""
    fit = fit_self_energies(dataset, fit_rows)
    delta = fit.values[fit.fidelities.index(high)] - fit.values[fit.fidelities.index(low)]
    return dataset.element_counts_of(np.asarray(rows)) @ delta


def raw_force_gap(refs: LevelReferences, low: str, high: str) -> float | None:
    """RMS(F_low − F_high) over force components labelled at both levels (meV/Å)."""
    gap = error_summary(labelled_errors(refs.of(low)[1], refs.of(high)[1]), "gap")
    return gap.get("gap_rmse")


def baselines(dataset, split: Split, low: str, high: str,
              refs: LevelReferences | None = None, shift: np.ndarray | None = None) -> dict:
    """The raw force and energy gaps of ``low`` vs ``high`` on the test split, with
    their MAE and 99th percentile (meV/Å, meV); ``refs`` and ``shift`` (see
    :func:`level_references`, :func:`self_energy_shift`) when already read."""
    rows = np.asarray(split.test)
    refs = refs if refs is not None else level_references(dataset, rows)
    if shift is None:
        shift = self_energy_shift(dataset, split.train, rows, low, high)
    out: dict = {}
    f = error_summary(labelled_errors(refs.of(low)[1], refs.of(high)[1]), "forces_gap")
    e_lo, e_hi = refs.of(low)[0], refs.of(high)[0]
    shifted = e_lo + shift
    e = error_summary(labelled_errors(shifted, e_hi), "energy_gap")
    out.update(f)
    out.update(e)
    above = energy_above_minimum(e_hi, refs.groups)
    f_gap = refs.of(low)[1] - refs.of(high)[1]
    out["by_energy"] = errors_by_energy(above, refs.n_atoms, shifted - e_hi, f_gap)
    return out
