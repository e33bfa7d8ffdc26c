"""Error metrics per fidelity, accumulated over batches: RMSE and MAE of energies (meV)
and force components (meV/Å), counted only where a label exists."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor


@dataclass
class _Sums:
    sq: float = 0.0
    abs: float = 0.0
    n: int = 0

    def add(self, diff: Tensor) -> None:
        diff = diff.detach().double()
        self.sq += float(diff.square().sum())
        self.abs += float(diff.abs().sum())
        self.n += int(diff.numel())


@dataclass
class FidelityMetrics:
    """Running sums for energy errors (per structure) and force errors (per component)."""

    energy: _Sums = field(default_factory=_Sums)
    forces: _Sums = field(default_factory=_Sums)
    force_atoms: int = 0


class MetricAccumulator:
    """Collects errors over an epoch or an evaluation pass.

    ``summary()`` gives, per fidelity with any label, ``energy_rmse``/``energy_mae`` in
    meV, ``forces_rmse``/``forces_mae`` in meV/Å (over Cartesian components), and the
    counts ``n_energy`` (structures) and ``n_forces`` (atoms).
    """

    def __init__(self, fidelities):
        self.fidelities = tuple(fidelities)
        self.sums = {f: FidelityMetrics() for f in self.fidelities}

    def update(self, out: dict, batch, column_of: dict[str, int] | None = None) -> None:
        """Add one batch. ``column_of`` maps a model fidelity to its column in the batch
        labels (defaults to the same position)."""
        for t, name in enumerate(self.fidelities):
            col = t if column_of is None else column_of.get(name)
            if col is None:
                continue
            target = batch.energy[:, col]
            mask = torch.isfinite(target)
            if mask.any():
                self.sums[name].energy.add(out["energy"][mask, t] - target[mask])
            forces = out.get("forces")
            if forces is not None:
                ftarget = batch.forces[:, col, :]
                fpred = forces[:, t, :]
                fmask = torch.isfinite(ftarget).all(dim=-1) & torch.isfinite(fpred).all(dim=-1)
                if fmask.any():
                    self.sums[name].forces.add(fpred[fmask] - ftarget[fmask].to(fpred.dtype))
                    self.sums[name].force_atoms += int(fmask.sum())

    def summary(self) -> dict[str, dict[str, float]]:
        result: dict[str, dict[str, float]] = {}
        for name, s in self.sums.items():
            entry: dict[str, float] = {}
            if s.energy.n:
                entry["energy_rmse"] = 1000.0 * (s.energy.sq / s.energy.n) ** 0.5
                entry["energy_mae"] = 1000.0 * s.energy.abs / s.energy.n
                entry["n_energy"] = s.energy.n
            if s.forces.n:
                entry["forces_rmse"] = 1000.0 * (s.forces.sq / s.forces.n) ** 0.5
                entry["forces_mae"] = 1000.0 * s.forces.abs / s.forces.n
                entry["n_forces"] = s.force_atoms
            if entry:
                result[name] = entry
        return result
