r"""Optional E(3)-equivariant block of the trunk (e3nn tensor-product message passing).

The block turns scalar HIP-NN features z_i (dimensionless) into new scalar
features that have seen the *directions* of the neighbour pairs through spherical
harmonics up to ℓ_max, in the NequIP style:

**Embedding.** h^{(0)}_i = W_in z_i: c channels of scalars (irreps ``c x 0e``).

**Edges.** For each pair j → i closer than r_c (Å): r_ij = |r_j − r_i| and
r̂_ij = (r_j − r_i)/r_ij; the spherical harmonics
Y(r̂_ij) = (Y^0, Y^1, …, Y^{ℓ_max}) (e3nn ``component`` normalisation) transform as
``0e + 1o + 2e (+ 3o)``: parity (−1)^ℓ, so reflections are handled exactly. The radial
weights come from the model's sensitivity basis s^ν(r) (inverse-distance Gaussians times
the cos² cutoff φ, :class:`~mfgnn.nn.GaussianSensitivity`) through a small MLP, times φ
once more so that they vanish with zero slope at r_c:

.. math::  R_k(r) = \varphi(r)\, \mathrm{MLP}_k\big(s^1(r), \ldots, s^{\nu_{max}}(r)\big).

**Gated interaction layers** k = 1..L (hidden irreps ``c x 0e + c x 1o + c x 2e`` up to
ℓ_max):

.. math::

    m_{ij} &= \mathrm{TP}\big(W^{(k)}_1 h^{(k-1)}_j,\; Y(\hat r_{ij});\; R_k(r_{ij})\big) \\
    a_i &= \frac{1}{\sqrt{\bar n}} \sum_{j \ne i} m_{ij} \\
    h^{(k)}_i &= \mathrm{Gate}\big(W^{(k)}_2 a_i\big) + W^{(k)}_{sc} h^{(k-1)}_i

TP is the channel-wise (``uvu``) Clebsch–Gordan tensor product, one weight per path and
channel supplied per edge by R_k; the W are e3nn ``o3.Linear`` maps (mixing channels
within each irrep; W^{(1)}_1 is the identity, h^{(0)} being a fresh embedding), n̄ the ``avg_neighbors`` normalisation; Gate applies SiLU to the
scalars and multiplies every ℓ ≥ 1 irrep by the sigmoid of its own gate scalar.

**Invariant read-out.** A last convolution of the same form keeps only scalar outputs
(paths 0e⊗0e, 1o⊗1o, 2e⊗2e, … → 0e), so the invariants see the relative orientation of
the neighbour's ℓ ≥ 1 features and the bond, s_i ∈ ℝ^c; then, with the model's
activation f and residual connection,

.. math::  z'_i = z_i + f(W_{out} s_i + b_{out}) \quad\text{(or } f(\ldots)\text{ without residual)}.

z'_i is rotation, reflection, translation and permutation invariant; it gets its own
hierarchical energy heads E_{i,t} = w_t · z'_i + b_t (eV) and feeds the next block.
"""

from __future__ import annotations

import math

import torch
from e3nn import o3
from e3nn.nn import Gate
from torch import Tensor, nn

from mfgnn.nn.atom import make_activation
from mfgnn.nn.config import DEFAULT_ACTIVATION, EquivariantConfig
from mfgnn.nn.pairs import PairGeometry
from mfgnn.nn.sensitivity import GaussianSensitivity


def hidden_irreps(channels: int, lmax: int) -> o3.Irreps:
    """``c x 0e + c x 1o + c x 2e + …`` up to ℓ_max (parity (−1)^ℓ, as Y^ℓ)."""
    return o3.Irreps([(channels, (l, (-1) ** l)) for l in range(lmax + 1)])


