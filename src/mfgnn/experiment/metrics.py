"""Metrics of the experiment matrix: errors per structure, the paper's conformer ΔE
metric, baselines, and mean ± 95 % confidence intervals over seeds."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..metrics import (MILLI, energy_above_minimum, error_summary, errors_by_energy,
                       labelled_errors)

# two-sided 95 % Student-t quantiles t_{0.975, dof} for dof = 1..30
_T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
         2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
         2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042]


def mean_ci95(values) -> dict:
    """{"mean", "ci95", "runs"}: the half-width of the 95 % confidence interval of the
    mean, t_{0.975, n−1} · s / √n (0 for a single run)."""
    runs = [float(v) for v in values]
    n = len(runs)
    mean = float(np.mean(runs)) if n else float("nan")
    if n < 2:
        return {"mean": mean, "ci95": 0.0, "runs": runs}
    s = float(np.std(runs, ddof=1))
    t = _T975[n - 2] if n - 1 <= len(_T975) else 1.96
    return {"mean": mean, "ci95": t * s / math.sqrt(n), "runs": runs}


def pairwise_difference_rmse(errors: np.ndarray, groups: np.ndarray) -> float | None:
    """RMSE of conformer energy differences ΔE_ij = E_i − E_j over all pairs i < j of
    the same composition (the paper's ΔE metric).

    With per-structure errors e_i = E_i^pred − E_i^ref, the error of ΔE_ij is e_i − e_j,
    and over the n(n−1)/2 pairs of a group
    Σ_{i<j} (e_i − e_j)² = n Σ e_i² − (Σ e_i)².
    Returns None when no group has two structures.
    """
    total, pairs = 0.0, 0
    for g in np.unique(groups):
        e = errors[groups == g]
        n = len(e)
        if n < 2:
            continue
        total += n * float(np.sum(e * e)) - float(np.sum(e)) ** 2
        pairs += n * (n - 1) // 2
    if not pairs:
        return None
    return math.sqrt(max(total, 0.0) / pairs)


@dataclass
class Predictions:
    """Test-split predictions of one run for one dataset fidelity (eV, eV/Å)."""

    energy: np.ndarray          # (n,) predicted energies
    forces: np.ndarray          # (Σ atoms, 3) predicted forces


def score(pred: Predictions, energy_ref: np.ndarray, forces_ref: np.ndarray,
          groups: np.ndarray, n_atoms: np.ndarray | None = None) -> dict:
    """Energy RMSE/MAE/P99 (meV), force RMSE/MAE/P99 (meV/Å, over components) and ΔE
    RMSE (meV) on the labelled entries (:func:`mfgnn.metrics.error_summary`); a metric
    is absent when no such label exists. With ``n_atoms`` (atoms per structure), also
    ``by_energy``: the same errors binned by the reference energy above the minimum."""
    out: dict = {}
    if n_atoms is not None:
        out["by_energy"] = errors_by_energy(
            energy_above_minimum(energy_ref, groups), n_atoms, pred.energy - energy_ref,
            pred.forces - forces_ref)
    ok = np.isfinite(energy_ref)
    e = labelled_errors(pred.energy, energy_ref)
    out.update(error_summary(e, "energy"))
    if e.size == ok.sum() and e.size:
        d = pairwise_difference_rmse(e, groups[ok])
        if d is not None:
            out["delta_e_rmse"] = MILLI * d
    out.update(error_summary(labelled_errors(pred.forces, forces_ref), "forces"))
    return out
