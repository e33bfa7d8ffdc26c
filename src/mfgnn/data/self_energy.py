"""Per-fidelity self-energies: least squares of each fidelity's energy on element counts.

For fidelity t, with C the (rows, elements) atom-count matrix of the rows that have an
energy at t (restricted to the given training indices), the fit solves
``min_s || C s - E_t ||`` in float64 with ``np.linalg.lstsq``. Levels never share reference
energies: each fidelity has its own row of values.

Rank deficiency: when all structures have the same composition (e.g. only H2CO), C has
rank 1 and lstsq returns the minimum-norm solution. The individual per-element values are
then not meaningful, but their sum over the molecule (the only thing the model uses) is
the least-squares optimum. Elements absent from a fidelity's rows get 0.

The fit groups rows by composition (weighted least squares on composition means), which
has exactly the same minimisers and minimum-norm solution as the row-wise problem but
needs memory proportional to the number of distinct compositions only.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor


@dataclass
class SelfEnergies:
    """Fitted self-energies.

    Attributes:
        fidelities: names, low -> high.
        elements: atomic numbers of the columns.
        values: (F, n_elements) float64, eV per atom.
        residual_rmse: fidelity -> RMSE per structure (eV) of E - sum of self-energies
            over the rows used in the fit (NaN when no row had that fidelity's energy).
        n_rows: fidelity -> number of rows used in the fit.
        rank: fidelity -> rank of the count matrix (< n_elements: minimum-norm solution).
    """

    fidelities: tuple[str, ...]
    elements: tuple[int, ...]
    values: np.ndarray
    residual_rmse: dict[str, float]
    n_rows: dict[str, int] = field(default_factory=dict)
    rank: dict[str, int] = field(default_factory=dict)

    def as_tensor(self) -> Tensor:
        """float64 (F, n_elements) tensor, eV per atom."""
        return torch.as_tensor(np.asarray(self.values, dtype=np.float64), dtype=torch.float64)

    def energy(self, counts: np.ndarray) -> np.ndarray:
        """(n, F) float64 sum of self-energies for (n, n_elements) atom counts, eV."""
        return np.asarray(counts, dtype=np.float64) @ self.values.T

    def to_dict(self) -> dict:
        """JSON-ready dict (NaN residuals become None)."""
        return {
            "fidelities": list(self.fidelities),
            "elements": [int(e) for e in self.elements],
            "values": self.values.tolist(),
            "residual_rmse": {k: (None if not np.isfinite(v) else float(v))
                              for k, v in self.residual_rmse.items()},
            "n_rows": dict(self.n_rows),
            "rank": dict(self.rank),
        }

    @classmethod
    def from_dict(cls, d: dict) -> SelfEnergies:
        """Inverse of :meth:`to_dict`."""
        return cls(
            fidelities=tuple(d["fidelities"]),
            elements=tuple(int(e) for e in d["elements"]),
            values=np.asarray(d["values"], dtype=np.float64).reshape(
                len(d["fidelities"]), len(d["elements"])),
            residual_rmse={k: (float("nan") if v is None else float(v))
                           for k, v in d["residual_rmse"].items()},
            n_rows=dict(d.get("n_rows", {})),
            rank=dict(d.get("rank", {})),
        )


def _fit_one(counts: np.ndarray, energy: np.ndarray) -> tuple[np.ndarray, float, int]:
    """Least squares of ``energy`` (m,) on ``counts`` (m, k); returns (s, rmse, rank)."""
    comps, inverse = np.unique(counts, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    n_c = np.bincount(inverse, minlength=len(comps)).astype(np.float64)
    mean = np.bincount(inverse, weights=energy, minlength=len(comps)) / n_c
    w = np.sqrt(n_c)
    a = comps.astype(np.float64) * w[:, None]
    s, _, rank, _ = np.linalg.lstsq(a, mean * w, rcond=None)
    resid = energy - counts.astype(np.float64) @ s
    return s, float(np.sqrt(np.mean(resid**2))), int(rank)


def fit_self_energies(dataset, indices=None) -> SelfEnergies:
    """Fit per-fidelity self-energies on the rows ``indices`` (default: all rows).

    Only rows that have the fidelity's energy (not NaN) enter its fit. Pass the training
    indices so that validation and test rows never influence the fit.

    Args:
        dataset: a MultiFidelityDataset or subset (``energies``, ``element_counts()``,
            ``fidelities``, ``elements``).
        indices: rows of ``dataset`` to use, or None for all.

    Returns:
        :class:`SelfEnergies` with values (F, n_elements) in eV per atom.
    """
    energies = np.asarray(dataset.energies, dtype=np.float64)
    counts = np.asarray(dataset.element_counts())
    if indices is not None:
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        energies, counts = energies[idx], counts[idx]
    fids = tuple(dataset.fidelities)
    elements = tuple(int(e) for e in dataset.elements)
    values = np.zeros((len(fids), len(elements)), dtype=np.float64)
    rmse, n_rows, rank = {}, {}, {}
    for k, fid in enumerate(fids):
        ok = np.isfinite(energies[:, k])
        n_rows[fid] = int(ok.sum())
        if not ok.any():
            warnings.warn(f"fidelity {fid!r}: no row with an energy among the rows given; "
                          "its self-energies are set to 0", UserWarning, stacklevel=2)
            rmse[fid], rank[fid] = float("nan"), 0
            continue
        values[k], rmse[fid], rank[fid] = _fit_one(counts[ok], energies[ok, k])
    return SelfEnergies(fids, elements, values, rmse, n_rows, rank)
