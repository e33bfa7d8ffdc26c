"""Masked multi-fidelity loss (paper Eq. 1–3), with fixed or learned task weights.

.. math::

    L = \\sum_t \\left( w_{E,t} L_{E,t} + w_{F,t} L_{F,t} + w_{H,t} L_{H,t} \\right),
    \\qquad L_E = \\mathrm{RMSE}_E + \\mathrm{MAE}_E, \\qquad
    L_F = \\mathrm{RMSE}_F + \\mathrm{MAE}_F

With ``loss.weighting: uncertainty`` each fidelity's error terms
L_t = w_E L_E,t + w_F L_F,t enter as L_t / (2 σ_t²) + log σ_t with a learned σ_t
(:class:`TaskWeights`; seed paper 000 Eq. 1, homoscedastic task uncertainty).

Each error is taken over the labelled entries of fidelity t in the batch only (a missing
label is NaN in the data and contributes nothing, neither to the value nor to the
gradient). A term with no labelled entry is exactly 0. Which labels are trained is set by
``labels`` ({fidelity: ["energy", "forces"]}), independently of which exist in the data.

Units: energies in eV, forces in eV/Å (or both in units of σ_t, see ``scales``). The
hierarchicality term is scaled relative to the error terms (see :class:`LossConfig`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from .config_checks import check_choice, check_number
from .errors import ConfigError


#: Values of ``loss.weighting``.
WEIGHTINGS = ("fixed", "uncertainty")


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

    ``level_force_weight`` w_C (0: off) is a prior for a level trained on energies only
    (LF-HE): w_C · (RMSE + MAE)(F_t − sg(F_s)) over the atoms that have level-s force
    labels, where s is the nearest lower level whose forces are trained, both forces the
    model's predictions. It keeps the learned correction's forces small where the
    energies do not ask for more; the high level's forces still come from its energies.

    ``energy_only_trunk_gradient`` g ∈ [0, 1] (1: off) is the share of the gradient of
    an energy-only level's terms (a level trained on energies, not forces: the high
    level of LF-HE) that reaches the shared trunk; that level's head gets all of it
    (:class:`~mfgnn.nn.heads.HierarchicalHeads`). With g = 0 the trunk learns from the
    levels with forces alone and the energy-only head is a linear read-out of its
    features trained alongside it, a one-run relative of the ``frozen`` paradigm of
    ``mfgnn experiment`` (with ``delta`` heads the lower rows it sums still get the
    gradient). Measured on eight shared sets it was no better than joint training and far
    worse on wide-range data (README). Cannot be combined with ``level_force_weight``,
    which trains that level's forces.

    ``weighting`` (``fixed`` | ``uncertainty``): ``fixed`` (default) adds the error terms
    as they are. ``uncertainty`` learns one weight per fidelity t with a trained label
    (homoscedastic task uncertainty, seed paper 000 Eq. 1):

    .. math::  L = \\sum_t \\left[ \\frac{L_t}{2\\sigma_t^2} + \\log\\sigma_t
               + w_H L_{H,t}\\,\\mathrm{sg}(L_t) \\right] + w_C L_C + R,
               \\qquad L_t = w_{E,t} L_{E,t} + w_{F,t} L_{F,t}

    with s_t = log σ_t trained (initialised to 0, i.e. σ_t = 1; a parameter group at
    ``train.lr`` without weight decay); σ_t² has the units of L_t (eV and eV/Å, or
    units of the target scale with ``model.scale_targets``) and settles where
    σ_t² ≈ L_t, so a level with large errors is down-weighted. The hierarchicality term
    keeps its relative scaling with sg(L_t); the level-force prior w_C L_C and the head
    regulariser R are added unweighted. A fidelity with no labelled entry in a batch
    contributes nothing, log σ_t included. σ_t is logged as ``sigma_<fidelity>`` in
    ``metrics.csv``; the validation loss is this same objective at the current σ.
    """

    energy_weight: float | dict[str, float] = 1.0
    forces_weight: float | dict[str, float] = 1.0
    hierarchicality_weight: float = 0.01
    per_atom_energy: bool = False
    level_force_weight: float = 0.0
    energy_only_trunk_gradient: float = 1.0
    weighting: str = "fixed"

    def __post_init__(self) -> None:
        check_choice(self.weighting, WEIGHTINGS, "loss.weighting", "weighting")
        for name in ("energy_weight", "forces_weight"):
            value = getattr(self, name)
            if isinstance(value, dict):
                for fid, w in value.items():
                    check_number(w, f"loss.{name}.{fid}", minimum=0)
            else:
                check_number(value, f"loss.{name}", minimum=0)
        check_number(self.hierarchicality_weight, "loss.hierarchicality_weight", minimum=0)
        check_number(self.level_force_weight, "loss.level_force_weight", minimum=0)
        check_number(self.energy_only_trunk_gradient, "loss.energy_only_trunk_gradient",
                     minimum=0)
        if self.energy_only_trunk_gradient > 1:
            raise ConfigError("loss.energy_only_trunk_gradient must be <= 1, got "
                              f"{self.energy_only_trunk_gradient!r}")
        if self.energy_only_trunk_gradient < 1 and self.level_force_weight > 0:
            raise ConfigError("loss.energy_only_trunk_gradient < 1 cannot be combined with "
                              "loss.level_force_weight > 0 (that prior trains the forces of "
                              "the energy-only level through the trunk); set one of them off")
        if not isinstance(self.per_atom_energy, bool):
            raise ConfigError(f"loss.per_atom_energy must be true or false, "
                              f"got {self.per_atom_energy!r}")

    def weight(self, kind: str, fidelity: str) -> float:
        """The weight of ``kind`` ("energy" or "forces") for ``fidelity``."""
        w = self.energy_weight if kind == "energy" else self.forces_weight
        if isinstance(w, dict):
            return float(w.get(fidelity, 1.0))
        return float(w)


