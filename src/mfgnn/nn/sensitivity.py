r"""HIP-NN sensitivity functions s^ν(r_ij) (Eq. 6 of Messerly et al.).

The pair distance enters HIP-NN only through a finite basis of trainable sensitivity
functions: Gaussians in the inverse distance times a smooth cutoff,

.. math::

    s^\nu(r) = \exp\!\left(-\frac{(r^{-1} - \mu_\nu^{-1})^2}{2\,\sigma_\nu^{-2}}\right)
               \varphi(r), \qquad
    \varphi(r) = \begin{cases} \cos^2\!\left(\dfrac{\pi r}{2 r_c}\right) & r < r_c \\
                               0 & r \ge r_c \end{cases}

with trainable centres μ_ν (Å) and widths σ_ν (Å; σ_ν⁻¹ is the Gaussian's standard
deviation in 1/r). φ and its first derivative vanish at the hard cutoff r_c, so energies
and forces are continuous when a neighbour crosses it.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


#: Gaussian exponents beyond this are treated as exactly zero (exp(-80) ≈ 1.8e-35).
_TAIL = 80.0


class CosineCutoff(nn.Module):
    r"""Cutoff envelope φ(r) = cos²(π r / (2 r_c)) for r < r_c, 0 beyond.

    Args:
        cutoff: hard cutoff r_c in Å.
    """

    def __init__(self, cutoff: float) -> None:
        super().__init__()
        self.cutoff = float(cutoff)

    def forward(self, r: Tensor) -> Tensor:
        """φ(r) for distances ``r`` (Å), any shape."""
        phi = torch.cos(r * (0.5 * math.pi / self.cutoff)).square()
        return torch.where(r < self.cutoff, phi, torch.zeros_like(phi))

    def extra_repr(self) -> str:
        return f"cutoff={self.cutoff}"


class GaussianSensitivity(nn.Module):
    r"""Trainable inverse-distance Gaussian sensitivities s^ν(r), ν = 1..ν_max.

    Initialisation (HIP-NN): centres evenly spaced in 1/r between 1/soft_max and
    1/soft_min, μ_ν⁻¹ = 1/soft_max + (ν − 1) Δ with Δ = (1/soft_min − 1/soft_max)/(ν_max − 1),
    and widths σ_ν⁻¹ = Δ/2, so that neighbouring Gaussians cross at e^{-1/2} of their peak.

    Args:
        n_sensitivities: number of functions ν_max.
        soft_min: inner soft distance in Å (largest centre in 1/r).
        soft_max: outer soft distance in Å (smallest centre in 1/r).
        cutoff: hard cutoff r_c in Å of the cosine envelope φ(r).
    """

    def __init__(self, n_sensitivities: int, soft_min: float, soft_max: float, cutoff: float) -> None:
        super().__init__()
        self.n_sensitivities = int(n_sensitivities)
        self.soft_min = float(soft_min)
        self.soft_max = float(soft_max)
        #: μ_ν in Å.
        self.mu = nn.Parameter(torch.empty(self.n_sensitivities))
        #: σ_ν in Å (σ_ν⁻¹ is the width in 1/r).
        self.sigma = nn.Parameter(torch.empty(self.n_sensitivities))
        self.cutoff = CosineCutoff(cutoff)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Centres evenly spaced in 1/r, widths half the spacing."""
        lo, hi = 1.0 / self.soft_max, 1.0 / self.soft_min
        inv_mu = torch.linspace(lo, hi, self.n_sensitivities, dtype=torch.float64)
        spacing = (hi - lo) / max(self.n_sensitivities - 1, 1)
        with torch.no_grad():
            self.mu.copy_(1.0 / inv_mu)
            self.sigma.fill_(2.0 / spacing)

    def forward(self, r: Tensor) -> Tensor:
        """Sensitivities of distances ``r`` (Å, any shape S); returns shape (*S, ν_max)."""
        arg = 0.5 * ((r.reciprocal().unsqueeze(-1) - self.mu.reciprocal()) * self.sigma).square()
        # exp(-80) ≈ 2e-35: set the far tails to exactly 0 instead of computing float32
        # subnormals, which are slow on CPUs and change nothing in float32 or float64 sums.
        gauss = torch.where(arg < _TAIL, torch.exp(-arg.clamp(max=_TAIL)), torch.zeros_like(arg))
        return gauss * self.cutoff(r).unsqueeze(-1)

    def extra_repr(self) -> str:
        return f"n_sensitivities={self.n_sensitivities}, soft_min={self.soft_min}, soft_max={self.soft_max}"
