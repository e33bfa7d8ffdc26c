"""Error metrics, one definition for training, ``mfgnn evaluate`` and ``mfgnn experiment``.

For errors d_k = prediction − label over the labelled entries k = 1..n (energies per
structure, forces per Cartesian component), in meV (energies) and meV/Å (forces):

    RMSE = sqrt(Σ d_k² / n),   MAE = Σ |d_k| / n,   P99 = 99th percentile of |d_k|.

The tail (P99) shows what RMSE and MAE average away on wide-range data, where a few
structures far above the minimum can carry most of the squared error.
"""

from __future__ import annotations

import math

import numpy as np
import torch

#: eV -> meV
MILLI = 1000.0


def error_summary(diff: np.ndarray, prefix: str) -> dict[str, float]:
    """``{prefix_rmse, prefix_mae, prefix_p99}`` in milli-units of ``diff`` (eV → meV);
    empty when ``diff`` has no entry."""
    d = np.asarray(diff, dtype=np.float64).reshape(-1)
    if d.size == 0:
        return {}
    a = np.abs(d)
    return {f"{prefix}_rmse": MILLI * float(np.sqrt(np.mean(d * d))),
            f"{prefix}_mae": MILLI * float(np.mean(a)),
            f"{prefix}_p99": MILLI * float(np.quantile(a, 0.99))}


