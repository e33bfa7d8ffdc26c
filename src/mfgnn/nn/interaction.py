r"""HIP-NN interaction layer (Eq. 4–6 of Messerly et al.) and interaction block (Fig. 4).

The interaction layer mixes the features of neighbouring atoms:

.. math::

    z'_{i,a} = f\Big(I_{i,a}(z, r) + \sum_b W_{ab}\, z_{i,b} + B_a\Big), \qquad
    I_{i,a}(z, r) = \sum_{j \ne i} \sum_b v_{ab}(r_{ij})\, z_{j,b}, \qquad
    v_{ab}(r_{ij}) = \sum_\nu V^\nu_{ab}\, s^\nu(r_{ij}),

evaluated as I_{i,a} = Σ_ν Σ_b V^ν_ab env_{i,ν,b} with the environment
env_{i,ν,b} = Σ_j s^ν(r_ij) z_{j,b} (see :mod:`mfgnn.nn.pairs`), by the fused operation of
:mod:`mfgnn.nn.env_sum` (for a molecule or two, and with ``fused = False``: the plain
formulation, same numbers). With tensor sensitivity
(HIP-NN-TS) the rotation invariants I^TS_{i,a} of :mod:`mfgnn.nn.tensor_sensitivity` are
added inside f. With residual connections and matching widths, z' = z + f(...).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as fn
from torch import Tensor, nn

from mfgnn.nn.atom import AtomLayer, ShiftedSoftplus, make_activation, shifted_softplus
from mfgnn.nn.config import DEFAULT_ACTIVATION
from mfgnn.nn.env_sum import fused_pays, interaction_sum
from mfgnn.nn.pairs import PairGeometry
from mfgnn.nn.sensitivity import GaussianSensitivity, envelope
from mfgnn.nn.tensor_sensitivity import TensorSensitivity


class InteractionLayer(nn.Module):
    r"""One HIP-NN(-TS) interaction layer, Eq. 4–6.

    Args:
        in_features: width b of z_j.
        out_features: width a of z'_i.
        n_sensitivities: number ν_max of sensitivity functions s^ν.
        soft_min: inner soft distance (Å) of the sensitivities.
        soft_max: outer soft distance (Å) of the sensitivities.
        cutoff: hard cutoff r_c (Å).
        tensor_order: 0 (scalar HIP-NN), 1 or 2 (HIP-NN-TS).
        n_tensor_channels: channels c of the tensor-sensitivity contraction.
        activation: name of f.
        residual: z' = z + f(...) when ``in_features == out_features``.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        n_sensitivities: int = 20,
        soft_min: float = 0.75,
        soft_max: float = 5.5,
        cutoff: float = 6.5,
        tensor_order: int = 0,
        n_tensor_channels: int = 32,
        activation: str = DEFAULT_ACTIVATION,
        residual: bool = True,
    ) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.n_sensitivities = n_sensitivities
        self.sensitivity = GaussianSensitivity(n_sensitivities, soft_min, soft_max, cutoff)
        #: V^ν_{ab}, shape (ν, a, b).
        self.int_weights = nn.Parameter(torch.empty(n_sensitivities, out_features, in_features))
        #: W_{ab} and B_a.
        self.self_interaction = nn.Linear(in_features, out_features)
        self.tensor = (
            TensorSensitivity(in_features, out_features, n_sensitivities, tensor_order, n_tensor_channels)
            if tensor_order > 0
            else None
        )
        self.activation = make_activation(activation)
        self.residual = bool(residual) and in_features == out_features
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Xavier-normal V (as an a × νb matrix) and W, zero B; default sensitivities."""
        self.sensitivity.reset_parameters()
        fan = self.out_features + self.n_sensitivities * self.in_features
        nn.init.normal_(self.int_weights, std=math.sqrt(2.0 / fan))
        nn.init.xavier_normal_(self.self_interaction.weight)
        nn.init.zeros_(self.self_interaction.bias)
        if self.tensor is not None:
            self.tensor.reset_parameters()

    #: Evaluate I with the fused :func:`~mfgnn.nn.env_sum.interaction_sum` (True) or the
    #: plain formulation :meth:`environment` followed by a matrix product (False).
    fused: bool = True

    def environment(self, z: Tensor, sense: Tensor, geom: PairGeometry) -> Tensor:
        """env_{i,ν,b} = Σ_j s^ν(r_ij) z_{j,b}, shape (N, ν, b) (plain formulation)."""
        return geom.reduce(torch.bmm(sense.transpose(1, 2), geom.gather(z)))

    def pre_activation(self, z: Tensor, geom: PairGeometry) -> Tensor:
        """I_{i,a} + Σ_b W_ab z_{i,b} + B_a (+ I^TS_{i,a}), shape (N, a)."""
        cutoff = self.sensitivity.cutoff.cutoff
        sense = self.sensitivity(geom.r, geom.cached(("envelope", cutoff), lambda: envelope(geom.r, cutoff)))
        self_term = fn.linear(z, self.self_interaction.weight, self.self_interaction.bias)
        if self.fused and fused_pays(geom, self.n_sensitivities * self.in_features):
            weight = self.int_weights.permute(0, 2, 1).reshape(-1, self.out_features)  # (νb, a)
            out = self_term + interaction_sum(sense, z, weight, geom)
        elif self.fused and self.in_features >= 16:
            # a molecule or two: Σ_ν env_ν V_ν^T, no copy of V in the (νb, a) layout (for
            # narrow inputs, such as the one-hot z^0, the copy is cheap and one mm faster)
            env = self.environment(z, sense, geom)
            out = self_term + torch.bmm(env.transpose(0, 1), self.int_weights.transpose(1, 2)).sum(0)
        else:
            env = self.environment(z, sense, geom)
            weight = self.int_weights.permute(0, 2, 1).reshape(-1, self.out_features)  # (νb, a)
            out = torch.addmm(self_term, env.reshape(z.shape[0], -1), weight)
        if self.tensor is not None:
            out = out + self.tensor(z, sense, geom)
        return out

    def forward(self, z: Tensor, geom: PairGeometry) -> Tensor:
        """(N, in_features) → (N, out_features)."""
        out = self.pre_activation(z, geom)
        out = shifted_softplus(out) if type(self.activation) is ShiftedSoftplus else self.activation(out)
        return z + out if self.residual else out

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, residual={self.residual}"


class InteractionBlock(nn.Module):
    """Interaction layer followed by ``n_atom_layers`` atom layers (Fig. 4, right).

    Args:
        in_features: width of the incoming features.
        n_features: width of all outputs of the block.
        n_atom_layers: number of atom layers (Eq. 7).
        **interaction: remaining :class:`InteractionLayer` arguments.
    """

    def __init__(self, in_features: int, n_features: int, n_atom_layers: int, activation: str = DEFAULT_ACTIVATION,
                 residual: bool = True, **interaction) -> None:
        super().__init__()
        self.interaction = InteractionLayer(
            in_features, n_features, activation=activation, residual=residual, **interaction
        )
        self.atom_layers = nn.ModuleList(
            AtomLayer(n_features, n_features, activation, residual) for _ in range(n_atom_layers)
        )

    def reset_parameters(self) -> None:
        self.interaction.reset_parameters()
        for layer in self.atom_layers:
            layer.reset_parameters()

    def forward(self, z: Tensor, geom: PairGeometry) -> Tensor:
        """Features z^n_i of this block, (N, n_features)."""
        z = self.interaction(z, geom)
        for layer in self.atom_layers:
            z = layer(z)
        return z