def energy_only_levels(labels: dict[str, list[str]]) -> list[str]:
    """The levels a run trains on energies and not forces."""
    return [name for name, kinds in labels.items() if "energy" in kinds and "forces" not in kinds]


def masked_sums(pred: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """(Σ d², Σ |d|, count) of d = ``pred - target`` over the entries where ``mask`` is
    True, as a float64 3-vector differentiable in ``pred``.

    NaN targets outside the mask never reach the arithmetic (they are replaced before the
    subtraction), so they can produce no NaN gradient. The sums are additive over batches
    and processes, which is what lets a distributed run normalise by label counts summed
    over all ranks (:mod:`mfgnn.training.distributed`).
    """
    target = torch.where(mask, target, torch.zeros_like(target))
    diff = torch.where(mask, pred - target.to(pred.dtype), torch.zeros_like(pred))
    count = mask.sum().to(torch.float64)
    return torch.stack((diff.square().sum().double(), diff.abs().sum().double(), count))


def rmse_mae_from_sums(sums: Tensor) -> tuple[Tensor, Tensor]:
    """RMSE = √(Σd²/n) and MAE = Σ|d|/n from :func:`masked_sums` (n > 0); the square
    root has a zero (not infinite) gradient when every error is exactly zero."""
    sq = sums[0] / sums[2]
    positive = sq > 0
    rmse = torch.where(positive, torch.sqrt(torch.where(positive, sq, torch.ones_like(sq))),
                       torch.zeros_like(sq))
    return rmse, sums[1] / sums[2]


def masked_rmse_mae(pred: Tensor, target: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, int]:
    """RMSE and MAE (float64) of ``pred - target`` over the entries where ``mask`` is
    True, and their count; zeros when nothing is labelled."""
    sums = masked_sums(pred, target, mask)
    count = int(sums[2])
    if count == 0:
        zero = sums.new_zeros(())
        return zero, zero, 0
    rmse, mae = rmse_mae_from_sums(sums)
    return rmse, mae, count


@dataclass
class LossTerms:
    """The loss and its parts, for logging; values are floats except ``total``."""

    total: Tensor
    energy: dict[str, float] = field(default_factory=dict)
    forces: dict[str, float] = field(default_factory=dict)
    hierarchicality: dict[str, float] = field(default_factory=dict)
    level_forces: dict[str, float] = field(default_factory=dict)
    regularization: float = 0.0


class TaskWeights(nn.Module):
    """Learned task weights: one s_t = log σ_t per fidelity (initialised to 0).

    .. math::  \\ell_t(L_t) = \\frac{L_t}{2\\sigma_t^2} + \\log\\sigma_t
               = \\tfrac12 L_t\\,e^{-2 s_t} + s_t,
               \\qquad \\frac{\\partial\\ell_t}{\\partial s_t} = 1 - \\frac{L_t}{\\sigma_t^2}

    minimal at σ_t² = L_t. float64 parameters (the loss is accumulated in float64).
    """

    def __init__(self, fidelities: list[str] | tuple[str, ...]):
        super().__init__()
        self.fidelities = tuple(fidelities)
        self.log_sigma = nn.Parameter(torch.zeros(len(self.fidelities), dtype=torch.float64))

    def forward(self, fidelity: str, value: Tensor) -> Tensor:
        """ℓ_t of the error terms ``value`` (L_t) of ``fidelity``."""
        s = self.log_sigma[self.fidelities.index(fidelity)]
        return 0.5 * value * torch.exp(-2.0 * s) + s

    def sigmas(self) -> dict[str, float]:
        """σ_t per fidelity."""
        values = torch.exp(self.log_sigma.detach()).cpu().tolist()
        return dict(zip(self.fidelities, values))


class MultiFidelityLoss:
    """Eq. 1 over the fidelities of a model.

    Args:
        fidelities: the model's fidelity names, in the order of its output columns.
        labels: {fidelity: ["energy"] | ["forces"] | ["energy", "forces"]} to train.
        config: weights and options.
        scales: σ_t per fidelity (eV; the model's ``target_scale``): when given, the
            energy and force errors of fidelity t are measured in units of σ_t (energy
            errors / σ_t, force errors / (σ_t / Å)), so the terms of levels and data sets
            with very different spreads weigh alike. None: eV and eV/Å.

    With ``config.weighting == "uncertainty"`` the loss owns ``task_weights``, a
    :class:`TaskWeights` over the fidelities with a trained label, whose parameters the
    caller must put into the optimiser (``parameters()``; see
    :func:`mfgnn.training.build.loss_parameter_groups`) and move to the model's device;
    with ``fixed`` it is None and ``parameters()`` yields nothing.
    """

    def __init__(self, fidelities: list[str] | tuple[str, ...],
                 labels: dict[str, list[str]], config: LossConfig | None = None,
                 scales=None):
        self.fidelities = tuple(fidelities)
        self.labels = {k: list(v) for k, v in labels.items()}
        self.config = config or LossConfig()
        self.scales = (None if scales is None else
                       [float(x) for x in torch.as_tensor(scales).reshape(-1).tolist()])
        trained = [name for name in self.fidelities if self.labels.get(name)]
        self.task_weights = (TaskWeights(trained) if self.config.weighting == "uncertainty"
                             else None)

    def parameters(self):
        """The loss's own trainable parameters (the task weights' log σ_t, if any)."""
        return iter(()) if self.task_weights is None else self.task_weights.parameters()

    def level_force_pairs(self) -> list[tuple[int, int]]:
        """(t, s): an energy-only level t and the nearest lower level s with trained
        forces, when ``level_force_weight`` > 0."""
        if self.config.level_force_weight <= 0:
            return []
        pairs = []
        energy_only = energy_only_levels(self.labels)
        for t, name in enumerate(self.fidelities):
            if name in energy_only:
                lower = [s for s in range(t) if "forces" in self.labels.get(self.fidelities[s], [])]
                if lower:
                    pairs.append((t, lower[-1]))
        return pairs

    def trunk_gradient(self) -> dict[int, float]:
        """{t: g} for the energy-only levels when ``energy_only_trunk_gradient`` g < 1
        (the model's ``trunk_gradient`` argument in training); empty otherwise."""
        share = float(self.config.energy_only_trunk_gradient)
        if share >= 1.0:
            return {}
        levels = energy_only_levels(self.labels)
        return {t: share for t, name in enumerate(self.fidelities) if name in levels}

    def force_label_flags(self, batch) -> Tensor:
        """(F,) bool: the batch has at least one force label of each model column (what
        a distributed run combines over ranks before :meth:`needs_forces`)."""
        return torch.isfinite(batch.forces[:, :, 0]).any(dim=0)

    def needs_forces(self, batch, flags: Tensor | None = None) -> list[str]:
        """Fidelities whose forces the loss of ``batch`` uses: trained force fidelities
        with a label in the batch (or where ``flags``, :meth:`force_label_flags` summed
        over ranks, says so), and the levels of :meth:`level_force_pairs`."""
        has = (self.force_label_flags(batch) if flags is None else flags).tolist()
        wanted = {t for t, name in enumerate(self.fidelities)
                  if "forces" in self.labels.get(name, []) and has[t]}
        wanted |= {t for t, s in self.level_force_pairs() if has[s]}
        return [self.fidelities[t] for t in sorted(wanted)]

    def statistics(self, out: dict, batch, hierarchicality: Tensor | None = None,
                   with_forces: set[int] | None = None) -> dict[str, Tensor]:
        """The additive statistics the loss is made of, each a float64 vector
        differentiable in the predictions: ``energy/t`` and ``forces/t`` (Σd², Σ|d|, n of
        :func:`masked_sums`), ``level_forces/t`` (the same for F_t − sg(F_s)) and
        ``hierarchicality/t`` (Σ over atoms of the ratio, number of atoms).

        Which statistics exist depends only on the configuration and on ``with_forces``
        (columns whose forces the model computed; by default the columns of
        ``out["forces"]`` that are not all NaN), never on which labels the batch holds,
        so every rank of a distributed run makes the same ones.
        """
        cfg = self.config
        energy = out["energy"]
        forces = out.get("forces")
        if with_forces is None:
            with_forces = set() if forces is None else {
                t for t in range(len(self.fidelities))
                if not bool(torch.isnan(forces[:, t, :]).all())}
        if cfg.per_atom_energy:
            n_atoms = torch.bincount(batch.batch, minlength=energy.shape[0]).to(energy.dtype)
        stats: dict[str, Tensor] = {}
        for t, name in enumerate(self.fidelities):
            wanted = self.labels.get(name, [])
            scale = 1.0 if self.scales is None else self.scales[t]
            if "energy" in wanted:
                target, pred = batch.energy[:, t], energy[:, t]
                if cfg.per_atom_energy:
                    pred, target = pred / n_atoms, target / n_atoms
                if self.scales is not None:
                    pred, target = pred / scale, target / scale
                stats[f"energy/{t}"] = masked_sums(pred, target, torch.isfinite(target))
            if "forces" in wanted and t in with_forces:
                # a non-finite prediction at a labelled entry makes the loss non-finite
                # (the trainer then skips the step) instead of vanishing
                target, pred = batch.forces[:, t, :], forces[:, t, :]
                if self.scales is not None:
                    pred, target = pred / scale, target / scale
                stats[f"forces/{t}"] = masked_sums(pred, target, torch.isfinite(target))
            if hierarchicality is not None and cfg.hierarchicality_weight > 0 and wanted:
                n = float(batch.num_nodes)
                stats[f"hierarchicality/{t}"] = torch.stack(
                    (hierarchicality[t].double() * n, energy.new_tensor(n, dtype=torch.float64)))
        for t, s in self.level_force_pairs():
            if t in with_forces and s in with_forces:
                pred, anchor = forces[:, t, :], forces[:, s, :].detach()
                if self.scales is not None:
                    pred, anchor = pred / self.scales[t], anchor / self.scales[t]
                stats[f"level_forces/{t}"] = masked_sums(
                    pred, anchor, torch.isfinite(batch.forces[:, s, :]))
        return stats

    def combine(self, stats: dict[str, Tensor], regularization: Tensor | None = None,
                device=None) -> LossTerms:
        """Eq. 1 from :meth:`statistics` (of one batch, or summed over ranks); a term
        whose count is 0 is exactly 0."""
        cfg = self.config
        first = next(iter(stats.values()), None)
        total = torch.zeros((), dtype=torch.float64,
                            device=first.device if first is not None else device)
        terms = LossTerms(total=total)
        for t, name in enumerate(self.fidelities):
            error_terms = total.new_zeros(())
            labelled = False
            for kind in ("energy", "forces"):
                sums = stats.get(f"{kind}/{t}")
                if sums is None or not float(sums[2].detach()) > 0:
                    continue
                rmse, mae = rmse_mae_from_sums(sums)
                error_terms = error_terms + cfg.weight(kind, name) * (rmse + mae)
                labelled = True
                getattr(terms, kind)[name] = float((rmse + mae).detach())
            if self.task_weights is not None and labelled:
                total = total + self.task_weights(name, error_terms)
            else:
                total = total + error_terms
            h = stats.get(f"hierarchicality/{t}")
            if h is not None:
                ratio = h[0] / h[1] if float(h[1].detach()) > 0 else h[0] * 0.0
                total = total + cfg.hierarchicality_weight * ratio * error_terms.detach()
                terms.hierarchicality[name] = float(ratio.detach())
        for t, _ in self.level_force_pairs():
            sums = stats.get(f"level_forces/{t}")
            if sums is not None and float(sums[2].detach()) > 0:
                rmse, mae = rmse_mae_from_sums(sums)
                total = total + cfg.level_force_weight * (rmse + mae)
                terms.level_forces[self.fidelities[t]] = float((rmse + mae).detach())
        if regularization is not None:
            total = total + regularization
            terms.regularization = float(regularization.detach())
        terms.total = total
        return terms

    def __call__(self, out: dict, batch, hierarchicality: Tensor | None = None,
                 regularization: Tensor | None = None, reduce=None,
                 with_forces: set[int] | None = None) -> LossTerms:
        """Loss of model outputs ``out`` against ``batch`` labels.

        ``out["energy"]`` is (B, F); ``out["forces"]`` (ΣN, F, 3) if present;
        ``hierarchicality`` (F,) from the model; ``regularization`` a scalar added once
        (head penalty). ``reduce`` (optional) maps the statistics of this batch to their
        sums over all ranks (:meth:`mfgnn.training.distributed.Distributed.sum_statistics`),
        so that each error is normalised by the label count of the whole global batch.
        """
        stats = self.statistics(out, batch, hierarchicality, with_forces)
        if reduce is not None:
            stats = reduce(stats)
        return self.combine(stats, regularization)
