r"""Per-fidelity target normalisation: the network predicts in units of a scale σ_t.

Fitted on training labels only. For fidelity t, with self-energies ε_t(Z) (eV/atom) and the
rows i that have a label E_{i,t} (NaN = missing):

.. math::

    e_{i,t} = E_{i,t} - \sum_{a\in i} \varepsilon_t(Z_a)
    \qquad\text{(residual energy, eV)}

    \mu_t = \frac{1}{n_t}\sum_i \frac{e_{i,t}}{N_i}
    \qquad\text{(shift, eV/atom)}

    \sigma_t = \begin{cases}
        \mathrm{RMS}_t(F) = \sqrt{\langle F_{i,a,k,t}^2\rangle} & \text{fidelity has forces}\\
        \mathrm{std}_i\!\left(e_{i,t}/N_i\right) & \text{else, if } n_t \ge 2
            \text{ and the std} > 0\\
        \text{geometric mean of the other fidelities' } \sigma & \text{else, if any}\\
        1\ \text{eV} & \text{otherwise}
    \end{cases}

and the model's energy of fidelity t is

.. math::  E_t = \sum_a \varepsilon_t(Z_a) + N\,\mu_t + \sigma_t\, \hat E_t

with Ê_t the network's raw (dimensionless) output, a sum of per-atom outputs. The forces
are −σ_t ∂Ê_t/∂x: σ_t is an energy in eV, and with lengths in Å the force RMS (eV/Å) is
its natural size — per-atom outputs whose position gradients are O(1) Å⁻¹ then give forces
of the right magnitude (as MACE and NequIP scale by the force RMS). The force-RMS σ is
taken without mean removal (force components average to zero for every structure).

:class:`ScaleShift` applies N μ_t + σ_t Ê_t in float64 (self-energies are added by the
model, which keeps them separately).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

#: Scales below this (eV) are treated as degenerate (no spread to normalise by).
_TINY_SCALE = 1e-8
SCALE_SOURCES = ("forces", "energy", "other_fidelities", "default")


@dataclass
class TargetScales:
    """Fitted per-fidelity shift and scale.

    Attributes:
        fidelities: names, low → high (or "0", "1", … when not given).
        shift: (F,) float64 μ_t, eV per atom.
        scale: (F,) float64 σ_t, eV (force RMS in eV/Å when fitted from forces).
        source: where each σ_t came from, one of :data:`SCALE_SOURCES`.
        n_rows: rows with an energy label per fidelity.
    """

    fidelities: tuple[str, ...]
    shift: np.ndarray
    scale: np.ndarray
    source: tuple[str, ...]
    n_rows: tuple[int, ...]

    def as_tensors(self, device: torch.device | str | None = None) -> tuple[Tensor, Tensor]:
        """(shift, scale) as float64 (F,) tensors."""
        return (torch.as_tensor(np.asarray(self.shift, np.float64), dtype=torch.float64, device=device),
                torch.as_tensor(np.asarray(self.scale, np.float64), dtype=torch.float64, device=device))

    def to_dict(self) -> dict:
        """JSON-ready dict."""
        return {"fidelities": list(self.fidelities), "shift": [float(x) for x in self.shift],
                "scale": [float(x) for x in self.scale], "source": list(self.source),
                "n_rows": [int(x) for x in self.n_rows]}

    @classmethod
    def from_dict(cls, d: dict) -> TargetScales:
        """Inverse of :meth:`to_dict`."""
        f = len(d["fidelities"])
        return cls(fidelities=tuple(d["fidelities"]),
                   shift=np.asarray(d["shift"], dtype=np.float64).reshape(f),
                   scale=np.asarray(d["scale"], dtype=np.float64).reshape(f),
                   source=tuple(d.get("source", ["default"] * f)),
                   n_rows=tuple(int(x) for x in d.get("n_rows", [0] * f)))

    @classmethod
    def identity(cls, fidelities: Sequence[str]) -> TargetScales:
        """μ = 0, σ = 1 for every fidelity (no normalisation)."""
        f = len(fidelities)
        return cls(tuple(fidelities), np.zeros(f), np.ones(f), ("default",) * f, (0,) * f)


def accumulate_force_rms(forces: Iterable, n_fidelities: int | None = None) -> np.ndarray:
    r"""Force RMS per fidelity, √⟨F²⟩ over all finite components (eV/Å).

    Args:
        forces: iterable of (N, F, 3) arrays/tensors (eV/Å; NaN = no forces at that
            fidelity for that row), e.g. ``dataset[i].forces`` over the training rows.
        n_fidelities: F, needed only when ``forces`` is empty.

    Returns:
        (F,) float64; NaN for fidelities without any force.
    """
    sq, count = None, None
    for f in forces:
        a = np.asarray(f.detach().cpu() if hasattr(f, "detach") else f, dtype=np.float64)
        if a.ndim != 3:
            raise ValueError(f"forces must have shape (N, F, 3), got {a.shape}")
        ok = np.isfinite(a)
        if sq is None:
            sq, count = np.zeros(a.shape[1]), np.zeros(a.shape[1], dtype=np.int64)
        sq += np.square(np.where(ok, a, 0.0)).sum(axis=(0, 2))
        count += ok.sum(axis=(0, 2))
    if sq is None:
        return np.full(int(n_fidelities or 0), np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, np.sqrt(sq / np.maximum(count, 1)), np.nan)


def residual_per_atom(energies: np.ndarray, n_atoms: np.ndarray,
                      self_energy: np.ndarray | None = None) -> np.ndarray:
    """(n, F) per-atom residual energies (E − Σε)/N in eV/atom, NaN where unlabelled."""
    e = np.asarray(energies, dtype=np.float64)
    e = e.reshape(len(e), -1)
    if self_energy is not None:
        e = e - np.asarray(self_energy, dtype=np.float64).reshape(e.shape)
    n = np.asarray(n_atoms, dtype=np.float64).reshape(-1, 1)
    if np.any(n <= 0):
        raise ValueError("n_atoms must be positive")
    return e / n


def _geometric_mean(values: Sequence[float]) -> float:
    return float(math.exp(sum(math.log(v) for v in values) / len(values)))


def fit_target_scales(energies, n_atoms, self_energy=None, force_rms=None,
                      fidelities: Sequence[str] | None = None, default_scale: float = 1.0) -> TargetScales:
    """Fit μ_t and σ_t on the training rows passed in (see module doc for the rules).

    Args:
        energies: (n, F) float64 eV, NaN = missing label. Training rows only.
        n_atoms: (n,) atoms per row.
        self_energy: (n, F) Σ_a ε_t(Z_a) per row in eV (e.g. ``SelfEnergies.energy(counts)``),
            or None when ``energies`` are already residuals.
        force_rms: (F,) force RMS per fidelity in eV/Å (NaN/None entries: no forces), e.g.
            from :func:`accumulate_force_rms`, or None when no fidelity has forces.
        fidelities: names (default "0", "1", …).
        default_scale: σ (eV) when nothing else determines it.

    Returns:
        :class:`TargetScales` with finite shifts and positive finite scales.
    """
    per_atom = residual_per_atom(energies, n_atoms, self_energy)
    n_fid = per_atom.shape[1]
    names = tuple(str(k) for k in range(n_fid)) if fidelities is None else tuple(fidelities)
    if len(names) != n_fid:
        raise ValueError(f"{len(names)} fidelity names for {n_fid} energy columns")
    rms = [None] * n_fid if force_rms is None else list(force_rms)
    if len(rms) != n_fid:
        raise ValueError(f"force_rms has {len(rms)} entries for {n_fid} fidelities")
    shift = np.zeros(n_fid)
    scale = np.full(n_fid, np.nan)
    source = ["default"] * n_fid
    n_rows = []
    for t in range(n_fid):
        col = per_atom[:, t]
        col = col[np.isfinite(col)]
        n_rows.append(int(col.size))
        if col.size:
            shift[t] = float(col.mean())
        r = rms[t]
        if r is not None and math.isfinite(float(r)) and float(r) > _TINY_SCALE:
            scale[t], source[t] = float(r), "forces"
        elif col.size >= 2 and float(col.std()) > _TINY_SCALE:
            scale[t], source[t] = float(col.std()), "energy"
    known = [float(s) for s in scale if math.isfinite(s)]
    for t in range(n_fid):
        if not math.isfinite(scale[t]):
            if known:
                scale[t], source[t] = _geometric_mean(known), "other_fidelities"
            else:
                scale[t], source[t] = float(default_scale), "default"
    return TargetScales(names, shift, scale, tuple(source), tuple(n_rows))


class ScaleShift(nn.Module):
    r"""E_t = N μ_t + σ_t Ê_t in float64 (eV), for raw outputs Ê (B, F) and atom counts N (B,).

    ``shift`` (μ, eV/atom) and ``scale`` (σ, eV) are float64 buffers saved in the
    ``state_dict``; they stay float64 under ``module.float()`` / ``.half()``. Self-energies
    are not included (add Σ_a ε_t(Z_a) separately).
    """

    def __init__(self, shift: Tensor | np.ndarray | Sequence[float],
                 scale: Tensor | np.ndarray | Sequence[float]) -> None:
        super().__init__()
        shift_t = torch.as_tensor(np.asarray(shift, dtype=np.float64)).reshape(-1)
        scale_t = torch.as_tensor(np.asarray(scale, dtype=np.float64)).reshape(-1)
        if shift_t.shape != scale_t.shape:
            raise ValueError(f"shift {tuple(shift_t.shape)} and scale {tuple(scale_t.shape)} differ in shape")
        if not (torch.isfinite(scale_t).all() and (scale_t > 0).all() and torch.isfinite(shift_t).all()):
            raise ValueError("scales must be positive and finite, shifts finite")
        self.register_buffer("shift", shift_t.clone())
        self.register_buffer("scale", scale_t.clone())

    @classmethod
    def from_scales(cls, scales: TargetScales) -> ScaleShift:
        return cls(*scales.as_tensors())

    @classmethod
    def identity(cls, n_fidelities: int) -> ScaleShift:
        return cls(np.zeros(n_fidelities), np.ones(n_fidelities))

    def forward(self, raw_energy: Tensor, n_atoms: Tensor) -> Tensor:
        """(B, F) raw outputs and (B,) atom counts → (B, F) float64 energies in eV."""
        n = n_atoms.to(device=raw_energy.device, dtype=torch.float64).reshape(-1, 1)
        return raw_energy.to(torch.float64) * self.scale + n * self.shift

    def _apply(self, fn, *args, **kwargs):
        # Keep the buffers float64 under .float()/.half(); follow device moves.
        shift, scale = self.shift, self.scale
        out = super()._apply(fn, *args, **kwargs)
        self.shift = shift.to(device=self.shift.device, dtype=torch.float64)
        self.scale = scale.to(device=self.scale.device, dtype=torch.float64)
        return out

    def extra_repr(self) -> str:
        return f"shift={self.shift.tolist()}, scale={self.scale.tolist()}"