def labelled_errors(pred: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """``pred − ref`` where the label ``ref`` (and the prediction) is finite; for
    (n, 3) force arrays a row counts only when all three components are labelled."""
    pred, ref = np.asarray(pred, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    ok = np.isfinite(ref) & np.isfinite(pred)
    if ref.ndim == 2:
        ok = ok.all(axis=1)
    return pred[ok] - ref[ok]


class MetricAccumulator:
    """Errors per fidelity collected over the batches of an evaluation pass.

    ``summary()`` gives, per fidelity with any label, :func:`error_summary` of the energy
    errors (per structure, meV) and force errors (per component, meV/Å), and the counts
    ``n_energy`` (structures) and ``n_forces`` (atoms). Batch labels must be in the
    model's column order (the data side selects them).
    """

    def __init__(self, fidelities):
        self.fidelities = tuple(fidelities)
        self._energy = {f: [] for f in self.fidelities}
        self._forces = {f: [] for f in self.fidelities}
        self._rows: list[np.ndarray] = []        # per structure, for errors_by_energy
        self._n_atoms: list[np.ndarray] = []
        self._labels: list[np.ndarray] = []
        self._e_err: list[np.ndarray] = []
        self._f_err: list[np.ndarray] = []

    def update(self, out: dict, batch) -> None:
        """Add one batch: ``out`` from the model, ``batch`` with (B, F) / (ΣN, F, 3) labels."""
        energy = out["energy"].detach().double().cpu().numpy()
        target = batch.energy.detach().double().cpu().numpy()
        forces = out.get("forces")
        ftarget = batch.forces.detach().double().cpu().numpy()
        if forces is not None:
            forces = forces.detach().double().cpu().numpy()
        for t, name in enumerate(self.fidelities):
            self._energy[name].append(labelled_errors(energy[:, t], target[:, t]))
            if forces is not None:
                self._forces[name].append(labelled_errors(forces[:, t], ftarget[:, t]))
        if getattr(batch, "idx", None) is not None and getattr(batch, "ptr", None) is not None:
            self._rows.append(batch.idx.cpu().numpy())
            self._n_atoms.append(np.diff(batch.ptr.cpu().numpy()))
            self._labels.append(target)
            self._e_err.append(energy - target)
            self._f_err.append(forces - ftarget if forces is not None
                               else np.full_like(ftarget, np.nan))

    def absorb(self, others) -> None:
        """Add the errors collected by other accumulators (e.g. of the other ranks of a
        distributed evaluation)."""
        for other in others:
            for name in self.fidelities:
                self._energy[name].extend(other._energy[name])
                self._forces[name].extend(other._forces[name])
            for mine, theirs in ((self._rows, other._rows), (self._n_atoms, other._n_atoms),
                                 (self._labels, other._labels), (self._e_err, other._e_err),
                                 (self._f_err, other._f_err)):
                mine.extend(theirs)

    def by_energy(self, groups_of) -> dict[str, dict]:
        """Per fidelity, :func:`errors_by_energy` with each structure's label energy above
        the minimum of its composition group; ``groups_of(rows)`` gives the groups of
        dataset rows (e.g. from element counts). Empty without row indices."""
        if not self._rows:
            return {}
        rows = np.concatenate(self._rows)
        n_atoms = np.concatenate(self._n_atoms)
        labels, e_err = np.concatenate(self._labels), np.concatenate(self._e_err)
        f_err = np.concatenate(self._f_err)
        groups = groups_of(rows)
        out = {}
        for t, name in enumerate(self.fidelities):
            above = energy_above_minimum(labels[:, t], groups)
            binned = errors_by_energy(above, n_atoms, e_err[:, t], f_err[:, t])
            if binned:
                out[name] = binned
        return out

    def summary(self) -> dict[str, dict[str, float]]:
        result: dict[str, dict[str, float]] = {}
        for name in self.fidelities:
            entry: dict[str, float] = {}
            e = np.concatenate(self._energy[name]) if self._energy[name] else np.zeros(0)
            f = (np.concatenate(self._forces[name]) if self._forces[name]
                 else np.zeros((0, 3)))
            if e.size:
                entry.update(error_summary(e, "energy"))
                entry["n_energy"] = int(e.size)
            if f.size:
                entry.update(error_summary(f, "forces"))
                entry["n_forces"] = int(f.shape[0])
            if entry:
                result[name] = entry
        return result


def rms_gap(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray) -> float:
    """RMS of a − b over entries where both are finite (in the units of a and b, ×1000):
    the error of using one level's labels as another's."""
    return error_summary(labelled_errors(np.asarray(a), np.asarray(b)), "gap").get(
        "gap_rmse", float("nan"))


def format_metrics(metrics: dict) -> str:
    """A plain-text table of per-fidelity metrics (``mfgnn train`` / ``evaluate``)."""
    cols = [("energy_rmse", "E RMSE", "meV"), ("energy_mae", "E MAE", "meV"),
            ("energy_p99", "E P99", "meV"), ("forces_rmse", "F RMSE", "meV/Å"),
            ("forces_mae", "F MAE", "meV/Å"), ("forces_p99", "F P99", "meV/Å")]
    lines = [f"{'fidelity':<12}" + "".join(f"{c[1]:>10}" for c in cols) + f"{'n_E':>8}{'n_F':>8}",
             f"{'':<12}" + "".join(f"{c[2]:>10}" for c in cols)]

    def fmt(x):
        return f"{x:>10.2f}" if x is not None else f"{'-':>10}"

    for fid, m in metrics.items():
        lines.append(f"{fid:<12}" + "".join(fmt(m.get(c[0])) for c in cols)
                     + f"{m.get('n_energy', 0):>8}{m.get('n_forces', 0):>8}")
    for fid, m in metrics.items():
        if m.get("by_energy"):
            lines.append(f"{fid} by energy above the minimum (E / F RMSE, meV / meV/Å):")
            for name, b in m["by_energy"].items():
                lines.append(f"  {name:<12}{b['n_structures']:>7} structures"
                             f"{fmt(b.get('energy_rmse'))}{fmt(b.get('forces_rmse'))}")
    return "\n".join(lines)


#: Edges (eV above the minimum) of the energy bins of :func:`errors_by_energy`.
ENERGY_BIN_EDGES = (0.0, 2.0, 5.0, 10.0, math.inf)


def energy_above_minimum(energy: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """E_i − min_j E_j over the rows j of the same composition group (eV); NaN where the
    energy is missing."""
    energy = np.asarray(energy, dtype=np.float64)
    out = np.full(energy.shape, np.nan)
    for g in np.unique(groups):
        rows = (groups == g) & np.isfinite(energy)
        if rows.any():
            out[rows] = energy[rows] - energy[rows].min()
    return out


def errors_by_energy(above: np.ndarray, n_atoms: np.ndarray, energy_err: np.ndarray,
                     force_err: np.ndarray, edges=ENERGY_BIN_EDGES) -> dict[str, dict]:
    """Energy and force errors (:func:`error_summary`) of the structures in each bin of
    energy above the minimum; on wide-range data the high bins show what the overall
    RMSE hides or is dominated by.

    Args:
        above: (n,) eV above the minimum of each structure (NaN: unbinned).
        n_atoms: (n,) atoms per structure, in the order of the rows of ``force_err``.
        energy_err: (n,) prediction − label (eV), NaN where unlabelled.
        force_err: (Σ n_atoms, 3) prediction − label (eV/Å), NaN where unlabelled.
    """
    owner = np.repeat(np.arange(len(n_atoms)), np.asarray(n_atoms, dtype=np.int64))
    out: dict[str, dict] = {}
    for lo, hi in zip(edges[:-1], edges[1:]):
        rows = (above >= lo) & (above < hi)
        if not rows.any():
            continue
        e = energy_err[rows]
        f = force_err[rows[owner]]
        entry = {"n_structures": int(rows.sum())}
        entry.update(error_summary(e[np.isfinite(e)], "energy"))
        entry.update(error_summary(f[np.isfinite(f).all(axis=1)], "forces"))
        out[f"{lo:g}-{hi:g} eV"] = entry
    return out
