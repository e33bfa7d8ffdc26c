r"""Screened-nuclear pair repulsion (Ziegler–Biersack–Littmark universal potential).

A fixed (parameter-free) short-range prior added to a learned potential, so that atom
pairs closer than anything in the training data still repel (as MACE's ``ZBLBasis`` and
NequIP's ``ZBL`` pair potential do):

.. math::

    E_\mathrm{ZBL} = \sum_{i<j} V(r_{ij}), \qquad
    V(r) = \frac{k_e Z_i Z_j}{r}\, \phi\!\left(\frac{r}{a_{ij}}\right) f_\mathrm{sw}(r)

with the Coulomb constant k_e = 14.399645 eV·Å (e²/4πε₀), the universal screening length

.. math::  a_{ij} = \frac{0.8854\, a_0}{Z_i^{0.23} + Z_j^{0.23}}
                  = \frac{0.46850\ \text{Å}}{Z_i^{0.23} + Z_j^{0.23}},

and the universal screening function

.. math::  \phi(x) = 0.18175 e^{-3.1998 x} + 0.50986 e^{-0.94229 x}
                     + 0.28022 e^{-0.4029 x} + 0.02817 e^{-0.20162 x}.

Switching function (our choice): f_sw = 1 for r ≤ r_in, 0 for r ≥ r_out, and in between
the quintic "smootherstep"

.. math::  f_\mathrm{sw}(r) = 1 - (10 x^3 - 15 x^4 + 6 x^5), \qquad
           x = \frac{r - r_\mathrm{in}}{r_\mathrm{out} - r_\mathrm{in}},

whose first *and second* derivatives vanish at both ends: energies, forces and force
derivatives (needed by force training) are continuous. Unlike MACE (r_out = sum of
covalent radii per pair, polynomial envelope from 0) the two radii here are global numbers
in Å, so the prior is exactly the unmodified ZBL below r_in and exactly zero beyond r_out.

Choosing the radii: the prior should be the whole story only where the training data have
no pairs, and off where the network is well trained. A good default is
r_out ≈ the smallest well-sampled distance (e.g. the 1 % quantile of training pair
distances from :func:`mfgnn.data.distances.pair_distance_stats`, or the sensitivity
``soft_min``) and r_in ≈ r_out − 0.3 Å. r_out must not exceed the radius-graph cutoff
(pairs missing from ``edge_index`` contribute nothing).

Units: Å in, eV out. The pair terms are evaluated and accumulated in float64; gradients
flow back to ``pos`` in its own dtype, and the graph supports double backward.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

#: Coulomb constant e²/(4πε₀) in eV·Å.
COULOMB_EV_ANGSTROM = 14.399645
#: 0.8854 a_0 in Å (ZBL universal screening length prefactor).
ZBL_LENGTH_ANGSTROM = 0.46850
#: Exponent of Z in the screening length.
ZBL_Z_EXPONENT = 0.23
#: (coefficient, exponent) pairs of the universal screening function φ(x).
ZBL_COEFFICIENTS = (0.18175, 0.50986, 0.28022, 0.02817)
ZBL_EXPONENTS = (3.1998, 0.94229, 0.4029, 0.20162)


def screening_function(x: Tensor) -> Tensor:
    r"""Universal ZBL screening φ(x) = Σ_k c_k exp(−d_k x) of the reduced distance x = r/a."""
    out = torch.zeros_like(x)
    for c, d in zip(ZBL_COEFFICIENTS, ZBL_EXPONENTS):
        out = out + c * torch.exp(-d * x)
    return out


def screening_length(z_i: Tensor, z_j: Tensor, dtype: torch.dtype = torch.float64) -> Tensor:
    r"""a_ij = 0.46850 Å / (Z_i^0.23 + Z_j^0.23), in Å."""
    zi, zj = z_i.to(dtype), z_j.to(dtype)
    return ZBL_LENGTH_ANGSTROM / (zi.pow(ZBL_Z_EXPONENT) + zj.pow(ZBL_Z_EXPONENT))


def smooth_switch(r: Tensor, r_inner: float, r_outer: float) -> Tensor:
    r"""f_sw(r): 1 for r ≤ r_in, 1 − (10x³ − 15x⁴ + 6x⁵) in between, 0 for r ≥ r_out (C²)."""
    x = ((r - r_inner) / (r_outer - r_inner)).clamp(0.0, 1.0)
    return 1.0 - x * x * x * (10.0 + x * (-15.0 + 6.0 * x))


def zbl_pair_energy(r: Tensor, z_i: Tensor, z_j: Tensor, r_inner: float, r_outer: float) -> Tensor:
    r"""Switched pair energy V(r) = k_e Z_i Z_j / r · φ(r/a_ij) · f_sw(r) in eV (float64).

    Args:
        r: distances in Å (any shape, > 0 where r < r_outer).
        z_i, z_j: atomic numbers, same shape as ``r``.
        r_inner, r_outer: switching radii in Å.

    Pairs at r ≥ r_outer give exactly 0 with zero gradient (their distance is replaced
    by r_outer before 1/r and exp are taken, so no inf/NaN reaches autograd).
    """
    r = r.to(torch.float64)
    inside = r < r_outer
    r_safe = torch.where(inside, r, torch.full_like(r, r_outer))
    a = screening_length(z_i, z_j)
    zz = z_i.to(torch.float64) * z_j.to(torch.float64)
    v = COULOMB_EV_ANGSTROM * zz / r_safe * screening_function(r_safe / a)
    v = v * smooth_switch(r_safe, r_inner, r_outer)
    return torch.where(inside, v, torch.zeros_like(v))


class ZBLRepulsion(nn.Module):
    r"""Switched ZBL pair repulsion per structure, E (B,) in eV (float64).

    E_b = ½ Σ_{(i→j) ∈ edges of b} V(r_ij): ``edge_index`` holds both directions of each
    pair (as a radius graph does), so each unordered pair counts once.

    Args:
        r_inner: below this distance (Å) the full ZBL term acts.
        r_outer: at and beyond this distance (Å) the term is zero; r_outer > r_inner ≥ 0,
            and r_outer must not exceed the cutoff of the ``edge_index`` passed in.
    """

    def __init__(self, r_inner: float, r_outer: float) -> None:
        super().__init__()
        r_inner, r_outer = float(r_inner), float(r_outer)
        if not (0.0 <= r_inner < r_outer):
            raise ValueError(f"need 0 <= r_inner < r_outer, got r_inner={r_inner}, r_outer={r_outer}")
        self.r_inner = r_inner
        self.r_outer = r_outer

    def pair_energies(self, z: Tensor, pos: Tensor, edge_index: Tensor) -> Tensor:
        """V(r_ij) of every directed edge (E,), float64 eV."""
        src, dst = edge_index[0], edge_index[1]
        vec = pos.index_select(0, dst) - pos.index_select(0, src)
        # ‖v‖ has an undefined gradient at 0: keep far (and degenerate) pairs off the norm.
        sq = vec.to(torch.float64).square().sum(-1)
        near = sq < self.r_outer**2
        r = torch.where(near, sq, torch.full_like(sq, self.r_outer**2)).sqrt()
        return zbl_pair_energy(r, z.index_select(0, src), z.index_select(0, dst), self.r_inner, self.r_outer)

    def forward(self, z: Tensor, pos: Tensor, edge_index: Tensor, batch: Tensor | None = None,
                num_graphs: int | None = None) -> Tensor:
        """ZBL energy of each structure.

        Args:
            z: (N,) long atomic numbers.
            pos: (N, 3) positions in Å (any float dtype; may require grad).
            edge_index: (2, E) long, both directions of every pair within the cutoff.
            batch: (N,) long structure index of each atom (None: one structure).
            num_graphs: B (default: batch.max() + 1).

        Returns:
            (B,) float64 energies in eV.
        """
        if batch is None:
            batch = torch.zeros(pos.shape[0], dtype=torch.long, device=pos.device)
        if num_graphs is None:
            num_graphs = int(batch.max()) + 1 if batch.numel() else 0
        v = self.pair_energies(z, pos, edge_index)
        out = torch.zeros(num_graphs, dtype=torch.float64, device=pos.device)
        return out.index_add(0, batch.index_select(0, edge_index[0]), 0.5 * v)

    def extra_repr(self) -> str:
        return f"r_inner={self.r_inner}, r_outer={self.r_outer}"
