r"""Fidelity-specific hierarchical energy heads (Eq. 8 of Messerly et al., Fig. 2).

For every block n = 0..N and every fidelity t a linear regression of the atomic features
gives the hierarchical energy

.. math::  E^n_{i,t} = \sum_a w^n_{t,a}\, z^n_{i,a} + b^n_t \quad\text{(eV)},

one ``nn.Linear(features_n, F)`` per block (row t of its weight is w^n_t). The trunk that
produces z^n_i is shared by all fidelities; only these heads are fidelity specific.

Parameterisations (``mode``), fidelities ordered low → high:

* ``independent``: E^n_{i,t} as above (the paper); no regularisation.
* ``delta``: row 0 is the lowest fidelity, rows t ≥ 1 are corrections,
  E^n_{i,t} = E^n_{i,t−1} + ΔE^n_{i,t} (a cumulative sum over t); penalty
  λ Σ_{t≥1} Σ_n ‖Δw^n_t‖², so short of evidence a higher level inherits the lower
  level's shape. Corrections start at zero.
* ``tethered``: independent heads with penalty λ Σ_{t≥1} Σ_n ‖w^n_t − w^n_{t−1}‖²;
  all fidelities start from the same head.

Trunk gradient damping (training only, ``trunk_gradient`` of :meth:`forward`): the
columns t in the mapping are computed from features whose gradient is multiplied by
g_t ∈ [0, 1] on the way back into the trunk,

.. math::  \tilde z^n = g_t\, z^n + (1 - g_t)\,\mathrm{sg}(z^n),

the same value as z^n (sg: stop-gradient), so g_t = 1 is ordinary training and g_t = 0
lets level t's energies train its head and not the shared trunk. The head weights get
their full gradient either way (in ``delta`` mode also the lower rows that column t
sums). Forces of such a column are scaled by g_t, so only columns whose forces the loss
does not use may be damped.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import torch
from torch import Tensor, nn

from mfgnn.nn.config import HEAD_MODES


class HierarchicalHeads(nn.Module):
    """Per-block linear energy heads for F fidelities.

    Args:
        features: width of z^n for n = 0..N (n = 0: the number of elements).
        n_fidelities: F.
        mode: ``independent``, ``delta`` or ``tethered``.
        penalty: λ of :meth:`regularization`.
    """

    def __init__(self, features: Sequence[int], n_fidelities: int, mode: str = "independent", penalty: float = 1.0e-3) -> None:
        super().__init__()
        if mode not in HEAD_MODES:
            raise ValueError(f"head mode {mode!r} unknown; choose one of {', '.join(HEAD_MODES)}")
        self.features = tuple(int(f) for f in features)
        self.n_fidelities = int(n_fidelities)
        self.mode = mode
        self.penalty = float(penalty)
        self.linears = nn.ModuleList(nn.Linear(f, self.n_fidelities) for f in self.features)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Small weights N(0, (0.1/√features_n)²), zero biases; see the class notes per mode.

        The scale 0.1/√features_n starts each E^n_{i,t} at about a tenth of the size of
        the features (shifted-softplus features are zero-centred at initialisation):
        small, yet large enough for the trunk to receive useful gradients from the first
        steps (a 10× smaller start measurably slowed early training).
        """
        with torch.no_grad():
            for lin in self.linears:
                nn.init.normal_(lin.weight, std=0.1 / math.sqrt(lin.in_features))
                nn.init.zeros_(lin.bias)
                if self.mode == "delta":
                    lin.weight[1:].zero_()
                elif self.mode == "tethered":
                    lin.weight.copy_(lin.weight[:1].clone().expand_as(lin.weight))

    def forward(self, features: Sequence[Tensor],
                trunk_gradient: Mapping[int, float] | None = None) -> Tensor:
        """Effective hierarchical energies E^n_{i,t}, shape (N + 1, atoms, F).

        Args:
            features: z^n for n = 0..N, each (atoms, features_n).
            trunk_gradient: {column t: g_t}, the share of column t's gradient that
                reaches the features (see the module notes); None: all of it.
        """
        energies = self._energies(features)
        for share in sorted(set((trunk_gradient or {}).values())):
            if share == 1.0:
                continue
            damped = self._energies([damp_gradient(z, share) for z in features])
            columns = torch.zeros(self.n_fidelities, dtype=torch.bool, device=energies.device)
            columns[[t for t, g in trunk_gradient.items() if g == share]] = True
            energies = torch.where(columns, damped, energies)
        return energies

    def _energies(self, features: Sequence[Tensor]) -> Tensor:
        raw = torch.stack([lin(z) for lin, z in zip(self.linears, features)])
        return raw.cumsum(-1) if self.mode == "delta" else raw

    def effective_weights(self) -> list[Tensor]:
        """w^n_t per block as (F, features_n) tensors, cumulative in delta mode."""
        return [lin.weight.cumsum(0) if self.mode == "delta" else lin.weight for lin in self.linears]

    def effective_biases(self) -> list[Tensor]:
        """b^n_t per block as (F,) tensors, cumulative in delta mode."""
        return [lin.bias.cumsum(0) if self.mode == "delta" else lin.bias for lin in self.linears]

    def regularization(self) -> Tensor:
        """λ Σ_{t≥1} Σ_n ‖Δw^n_t‖² (delta) or ‖w^n_t − w^n_{t−1}‖² (tethered); 0 otherwise."""
        ref = self.linears[0].weight
        total = torch.zeros((), dtype=ref.dtype, device=ref.device)
        if self.mode == "independent" or self.n_fidelities < 2:
            return total
        for lin in self.linears:
            w = lin.weight
            diff = w[1:] if self.mode == "delta" else w[1:] - w[:-1]
            total = total + diff.square().sum()
        return self.penalty * total

    def extra_repr(self) -> str:
        return f"features={self.features}, n_fidelities={self.n_fidelities}, mode={self.mode!r}, penalty={self.penalty}"


def damp_gradient(x: Tensor, share: float) -> Tensor:
    """g·x + (1 − g)·sg(x): the value of ``x``, the gradient times g = ``share``."""
    if share == 0.0:
        return x.detach()
    return x * share + x.detach() * (1.0 - share)