class EquivariantConvolution(nn.Module):
    r"""One message-passing step m_ij = TP(W_1 h_j, Y(r̂_ij); R(r_ij)), summed over j.

    Args:
        irreps_in: irreps of h^{(k−1)}.
        irreps_sh: irreps of Y (``0e + 1o + …``).
        irreps_out: irreps the step produces (only TP paths into them are kept).
        gated: apply the e3nn Gate (hidden layers) or return the linear output (read-out).
        pre_linear: apply W_1 to h_j before the product (off when h is a fresh embedding).
        avg_neighbors: n̄ of the 1/√n̄ normalisation of the neighbour sum.
    """

    def __init__(self, irreps_in: o3.Irreps, irreps_sh: o3.Irreps, irreps_out: o3.Irreps, gated: bool,
                 pre_linear: bool, avg_neighbors: float) -> None:
        super().__init__()
        self.irreps_in, self.irreps_out = o3.Irreps(irreps_in), o3.Irreps(irreps_out)
        self.norm = 1.0 / math.sqrt(avg_neighbors)
        self.pre = o3.Linear(self.irreps_in, self.irreps_in) if pre_linear else None
        wanted = {ir for _, ir in self.irreps_out}
        mid, instructions = [], []
        for i, (mul, ir_in) in enumerate(self.irreps_in):
            for j, (_, ir_sh) in enumerate(irreps_sh):
                for ir in ir_in * ir_sh:
                    if ir in wanted:
                        instructions.append((i, j, len(mid), "uvu", True))
                        mid.append((mul, ir))
        mid = o3.Irreps(mid)
        mid_sorted, perm, _ = mid.sort()
        instructions = [(i, j, perm[k], mode, train) for i, j, k, mode, train in instructions]
        self.tp = o3.TensorProduct(self.irreps_in, irreps_sh, mid_sorted, instructions,
                                   shared_weights=False, internal_weights=False)
        if gated:
            scalars = o3.Irreps([(mul, ir) for mul, ir in self.irreps_out if ir.l == 0])
            gated_irreps = o3.Irreps([(mul, ir) for mul, ir in self.irreps_out if ir.l > 0])
            gates = o3.Irreps([(gated_irreps.num_irreps, "0e")]) if gated_irreps.num_irreps else o3.Irreps("")
            self.gate = Gate(scalars, [nn.functional.silu], gates, [torch.sigmoid], gated_irreps)
            self.post = o3.Linear(mid_sorted, self.gate.irreps_in)
        else:
            self.gate = None
            self.post = o3.Linear(mid_sorted, self.irreps_out)
        self.self_connection = o3.Linear(self.irreps_in, self.irreps_out)

    @property
    def weight_numel(self) -> int:
        """Radial weights needed per edge (one per path and channel)."""
        return self.tp.weight_numel

    def reset_parameters(self) -> None:
        """e3nn's initialisation: standard-normal linear weights (path-normalised in forward)."""
        for lin in (self.pre, self.post, self.self_connection):
            if lin is not None and lin.weight.numel():
                nn.init.normal_(lin.weight)

    def forward(self, h: Tensor, edges: "EdgeGeometry", weights: Tensor) -> Tensor:
        """h (N, irreps_in.dim) → (N, irreps_out.dim); ``weights`` (E, weight_numel)."""
        x = self.pre(h) if self.pre is not None else h
        msg = self.tp(x.index_select(0, edges.src), edges.sh, weights)
        agg = msg.new_zeros(h.shape[0], msg.shape[1]).index_add(0, edges.dst, msg) * self.norm
        out = self.post(agg)
        if self.gate is not None:
            out = self.gate(out)
        return out + self.self_connection(h)


class EdgeGeometry:
    """Real pairs of a :class:`~mfgnn.nn.PairGeometry` as flat edge lists.

    Attributes: ``src`` (E,) neighbour j, ``dst`` (E,) atom i, ``r`` (E,) distances in Å,
    ``sh`` (E, irreps_sh.dim) spherical harmonics Y(r̂_ij); all differentiable in the positions.
    """

    def __init__(self, geom: PairGeometry, sh: o3.SphericalHarmonics) -> None:
        mask = geom.mask
        self.src = geom.src[mask]
        self.dst = geom.row_atom.unsqueeze(1).expand_as(geom.src)[mask]
        self.r = geom.r[mask]
        self.sh = sh(geom.rhat[mask])


