r"""Atom layers (Eq. 7 of Messerly et al.) and the activation functions f.

An atom layer transforms each atom's feature vector on its own,

.. math::  z'_{i,a} = f\Big(\sum_b w_{ab}\, z_{i,b} + b_a\Big)
           \quad(+\, z_{i,a} \text{ with residual connections}).
"""

from __future__ import annotations

import math

import torch.nn.functional as fn
from torch import Tensor, nn

from mfgnn.errors import ConfigError
from mfgnn.nn.config import DEFAULT_ACTIVATION


def shifted_softplus(x: Tensor) -> Tensor:
    """softplus(x) − ln 2, zero at x = 0."""
    return fn.softplus(x) - _LN2


_LN2 = math.log(2.0)


class ShiftedSoftplus(nn.Module):
    """softplus(x) − ln 2, zero at x = 0."""

    def forward(self, x: Tensor) -> Tensor:
        return shifted_softplus(x)


def make_activation(name: str) -> nn.Module:
    """Activation module f by name: softplus, shifted_softplus, silu or tanh."""
    table = {"softplus": nn.Softplus, "shifted_softplus": ShiftedSoftplus, "silu": nn.SiLU, "tanh": nn.Tanh}
    if name not in table:
        raise ConfigError(f"activation {name!r} unknown; choose one of {', '.join(table)}")
    return table[name]()


class AtomLayer(nn.Module):
    r"""On-site layer z'_{i,a} = f(Σ_b w_ab z_{i,b} + b_a), optionally residual.

    Args:
        in_features: width of z_i.
        out_features: width of z'_i.
        activation: name of f (see :func:`make_activation`).
        residual: add the input, z' = z + f(...), when ``in_features == out_features``.
    """

    def __init__(self, in_features: int, out_features: int, activation: str = DEFAULT_ACTIVATION, residual: bool = True) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, out_features)
        self.activation = make_activation(activation)
        self.residual = bool(residual) and in_features == out_features
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Xavier-normal weights (residual layers scaled by 1/2), zero bias."""
        gain = 0.5 if self.residual else 1.0
        nn.init.xavier_normal_(self.linear.weight, gain=gain)
        nn.init.zeros_(self.linear.bias)

    def forward(self, z: Tensor) -> Tensor:
        """(N, in_features) → (N, out_features)."""
        out = fn.linear(z, self.linear.weight, self.linear.bias)  # no module call: this runs per layer and step
        out = shifted_softplus(out) if type(self.activation) is ShiftedSoftplus else self.activation(out)
        return z + out if self.residual else out
