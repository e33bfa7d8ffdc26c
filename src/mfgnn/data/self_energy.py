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
needs memory proportional to the number of distinct compositions only; the rows are read
in chunks and merged into per-composition count, mean and squared deviations, so a
4.9 M-row pack is fitted without a per-row table.
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


#: Rows whose counts and energies are read at once by :func:`fit_self_energies`.
FIT_ROWS = 65536


class _CompositionSums:
    """Per-composition count, mean and sum of squared deviations of one fidelity's
    energies, merged chunk by chunk (Chan et al.'s pairwise update): memory grows with the
    number of distinct compositions, not with the rows."""

    def __init__(self, n_elements: int) -> None:
        self.comps = np.zeros((0, n_elements), dtype=np.int64)
        self.n = np.zeros(0)
        self.mean = np.zeros(0)
        self.m2 = np.zeros(0)

    def add(self, counts: np.ndarray, energy: np.ndarray) -> None:
        """Rows ``counts`` (m, k) with energies ``energy`` (m,) eV."""
        comps, inverse = np.unique(counts, axis=0, return_inverse=True)
        inverse = inverse.reshape(-1)
        n_b = np.bincount(inverse, minlength=len(comps)).astype(np.float64)
        mean_b = np.bincount(inverse, weights=energy, minlength=len(comps)) / n_b
        m2_b = np.bincount(inverse, weights=(energy - mean_b[inverse]) ** 2,
                           minlength=len(comps))
        if len(self.comps) == 0:
            self.comps, self.n, self.mean, self.m2 = comps.astype(np.int64), n_b, mean_b, m2_b
            return
        table, where = np.unique(np.concatenate([self.comps, comps]), axis=0,
                                 return_inverse=True)
        where = where.reshape(-1)
        old, new = where[: len(self.comps)], where[len(self.comps):]
        n, mean, m2 = (np.zeros(len(table)) for _ in range(3))
        n[old], mean[old], m2[old] = self.n, self.mean, self.m2
        n_a, mean_a = n[new].copy(), mean[new].copy()
        total = n_a + n_b
        delta = mean_b - mean_a
        mean[new] = mean_a + delta * n_b / total
        m2[new] = m2[new] + m2_b + delta ** 2 * n_a * n_b / total
        n[new] = total
        self.comps, self.n, self.mean, self.m2 = table, n, mean, m2

    def fit(self) -> tuple[np.ndarray, float, int]:
        """Weighted least squares on the composition means: (s, rmse per row, rank)."""
        w = np.sqrt(self.n)
        a = self.comps.astype(np.float64) * w[:, None]
        s, _, rank, _ = np.linalg.lstsq(a, self.mean * w, rcond=None)
        fitted = self.comps.astype(np.float64) @ s
        sse = self.m2.sum() + (self.n * (self.mean - fitted) ** 2).sum()
        return s, float(np.sqrt(max(sse, 0.0) / self.n.sum())), int(rank)


def _chunks(dataset, indices):
    """Yield (energies (m, F) float64, counts (m, k) int64) of ``indices`` (or all rows),
    FIT_ROWS rows at a time, read through ``element_counts_of`` when the dataset has it."""
    n = len(dataset.energies)
    idx = (np.arange(n, dtype=np.int64) if indices is None
           else np.asarray(indices, dtype=np.int64).reshape(-1))
    counts_of = getattr(dataset, "element_counts_of", None)
    table = None if callable(counts_of) else np.asarray(dataset.element_counts())
    for s in range(0, len(idx), FIT_ROWS):
        part = idx[s:s + FIT_ROWS]
        energies = np.asarray(dataset.energies[part], dtype=np.float64)
        counts = np.asarray(counts_of(part) if table is None else table[part])
        yield energies.reshape(len(part), -1), counts


def fit_self_energies(dataset, indices=None) -> SelfEnergies:
    """Fit per-fidelity self-energies on the rows ``indices`` (default: all rows).

    Only rows that have the fidelity's energy (not NaN) enter its fit. Pass the training
    indices so that validation and test rows never influence the fit. Rows are read
    :data:`FIT_ROWS` at a time and reduced to per-composition sums (memory: a chunk plus
    the distinct compositions, whatever the number of rows).

    Args:
        dataset: a MultiFidelityDataset, PackedDataset or subset (``energies``,
            ``element_counts_of(rows)`` or ``element_counts()``, ``fidelities``,
            ``elements``).
        indices: rows of ``dataset`` to use, or None for all.

    Returns:
        :class:`SelfEnergies` with values (F, n_elements) in eV per atom.
    """
    fids = tuple(dataset.fidelities)
    elements = tuple(int(e) for e in dataset.elements)
    sums = [_CompositionSums(len(elements)) for _ in fids]
    for energies, counts in _chunks(dataset, indices):
        for k in range(len(fids)):
            ok = np.isfinite(energies[:, k])
            if ok.any():
                sums[k].add(counts[ok], energies[ok, k])
    values = np.zeros((len(fids), len(elements)), dtype=np.float64)
    rmse, n_rows, rank = {}, {}, {}
    for k, fid in enumerate(fids):
        n_rows[fid] = int(sums[k].n.sum())
        if n_rows[fid] == 0:
            warnings.warn(f"fidelity {fid!r}: no row with an energy among the rows given; "
                          "its self-energies are set to 0", UserWarning, stacklevel=2)
            rmse[fid], rank[fid] = float("nan"), 0
            continue
        values[k], rmse[fid], rank[fid] = sums[k].fit()
    return SelfEnergies(fids, elements, values, rmse, n_rows, rank)
