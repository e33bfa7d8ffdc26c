"""Masked multi-fidelity loss (paper Eq. 1–3).

.. math::

    L = \\sum_t \\left( w_{E,t} L_{E,t} + w_{F,t} L_{F,t} + w_{H,t} L_{H,t} \\right),
    \\qquad L_E = \\mathrm{RMSE}_E + \\mathrm{MAE}_E, \\qquad
    L_F = \\mathrm{RMSE}_F + \\mathrm{MAE}_F

Each error is taken over the labelled entries of fidelity t in the batch only (a missing
label is NaN in the data and contributes nothing, neither to the value nor to the
gradient). A term with no labelled entry is exactly 0. Which labels are trained is set by
``labels`` ({fidelity: ["energy", "forces"]}), independently of which exist in the data.

Units: energies in eV, forces in eV/Å, so L is in eV-like units. The hierarchicality term
is scaled relative to the error terms (see :class:`LossConfig`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from .config_checks import check_number
from .errors import ConfigError


@dataclass
class LossConfig:
    """Weights of the loss terms (paper Eq. 1); the ``loss:`` section of a run.

    ``energy_weight`` w_E and ``forces_weight`` w_F multiply RMSE+MAE in eV and eV/Å; a
    float applies to every fidelity, a mapping ``{fidelity: weight}`` sets them one by
    one (missing fidelities get 1).

    ``hierarchicality_weight`` w_H is *relative*: the term added is
    w_H · L_H,t · sg(w_E L_E,t + w_F L_F,t), where sg stops the gradient. The regularizer
    is thus always w_H · L_H (L_H ≤ number of blocks) times the fidelity's error terms and
    can never swamp them, whatever the units; with the paper's absolute w_H = 1 it did
    (the model collapsed once errors were small).

    ``per_atom_energy`` divides each energy error by the number of atoms.
    """

    energy_weight: float | dict[str, float] = 1.0
    forces_weight: float | dict[str, float] = 1.0
    hierarchicality_weight: float = 0.01
    per_atom_energy: bool = False

    def __post_init__(self) -> None:
        for name in ("energy_weight", "forces_weight"):
            value = getattr(self, name)
            if isinstance(value, dict):
                for fid, w in value.items():
                    check_number(w, f"loss.{name}.{fid}", minimum=0)
            else:
                check_number(value, f"loss.{name}", minimum=0)
        check_number(self.hierarchicality_weight, "loss.hierarchicality_weight", minimum=0)
        if not isinstance(self.per_atom_energy, bool):
            raise ConfigError(f"loss.per_atom_energy must be true or false, "
                              f"got {self.per_atom_energy!r}")

    def weight(self, kind: str, fidelity: str) -> float:
        """The weight of ``kind`` ("energy" or "forces") for ``fidelity``."""
        w = self.energy_weight if kind == "energy" else self.forces_weight
        if isinstance(w, dict):
            return float(w.get(fidelity, 1.0))
        return float(w)


def masked_rmse_mae(pred: Tensor, target: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, int]:
    """RMSE and MAE of ``pred - target`` over the entries where ``mask`` is True.

    NaN targets outside the mask never reach the arithmetic (they are replaced before the
    subtraction), so they can produce no NaN gradient. Returns zeros when nothing is
    labelled.
    """
    count = int(mask.sum())
    if count == 0:
        zero = pred.new_zeros(())
        return zero, zero, 0
    target = torch.where(mask, target, torch.zeros_like(target))
    diff = torch.where(mask, pred - target.to(pred.dtype), torch.zeros_like(pred))
    sq = diff.square().sum() / count
    # sqrt with a zero (not infinite) gradient when every error is exactly zero
    positive = sq > 0
    rmse = torch.where(positive, torch.sqrt(torch.where(positive, sq, torch.ones_like(sq))),
                       torch.zeros_like(sq))
    mae = diff.abs().sum() / count
    return rmse, mae, count


@dataclass
class LossTerms:
    """The loss and its parts, for logging; values are floats except ``total``."""

    total: Tensor
    energy: dict[str, float] = field(default_factory=dict)
    forces: dict[str, float] = field(default_factory=dict)
    hierarchicality: dict[str, float] = field(default_factory=dict)
    regularization: float = 0.0


class MultiFidelityLoss:
    """Eq. 1 over the fidelities of a model.

    Args:
        fidelities: the model's fidelity names, in the order of its output columns.
        labels: {fidelity: ["energy"] | ["forces"] | ["energy", "forces"]} to train.
        config: weights and options.
    """

    def __init__(self, fidelities: list[str] | tuple[str, ...],
                 labels: dict[str, list[str]], config: LossConfig | None = None):
        self.fidelities = tuple(fidelities)
        self.labels = {k: list(v) for k, v in labels.items()}
        self.config = config or LossConfig()

    def needs_forces(self, batch) -> list[str]:
        """Trained force fidelities that have at least one label in ``batch``."""
        out = []
        for t, name in enumerate(self.fidelities):
            if "forces" in self.labels.get(name, []):
                if bool(torch.isfinite(batch.forces[:, t, 0]).any()):
                    out.append(name)
        return out

    def __call__(self, out: dict, batch, hierarchicality: Tensor | None = None,
                 regularization: Tensor | None = None) -> LossTerms:
        """Loss of model outputs ``out`` against ``batch`` labels.

        ``out["energy"]`` is (B, F); ``out["forces"]`` (ΣN, F, 3) if present;
        ``hierarchicality`` (F,) from the model; ``regularization`` a scalar added once
        (head penalty).
        """
        cfg = self.config
        energy = out["energy"]
        total = energy.new_zeros((), dtype=torch.float64)
        terms = LossTerms(total=total)
        if cfg.per_atom_energy:
            n_atoms = torch.bincount(batch.batch, minlength=energy.shape[0]).to(energy.dtype)
        for t, name in enumerate(self.fidelities):
            wanted = self.labels.get(name, [])
            error_terms = energy.new_zeros((), dtype=torch.float64)
            if "energy" in wanted:
                target = batch.energy[:, t]
                pred = energy[:, t]
                if cfg.per_atom_energy:
                    pred, target = pred / n_atoms, target / n_atoms
                rmse, mae, n = masked_rmse_mae(pred, target, torch.isfinite(target))
                if n:
                    value = cfg.weight("energy", name) * (rmse + mae)
                    error_terms = error_terms + value
                    terms.energy[name] = float((rmse + mae).detach())
            if ("forces" in wanted and out.get("forces") is not None
                    and not bool(torch.isnan(out["forces"][:, t, :]).all())):
                # an all-NaN column is a fidelity whose forces were not requested from the
                # model; otherwise a non-finite prediction at a labelled entry makes the
                # loss non-finite (the trainer then skips the step) instead of vanishing
                target = batch.forces[:, t, :]
                pred = out["forces"][:, t, :]
                mask = torch.isfinite(target)
                rmse, mae, n = masked_rmse_mae(pred, target, mask)
                if n:
                    value = cfg.weight("forces", name) * (rmse + mae)
                    error_terms = error_terms + value
                    terms.forces[name] = float((rmse + mae).detach())
            total = total + error_terms
            if hierarchicality is not None and cfg.hierarchicality_weight > 0 and wanted:
                h = hierarchicality[t]
                total = total + cfg.hierarchicality_weight * h * error_terms.detach()
                terms.hierarchicality[name] = float(h.detach())
        if regularization is not None:
            total = total + regularization
            terms.regularization = float(regularization.detach())
        terms.total = total
        return terms