class EquivariantBlock(nn.Module):
    r"""Scalar features in, scalar features out, ℓ ≤ ℓ_max tensor messages inside.

    Args:
        in_features: width of the incoming scalar features z_i (as ``in_features x 0e``).
        out_features: width of the outgoing scalar features z'_i.
        config: :class:`~mfgnn.nn.EquivariantConfig` (ℓ_max, channels c, layers L, …).
        n_sensitivities: ν_max of the radial basis s^ν(r).
        soft_min: inner soft distance of the radial basis, Å.
        soft_max: outer soft distance of the radial basis, Å.
        cutoff: hard cutoff r_c, Å.
        activation: the model's f for the output map.
        residual: z' = z + f(...) when ``in_features == out_features``.
    """

    def __init__(self, in_features: int, out_features: int, config: EquivariantConfig, n_sensitivities: int = 20,
                 soft_min: float = 0.75, soft_max: float = 5.5, cutoff: float = 6.5, activation: str = DEFAULT_ACTIVATION,
                 residual: bool = True) -> None:
        super().__init__()
        self.config = config
        self.in_features, self.out_features = int(in_features), int(out_features)
        c = config.channels
        self.irreps_sh = o3.Irreps.spherical_harmonics(config.lmax)
        self.irreps_hidden = hidden_irreps(c, config.lmax)
        scalars = o3.Irreps(f"{c}x0e")
        self.sh = o3.SphericalHarmonics(self.irreps_sh, normalize=False, normalization="component")
        self.sensitivity = GaussianSensitivity(n_sensitivities, soft_min, soft_max, cutoff)
        self.embed = nn.Linear(self.in_features, c)
        layers = []
        irreps = scalars
        for k in range(config.layers):
            layers.append(EquivariantConvolution(irreps, self.irreps_sh, self.irreps_hidden, gated=True,
                                                 pre_linear=k > 0, avg_neighbors=config.avg_neighbors))
            irreps = self.irreps_hidden
        layers.append(EquivariantConvolution(irreps, self.irreps_sh, scalars, gated=False,
                                             pre_linear=config.layers > 0, avg_neighbors=config.avg_neighbors))
        self.layers = nn.ModuleList(layers)
        self.weight_sizes = [layer.weight_numel for layer in self.layers]
        self.radial = nn.Sequential(
            nn.Linear(n_sensitivities, config.radial_hidden), nn.SiLU(),
            nn.Linear(config.radial_hidden, sum(self.weight_sizes)),
        )
        self.out = nn.Linear(c, self.out_features)
        self.activation = make_activation(activation)
        self.residual = bool(residual) and self.in_features == self.out_features
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Default sensitivities; Xavier-normal embedding and output maps (output scaled by 1/2
        with residual connections), zero biases; e3nn initialisation of the tensor layers.

        The radial MLP starts with weights N(0, 2²) then N(0, 4/hidden): its input s^ν(r)
        is sparse (Σ_ν s^ν(r)² ≲ 1), and this scale gives R_k(r) of O(1) for bonded
        neighbours, so the ℓ ≥ 1 paths (products of two R) are not negligible at the start
        (with Xavier weights R ~ 0.05 and the angular part of the invariants was ~0.3 %).
        """
        self.sensitivity.reset_parameters()
        nn.init.xavier_normal_(self.embed.weight)
        nn.init.zeros_(self.embed.bias)
        nn.init.normal_(self.radial[0].weight, std=2.0)
        nn.init.normal_(self.radial[2].weight, std=math.sqrt(4.0 / self.radial[2].in_features))
        for lin in (self.radial[0], self.radial[2]):
            nn.init.zeros_(lin.bias)
        nn.init.xavier_normal_(self.out.weight, gain=0.5 if self.residual else 1.0)
        nn.init.zeros_(self.out.bias)
        for layer in self.layers:
            layer.reset_parameters()

    def radial_weights(self, r: Tensor) -> list[Tensor]:
        """R_k(r) = φ(r) MLP_k(s(r)) for every layer k (and the read-out), each (E, numel_k)."""
        s = self.sensitivity(r)
        w = self.radial(s) * self.sensitivity.cutoff(r).unsqueeze(-1)
        return list(torch.split(w, self.weight_sizes, dim=-1))

    def invariants(self, z: Tensor, geom: PairGeometry) -> Tensor:
        """The read-out scalars s_i, shape (N, c)."""
        edges = EdgeGeometry(geom, self.sh)
        weights = self.radial_weights(edges.r)
        h = self.embed(z)
        for layer, w in zip(self.layers, weights):
            h = layer(h, edges, w)
        return h

    def forward(self, z: Tensor, geom: PairGeometry) -> Tensor:
        """(N, in_features) scalar features → (N, out_features) scalar features."""
        out = self.activation(self.out(self.invariants(z, geom)))
        return z + out if self.residual else out

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"irreps_hidden={self.irreps_hidden}, layers={self.config.layers}, residual={self.residual}")
