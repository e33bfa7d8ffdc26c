r"""Closed-form refit of the energy heads of levels trained on energies only.

A level t trained on energies alone (LF-HE's high level, or an energy-only single-fidelity
model) reaches its forces only through E_t. Its heads are linear in the trunk features
(Eq. 8 of Messerly et al.), so with the trunk fixed the energy is linear in the head
weights w_t = (w^0_t, …, w^N_t):

.. math::  E_t(s) = \sigma_t\, w_t\cdot\Phi(s) + c_t(s), \qquad
           \Phi(s) = \sum_{i\in s} \big(z^0_i, z^1_i, \dots, z^N_i\big),

where z^0 is the one-hot element code (so w^0_t are per-element offsets) and c_t holds
the biases, self-energies and the ZBL term. After training, with the best weights loaded,
:func:`refit_energy_heads` replaces w_t by the ridge solution around the trained weights,

.. math::  \delta^* = \arg\min_\delta \sum_{s\in\mathrm{train}} a_s\,(r_s - \Phi(s)\cdot\delta)^2
           + \lambda\,\bar A\,\lVert P\delta\rVert^2, \qquad r_s = y_s - E_t(s),\quad
           w_t \leftarrow w_t + \delta^*/\sigma_t,

with P dropping the per-element block (unpenalised), Ā the mean diagonal of the
penalised part of A = Σ a_s ΦΦᵀ, and a_s = 1 (or 1/N_s² with ``loss.per_atom_energy``).
λ is chosen on the validation rows' energy error (computed from the same sums): the
largest λ of :data:`LAMBDAS` whose error is within :data:`TOLERANCE` of the smallest
(shrinking towards the trained head as far as the energies allow), and the trained head is
kept unless that error is below the trained head's by more than :data:`TOLERANCE`. Minibatch SGD stops short of
this optimum; on the shared sets the exact solution lowered the energy-only level's
force error (see the README), since its forces follow from the same weights.

The sums (A, Φᵀr, rᵀr, n) are additive, so a distributed run all-reduces them and every
rank refits alike. Units: Φ in the features' units, r in eV, δ in eV per feature unit.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch

from ..loss import energy_only_levels
from .distributed import SINGLE, Distributed
from .progress import say

#: Relative ridge strengths tried (λ in the module docstring).
LAMBDAS = tuple(10.0 ** k for k in range(-8, 1))
#: Relative margin of validation energy RMSE: ties within it go to the larger λ, and the
#: refit must beat the trained head by it.
TOLERANCE = 0.05
#: At most this many training rows (a seeded sample) make the refit's sums.
MAX_ROWS = 200_000


@dataclass
class RefitReport:
    """What the refit of one level did: λ chosen (None: trained head kept), validation
    energy RMSE before and after (meV), rows used."""

    fidelity: str
    lam: float | None
    valid_rmse_before: float
    valid_rmse_after: float
    n_train: int
    n_valid: int

    def line(self) -> str:
        if self.lam is None:
            return (f"head refit {self.fidelity}: kept the trained head (validation energy "
                    f"RMSE {self.valid_rmse_before:.2f} meV; no refit beat it by "
                    f"{TOLERANCE:.0%})")
        return (f"head refit {self.fidelity}: λ {self.lam:.0e}, validation energy RMSE "
                f"{self.valid_rmse_before:.2f} → {self.valid_rmse_after:.2f} meV "
                f"({self.n_train} training rows)")

    def to_dict(self) -> dict:
        return asdict(self)


@torch.no_grad()
def head_sums(model, batches, columns: list[int], per_atom: bool = False,
              dist: Distributed = SINGLE, device="cpu") -> dict[str, torch.Tensor]:
    """Per level column t: A = Σ a ΦΦᵀ, b = Σ a Φ r, c = Σ a r² and the number of rows n,
    over the rows of ``batches`` with an energy label of t (float64, summed over ranks;
    a = 1/N² with ``per_atom``, else 1)."""
    caught = {}
    hook = model.heads.register_forward_hook(lambda mod, inp, out: caught.__setitem__("z", inp[0]))
    width = sum(model.heads.features)
    k = len(columns)
    A = torch.zeros(k, width, width, dtype=torch.float64, device=device)
    b = torch.zeros(k, width, dtype=torch.float64, device=device)
    c = torch.zeros(k, dtype=torch.float64, device=device)
    n = torch.zeros(k, dtype=torch.float64, device=device)
    try:
        for batch in batches:
            if batch is None:
                continue
            batch = batch.to(device)
            energy = model(batch)["energy"]
            z = torch.cat([f.to(torch.float64) for f in caught["z"]], dim=1)
            phi = z.new_zeros(energy.shape[0], width).index_add(0, batch.batch, z)
            atoms = torch.bincount(batch.batch, minlength=energy.shape[0]).to(torch.float64)
            weight = 1.0 / atoms.square() if per_atom else torch.ones_like(atoms)
            for j, t in enumerate(columns):
                label = batch.energy[:, t].to(torch.float64)
                keep = torch.isfinite(label)
                r = (label - energy[:, t])[keep]
                p, a = phi[keep], weight[keep]
                A[j] += (p * a[:, None]).t() @ p
                b[j] += (p * (a * r)[:, None]).sum(0)
                c[j] += (a * r.square()).sum()
                n[j] += keep.sum()
    finally:
        hook.remove()
    flat = dist.sum_(torch.cat([A.reshape(-1), b.reshape(-1), c, n]))
    sizes = [A.numel(), b.numel(), k, k]
    A, b, c, n = torch.split(flat, sizes)
    return {"A": A.reshape(k, width, width), "b": b.reshape(k, width), "c": c, "n": n}


def ridge_solution(A: np.ndarray, b: np.ndarray, penalised: np.ndarray, lam: float) -> np.ndarray:
    """δ minimising δᵀAδ − 2bᵀδ + λ Ā ‖Pδ‖² (Ā: mean diagonal of A over ``penalised``)."""
    scale = float(np.mean(np.diag(A)[penalised])) if penalised.any() else 1.0
    reg = np.where(penalised, lam * scale, 0.0) + 1e-12 * max(scale, 1e-300)
    return np.linalg.lstsq(A + np.diag(reg), b, rcond=None)[0]


def squared_error(sums: dict, j: int, delta: np.ndarray) -> float:
    """Σ a (r − Φ·δ)² from the (numpy) sums of column j."""
    A, b, c = sums["A"][j], sums["b"][j], float(sums["c"][j])
    return max(c - 2.0 * float(b @ delta) + float(delta @ A @ delta), 0.0)


def choose_delta(train: dict, valid: dict, j: int, penalised: np.ndarray,
                 tolerance: float = TOLERANCE) -> tuple[float | None, np.ndarray, float, float]:
    """(λ, δ, validation RMSE before, after, meV) for column j of the (numpy) sums by the
    rule of the module docstring; λ None and δ = 0 when the trained head is kept."""
    n_valid = max(float(valid["n"][j]), 1.0)

    def rmse(delta):
        return 1e3 * math.sqrt(squared_error(valid, j, delta) / n_valid)

    zero = np.zeros_like(train["b"][j])
    before = rmse(zero)
    tried = []
    for lam in LAMBDAS:
        delta = ridge_solution(train["A"][j], train["b"][j], penalised, lam)
        err = rmse(delta)
        if math.isfinite(err):
            tried.append((lam, delta, err))
    if not tried:
        return None, zero, before, before
    best = min(err for _, _, err in tried)
    lam, delta, err = max((item for item in tried if item[2] <= best * (1 + tolerance)),
                          key=lambda item: item[0])
    if err > before * (1 - tolerance):
        return None, zero, before, before
    return lam, delta, before, err


@torch.no_grad()
def apply_delta(model, t: int, delta: np.ndarray) -> None:
    """w_t ← w_t + δ/σ_t, keeping every other level's effective weights (delta mode
    stores level t as a difference from t − 1, so level t + 1's row gives it back)."""
    heads = model.heads
    step = torch.as_tensor(delta, dtype=torch.float64) / float(model.target_scale[t])
    start = 0
    for lin in heads.linears:
        width = lin.in_features
        part = step[start:start + width].to(lin.weight.dtype).to(lin.weight.device)
        lin.weight[t] += part
        if heads.mode == "delta" and t + 1 < heads.n_fidelities:
            lin.weight[t + 1] -= part
        start += width


