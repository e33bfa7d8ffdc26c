r"""Pair geometry in a padded neighbour layout, shared by all interaction layers.

The environment sums of HIP-NN,

.. math::  \mathrm{env}_{i,\nu,b} = \sum_j s^\nu(r_{ij})\, z_{j,b},

are computed without a (pairs × sensitivities × features) tensor: the pairs of every
target atom i are laid out in *rows* of a fixed width W (an atom with more than W
neighbours gets several rows, empty slots are padding), so the sum over j is one batched
matrix product per row, (ν × W) @ (W × b), followed by a sum of the rows of each atom
(:mod:`mfgnn.nn.env_sum` runs this block by block with written-out derivatives; the
plain :meth:`PairGeometry.gather` / :meth:`PairGeometry.reduce` formulation is its
reference). The geometry itself (r_ij from the positions) is plain differentiable torch
operations; on the CPU the index bookkeeping of the layout is done with numpy.

Padded slots carry a dummy displacement of length 2 r_c: every s^ν vanishes there, and no
0/0 appears in the derivatives.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from mfgnn.errors import ModelError

#: Row widths tried by :func:`choose_width` (besides the largest degree).
_WIDTHS = (16, 32, 64, 128)


@dataclass
class PairGeometry:
    """Neighbour pairs (j → i) of a batch, padded into rows of width W.

    Attributes:
        n_atoms: N, atoms in the batch.
        row_atom: (R,) long, the target atom i of each row.
        src: (R, W) long, the neighbour j of each slot (padding: the row's own atom).
        mask: (R, W) bool, True for real pairs.
        identity: True when row r is atom r (R == N); then :meth:`reduce` is a no-op.
        r: (R, W) distances r_ij in Å (padding: 2 r_c).
        vec: (R, W, 3) displacements r_j − r_i in Å (padding: (2 r_c, 0, 0)).
        angular: (R, W, K) angular factors of the tensor sensitivities (K = 3 for ℓ = 1,
            8 for ℓ = 2: r̂ then the 5 orthonormal components of r̂r̂ᵀ − I/3), or None.
        source: the same pairs grouped by source atom j (tensor sensitivities), or None.
        cache: values derived from this geometry once and shared by the layers (the
            cutoff envelope, block plans).
    """

    n_atoms: int
    row_atom: Tensor
    src: Tensor
    mask: Tensor
    identity: bool
    r: Tensor
    vec: Tensor
    angular: Tensor | None
    source: "SourceLayout | None" = None
    cache: dict = field(default_factory=dict, repr=False)

    def cached(self, key, make):
        """``make()`` once per geometry and ``key``; later calls return the same value."""
        if key not in self.cache:
            self.cache[key] = make()
        return self.cache[key]

    @property
    def rhat(self) -> Tensor:
        """(R, W, 3) unit vectors r̂_ij = (r_j − r_i)/r_ij (computed on first use)."""
        if "rhat" not in self.cache:
            self.cache["rhat"] = self.vec / self.r.unsqueeze(-1)
        return self.cache["rhat"]

    @property
    def n_rows(self) -> int:
        return self.src.shape[0]

    @property
    def width(self) -> int:
        return self.src.shape[1]

    def gather(self, x: Tensor) -> Tensor:
        """Per-atom values (N, *F) → values of each slot's neighbour j, (R, W, *F)."""
        return x.index_select(0, self.src.reshape(-1)).reshape(self.n_rows, self.width, *x.shape[1:])

    def reduce(self, x: Tensor) -> Tensor:
        """Per-row partial sums (R, *F) → per-atom sums (N, *F)."""
        if self.identity:
            return x
        out = x.new_zeros((self.n_atoms, *x.shape[1:]))
        return out.index_add(0, self.row_atom, x)


@dataclass
class SourceLayout:
    """The pairs of a :class:`PairGeometry` regrouped into rows by *source* atom j.

    Used where a per-source quantity (Y_{j,ν,c}) meets per-pair sensitivities: a batched
    product per source row replaces a gather of Y to every pair.

    Attributes:
        row_atom: (R_s,) source atom j of each row.
        width: W_s.
        identity: True when row r is atom r.
        from_target: (R_s·W_s,) flat target-layout slot of each source slot (padding:
            R·W, i.e. an appended zero row).
        to_target: (R·W,) flat source-layout slot of each target slot (padding: R_s·W_s).
    """

    row_atom: Tensor
    width: int
    identity: bool
    from_target: Tensor
    to_target: Tensor

    def to_source(self, x: Tensor) -> Tensor:
        """Target-layout pair values (R, W, *F) → source layout (R_s, W_s, *F)."""
        flat = x.reshape(-1, *x.shape[2:])
        flat = torch.cat((flat, flat.new_zeros((1, *flat.shape[1:]))))
        return flat.index_select(0, self.from_target).view(-1, self.width, *x.shape[2:])

    def from_source(self, x: Tensor, rows: int, width: int) -> Tensor:
        """Source-layout pair values (R_s, W_s, *F) → target layout (rows, width, *F)."""
        flat = x.reshape(-1, *x.shape[2:])
        flat = torch.cat((flat, flat.new_zeros((1, *flat.shape[1:]))))
        return flat.index_select(0, self.to_target).view(rows, width, *x.shape[2:])


def choose_width(degree: Tensor) -> int:
    """Row width W for atoms with the given numbers of neighbours.

    Minimises the padded slot count weighted by the lower efficiency of narrow batched
    matrix products (cost ∝ slots / W^0.75, measured on CPU).
    """
    deg = np.asarray(degree.detach().cpu() if isinstance(degree, Tensor) else degree, dtype=np.int64)
    d_max = int(deg.max()) if deg.size else 0
    if d_max <= _WIDTHS[0]:
        return max(d_max, 1)
    best_w, best_cost = d_max, deg.size * d_max ** 0.25
    for w in _WIDTHS:
        if w >= d_max:
            break
        slots = int(np.maximum((deg + w - 1) // w, 1).sum()) * w
        cost = slots / w**0.75
        if cost < best_cost:
            best_w, best_cost = w, cost
    return best_w


def quadrupole_components(rhat: Tensor) -> Tensor:
    r"""The 5 orthonormal components of the traceless r̂r̂ᵀ − I/3, shape (..., 5).

    Coordinates in the Frobenius-orthonormal basis
    {(e_xe_yᵀ+e_ye_xᵀ)/√2, (e_xe_zᵀ+e_ze_xᵀ)/√2, (e_ye_zᵀ+e_ze_yᵀ)/√2,
    (e_xe_xᵀ−e_ye_yᵀ)/√2, (e_xe_xᵀ+e_ye_yᵀ−2e_ze_zᵀ)/√6}, so that for any sum
    T = Σ m (r̂r̂ᵀ − I/3):  Σ_xy T_xy² = Σ_k (Σ m q_k)².
    """
    x, y, z = rhat.unbind(-1)
    s2, s6 = math.sqrt(2.0), math.sqrt(6.0)
    return torch.stack(
        (s2 * x * y, s2 * x * z, s2 * y * z, (x * x - y * y) / s2, (x * x + y * y - 2 * z * z) / s6),
        dim=-1,
    )


def _rows(key: Tensor, n: int, width: int) -> tuple[Tensor, Tensor]:
    """Rows of width W for pairs sorted by ``key`` (their row atom): (row_atom (R,), slot (E,))."""
    degree = torch.bincount(key, minlength=n)
    rows_per_atom = torch.clamp((degree + width - 1) // width, min=1)
    row_start = torch.cumsum(rows_per_atom, 0) - rows_per_atom
    rank = torch.arange(key.numel(), device=key.device) - (torch.cumsum(degree, 0) - degree)[key]
    slot = (row_start[key] + torch.div(rank, width, rounding_mode="floor")) * width + rank % width
    row_atom = torch.repeat_interleave(torch.arange(n, device=key.device), rows_per_atom)
    return row_atom, slot


def _same_position_error(pos: Tensor, i: int, j: int) -> ModelError:
    return ModelError(f"atoms {i} and {j} are at the same position ({pos[i].tolist()} Å); "
                      "forces would be infinite")


def _layout_numpy(pos: Tensor, edge_index: Tensor | None, cutoff: float, width: int | None):
    """The row layout on the CPU with numpy (a few µs per step instead of tens for torch ops
    on small systems): sorted (i, j), W, row_atom, slot, src and mask, as numpy arrays.
    ``edge_index`` None: all pairs of one structure (the test of the radius graph too)."""
    n = pos.shape[0]
    x = pos.detach().numpy()
    if edge_index is None:
        d = x[None, :, :] - x[:, None, :]  # d[i, j] = x[j] - x[i], as the radius graph
        d2 = d[..., 0] * d[..., 0] + d[..., 1] * d[..., 1] + d[..., 2] * d[..., 2]
        dist = np.sqrt(np.square(d).sum(-1))
        np.fill_diagonal(dist, np.inf)
        same = dist < 1.0e-6
        if same.any():
            i, j = np.nonzero(same)
            raise _same_position_error(pos, int(i[0]), int(j[0]))
        i, j = np.nonzero((d2 < d2.dtype.type(cutoff * cutoff)) & (dist < cutoff))  # sorted
    else:
        j, i = np.asarray(edge_index[0], dtype=np.int64), np.asarray(edge_index[1], dtype=np.int64)
        dist = np.sqrt(np.square(x[j] - x[i]).sum(-1))
        distinct = i != j
        same = np.flatnonzero((dist < 1.0e-6) & distinct)
        if same.size:
            raise _same_position_error(pos, int(i[same[0]]), int(j[same[0]]))
        keep = (dist < cutoff) & distinct
        if not keep.all():
            j, i = j[keep], i[keep]
        key = i * n + j
        if not (key[1:] > key[:-1]).all():  # a radius graph's edges are sorted already
            order = np.argsort(key, kind="stable")
            j, i = j[order], i[order]
    degree = np.bincount(i, minlength=n)
    w = choose_width(degree) if width is None else int(width)
    rows_per_atom = np.maximum((degree + w - 1) // w, 1)
    row_start = np.cumsum(rows_per_atom) - rows_per_atom
    rank = np.arange(i.size) - (np.cumsum(degree) - degree)[i]
    slot = (row_start[i] + rank // w) * w + rank % w
    row_atom = np.repeat(np.arange(n), rows_per_atom)
    src = np.repeat(row_atom, w)
    src[slot] = j
    mask = np.zeros(src.size, dtype=bool)
    mask[slot] = True
    return i, j, w, row_atom, slot, src, mask


def build_pair_geometry(
    pos: Tensor, edge_index: Tensor | None, cutoff: float, tensor_order: int = 0,
    width: int | None = None
) -> PairGeometry:
    """Pad the pairs of ``edge_index`` closer than ``cutoff`` into rows and compute r, r̂.

    Args:
        pos: (N, 3) positions in Å (may require grad; the geometry is differentiable).
        edge_index: (2, E) long, row 0 the source j, row 1 the target i. Pairs at
            r_ij ≥ cutoff (their sensitivities vanish) and self-loops are dropped. None:
            all pairs of one structure (best for a small one on the CPU).
        cutoff: hard cutoff r_c in Å.
        tensor_order: 0, 1 or 2; which angular factors to precompute (≥ 1 also builds
            the source-major layout of :class:`SourceLayout`).
        width: row width W; chosen by :func:`choose_width` when None.
    """
    n = pos.shape[0]
    device = pos.device
    with torch.no_grad():
        if device.type == "cpu":
            edges = None if edge_index is None else edge_index.cpu()
            i, j, w, row_atom, slot, src, mask = (
                torch.from_numpy(a) if isinstance(a, np.ndarray) else a
                for a in _layout_numpy(pos, edges, cutoff, width))
        else:
            if edge_index is None:
                from mfgnn.data.graph import radius_graph

                edge_index = radius_graph(pos.detach(), cutoff)
            i, j, w, row_atom, slot, src, mask = _layout_torch(pos, edge_index, cutoff, width)
        n_rows = row_atom.numel()
        src, mask = src.view(n_rows, w), mask.view(n_rows, w)
        source = _source_layout(i, j, n, slot, n_rows * w) if tensor_order >= 1 else None
    identity = n_rows == n
    here = pos.unsqueeze(1) if identity else pos.index_select(0, row_atom).unsqueeze(1)
    vec = pos.index_select(0, src.reshape(-1)).view(n_rows, w, 3) - here
    if slot.numel() < n_rows * w:  # padding slots (a molecule within the cutoff has none)
        pad = torch.zeros(3, dtype=pos.dtype, device=device)
        pad[0] = 2.0 * cutoff
        vec = torch.where(mask.unsqueeze(-1), vec, pad)
    r = vec.norm(dim=-1)
    geom = PairGeometry(n, row_atom, src, mask, identity, r, vec, None, source)
    if tensor_order >= 1:
        rhat = geom.rhat
        geom.angular = rhat if tensor_order == 1 else torch.cat((rhat, quadrupole_components(rhat)), -1)
    return geom


def _layout_torch(pos: Tensor, edge_index: Tensor, cutoff: float, width: int | None):
    """:func:`_layout_numpy` with torch operations on ``pos.device``."""
    n, device = pos.shape[0], pos.device
    j, i = edge_index[0].to(device, torch.long), edge_index[1].to(device, torch.long)
    dist = (pos[j] - pos[i]).norm(dim=-1)
    distinct = i != j
    same = (dist < 1.0e-6) & distinct
    if bool(same.any()):
        k = int(same.nonzero()[0, 0])
        raise _same_position_error(pos, int(i[k]), int(j[k]))
    keep = (dist < cutoff) & distinct
    if not bool(keep.all()):
        j, i = j[keep], i[keep]
    order = torch.argsort(i * n + j)
    j, i = j[order], i[order]
    w = choose_width(torch.bincount(i, minlength=n)) if width is None else int(width)
    row_atom, slot = _rows(i, n, w)
    src = row_atom.repeat_interleave(w)
    src[slot] = j
    mask = torch.zeros(row_atom.numel() * w, dtype=torch.bool, device=device)
    mask[slot] = True
    return i, j, w, row_atom, slot, src, mask


def _source_layout(i: Tensor, j: Tensor, n: int, target_slot: Tensor, n_target_slots: int) -> "SourceLayout":
    order = torch.argsort(j * n + i)
    w = choose_width(torch.bincount(j, minlength=n))
    row_atom, slot_sorted = _rows(j[order], n, w)
    slot = torch.empty_like(slot_sorted)
    slot[order] = slot_sorted
    n_slots = row_atom.numel() * w
    from_target = torch.full((n_slots,), n_target_slots, dtype=torch.long, device=i.device)
    from_target[slot] = target_slot
    to_target = torch.full((n_target_slots,), n_slots, dtype=torch.long, device=i.device)
    to_target[target_slot] = slot
    return SourceLayout(row_atom, w, row_atom.numel() == n, from_target, to_target)
