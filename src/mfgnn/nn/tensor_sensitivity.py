r"""Tensor sensitivities ℓ = 1, 2 of HIP-NN-TS (Chigaev et al. 2023).

Besides the scalar environment Σ_j s^ν(r_ij) z_{j,b}, HIP-NN-TS lets an atom see the
dipole-like and quadrupole-like *shape* of the feature distribution around it. Here the
sensitivity and feature dimensions are first contracted by a learned linear map U to c
channels, per angular component k:

.. math::

    T^{(1)}_{i,c,x}  &= \sum_j \sum_\nu s^\nu(r_{ij})\, \hat r_{ij,x}
                       \sum_b U^\nu_{cb}\, z_{j,b} \\
    T^{(2)}_{i,c,xy} &= \sum_j \sum_\nu s^\nu(r_{ij})\,
                       \big(\hat r_{ij}\hat r_{ij}^{\mathsf T} - \tfrac13 I\big)_{xy}
                       \sum_b U^\nu_{cb}\, z_{j,b}

(T^{(2)} is stored by its 5 orthonormal traceless components). Their rotation
invariants, the squared norms, enter the interaction pre-activation with learned scales:

.. math::

    q^{(1)}_{i,c} = \sum_x \big(T^{(1)}_{i,c,x}\big)^2, \qquad
    q^{(2)}_{i,c} = \sum_{xy} \big(T^{(2)}_{i,c,xy}\big)^2, \qquad
    I^{\mathrm{TS}}_{i,a} = \sum_{\ell} \sum_c \Lambda^{(\ell)}_{ac}\, q^{(\ell)}_{i,c}.

Computation: Y_{j,ν,c} = Σ_b U^ν_{cb} z_{j,b} per atom; the radial message
m_{ij,c} = Σ_ν s^ν(r_ij) Y_{j,ν,c} as one batched product per *source* row (no copy of
Y to every pair); then T_{i,c,k} = Σ_j Y^ℓ_k(r̂_ij) m_{ij,c} per target row. Cost
O(N·b·ν·c + pairs·(ν + K)·c), far below contracting a full (pairs × ν × b × 8)
environment.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from mfgnn.nn.pairs import PairGeometry


class TensorSensitivity(nn.Module):
    r"""Rotation-invariant ℓ = 1, 2 environment terms I^TS_{i,a} added before f.

    Args:
        in_features: width b of the incoming features z_j.
        out_features: width a of the interaction layer output.
        n_sensitivities: number ν_max of sensitivity functions.
        tensor_order: ℓ_max, 1 or 2.
        n_channels: channels c of the contraction U.
    """

    def __init__(self, in_features: int, out_features: int, n_sensitivities: int, tensor_order: int, n_channels: int) -> None:
        super().__init__()
        if tensor_order not in (1, 2):
            raise ValueError(f"tensor_order must be 1 or 2, got {tensor_order}")
        self.in_features, self.out_features = in_features, out_features
        self.n_sensitivities, self.tensor_order, self.n_channels = n_sensitivities, tensor_order, n_channels
        #: U^ν_{cb}, shape (ν, c, b).
        self.contraction = nn.Parameter(torch.empty(n_sensitivities, n_channels, in_features))
        #: Λ^{(ℓ)}_{ac} for ℓ = 1..ℓ_max side by side, shape (a, ℓ_max·c).
        self.scales = nn.Parameter(torch.empty(out_features, tensor_order * n_channels))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """U ~ N(0, 1/(ν b)); Λ ~ N(0, (0.1/c)²) so the squared norms start as a small term."""
        nn.init.normal_(self.contraction, std=1.0 / math.sqrt(self.n_sensitivities * self.in_features))
        nn.init.normal_(self.scales, std=0.1 / self.n_channels)

    def invariants(self, z: Tensor, sense: Tensor, geom: PairGeometry) -> Tensor:
        """Squared norms (N, ℓ_max·c): q^{(1)} then q^{(2)}.

        Args:
            z: (N, b) features.
            sense: (R, W, ν) sensitivities s^ν(r_ij) in the padded pair layout.
            geom: pair geometry with ``angular`` (R, W, K) factors.
        """
        nu, c = self.n_sensitivities, self.n_channels
        n_comp = 3 if self.tensor_order == 1 else 8
        if geom.angular is None or geom.angular.shape[-1] < n_comp or geom.source is None:
            raise ValueError(f"pair geometry lacks the angular factors of tensor order {self.tensor_order}")
        lay = geom.source
        weight = self.contraction.permute(2, 0, 1).reshape(self.in_features, nu * c)
        y = (z @ weight).view(-1, nu, c)  # Y_{j,ν,c}
        if not lay.identity:
            y = y.index_select(0, lay.row_atom)
        msg = torch.bmm(lay.to_source(sense), y)  # m_{ij,c}, rows by source j
        msg = lay.from_source(msg, geom.n_rows, geom.width)  # rows by target i
        ang = geom.angular[..., :n_comp]
        t = geom.reduce(torch.bmm(ang.transpose(1, 2), msg))  # (N, K, c)
        q1 = t[:, :3].square().sum(1)
        if self.tensor_order == 1:
            return q1
        return torch.cat((q1, t[:, 3:].square().sum(1)), dim=-1)

    def forward(self, z: Tensor, sense: Tensor, geom: PairGeometry) -> Tensor:
        """I^TS_{i,a}, shape (N, out_features)."""
        return self.invariants(z, sense, geom) @ self.scales.t()

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"tensor_order={self.tensor_order}, n_channels={self.n_channels}"
        )