def refit_energy_heads(model, train_batches, valid_batches, levels: list[str],
                       per_atom: bool = False, dist: Distributed = SINGLE) -> list[RefitReport]:
    """Refit the heads of ``levels`` (model fidelity names) in closed form on the rows of
    ``train_batches``, choosing λ on ``valid_batches``; returns one report per level.
    ``*_batches``: callables returning an iterable of batches (this rank's shares)."""
    levels = [name for name in levels if name in model.fidelities]
    if not levels:
        return []
    was_training = model.training
    model.eval()
    device = model.target_scale.device
    columns = [model.fidelities.index(name) for name in levels]
    train, valid = ({k: v.cpu().numpy() for k, v in
                     head_sums(model, batches(), columns, per_atom, dist, device).items()}
                    for batches in (train_batches, valid_batches))
    penalised = np.ones(sum(model.heads.features), dtype=bool)
    penalised[:model.heads.features[0]] = False  # per-element offsets
    reports = []
    for j, (name, t) in enumerate(zip(levels, columns)):
        n_train, n_valid = int(train["n"][j]), int(valid["n"][j])
        if n_train == 0 or n_valid == 0:
            continue
        lam, delta, before, after = choose_delta(train, valid, j, penalised)
        if lam is not None:
            apply_delta(model, t, delta)
        reports.append(RefitReport(name, lam, before, after, n_train, n_valid))
    model.train(was_training)
    return reports


def refit_finishers(labels: dict[str, list[str]], settings, per_atom: bool = False,
                    train_rows=None) -> list:
    """The trainer finishers of ``train.refit_energy_heads`` (``settings``): one
    :class:`HeadRefitStep` over the levels of ``labels`` trained on energies only, or
    none when the option is off or there is no such level."""
    levels = energy_only_levels(labels)
    if not settings.refit_energy_heads or not levels:
        return []
    return [HeadRefitStep(levels, per_atom, train_rows)]


class HeadRefitStep:
    """A trainer finisher: :func:`refit_energy_heads` of ``levels`` on ``train_rows`` (a
    :class:`~mfgnn.training.batches.BatchSource`; None: one pass of the trainer's
    training batches) and the trainer's validation batches; prints one line per level
    and writes ``head_refit.json``."""

    def __init__(self, levels: list[str], per_atom: bool = False, train_rows=None):
        self.train_rows, self.levels, self.per_atom = train_rows, list(levels), per_atom

    def __call__(self, trainer) -> None:
        rows = self.train_rows if self.train_rows is not None else trainer.data.train
        reports = refit_energy_heads(trainer.model, lambda: rows.batches(0),
                                     lambda: trainer.data.valid.batches(), self.levels,
                                     self.per_atom, trainer.dist)
        for report in reports:
            say(trainer.log, report.line())
        if trainer.dist.is_main:
            trainer.folder.write_json("head_refit.json", [r.to_dict() for r in reports])
