r"""The interaction sum of HIP-NN as one fused, twice-differentiable operation.

.. math::

    I_{i,a} = \sum_{\nu, b} V_{\nu b, a}\, \mathrm{env}_{i,\nu,b}, \qquad
    \mathrm{env}_{i,\nu,b} = \sum_j s^\nu(r_{ij})\, z_{j,b},

with s (pairs × ν, dimensionless), z (atoms × b) and the interaction weights V as a
(ν·b × a) matrix; I has the units of V·z. The pairs are in the padded row layout of
:class:`~mfgnn.nn.pairs.PairGeometry` (padding slots carry s = 0).

Why fused: the environment env (atoms × ν × b) and the gathered neighbour features
(pairs × b) are each about 20 times the size of z. Taped op by op (the plain formulation,
:meth:`~mfgnn.nn.interaction.InteractionLayer.environment` followed by a matrix product),
force training keeps several of them alive between the forward pass and the double
backward. Here only s, z, V and E = A V^T (below, one atoms × ν·b tensor, from the first
backward for the second) are kept, and on the CPU every pass runs over blocks of atoms
whose temporaries stay in cache and are reused instead of being allocated afresh (a fresh
page of memory costs about as much as the arithmetic done on it).

Derivatives (E = A V^T reshaped to atoms × ν × b, A = ∂L/∂I):

.. math::

    \partial L/\partial s_{ij,\nu} = \sum_b E_{i\nu b} z_{j b}, \quad
    \partial L/\partial z_{j b} = \sum_{i,\nu} s_{ij,\nu} E_{i\nu b}, \quad
    \partial L/\partial V_{\nu b,a} = \sum_i \mathrm{env}_{i\nu b} A_{ia}.

They are themselves an operation (:class:`_InteractionSumGrad`) with written-out
derivatives (the double backward of force training); third and higher derivatives come
from autograd through the plain formulation.
"""

from __future__ import annotations

import math
import threading

import torch
from torch import Tensor

from mfgnn.nn.pairs import PairGeometry

#: Floats per block temporary (atoms × ν × b) on the CPU: 2^18 (1 MiB in float32).
CPU_BLOCK_ELEMENTS = 1 << 18
#: Below this many environment elements (atoms × ν·b) the plain formulation is used: for
#: a molecule or two its few taped operations cost less than the blocked passes.
SMALL_ENVIRONMENT = 1 << 16
#: Largest scratch buffer kept for reuse (elements); larger requests get a fresh tensor.
WORKSPACE_MAX_ELEMENTS = 1 << 22
#: Smaller requests get a fresh tensor too (cheaper than slicing a kept one).
WORKSPACE_MIN_ELEMENTS = 1 << 14


class _Workspace(threading.local):
    """Per-thread scratch buffers reused by every block and call on the CPU, so that the
    block temporaries are neither allocated nor faulted in afresh each time. A buffer
    never leaves the operation that asked for it."""

    def __init__(self) -> None:
        self.buffers: dict = {}

    def get(self, name: str, shape: tuple[int, ...], like: Tensor) -> Tensor:
        n, key = math.prod(shape), (name, like.dtype)
        if like.device.type != "cpu" or not WORKSPACE_MIN_ELEMENTS <= n <= WORKSPACE_MAX_ELEMENTS:
            return like.new_empty(shape)
        buf = self.buffers.get(key)
        if buf is None or buf.numel() < n:
            buf = self.buffers[key] = like.new_empty(max(n, 1))
        return buf[:n].view(shape)


#: Scratch buffers of this module (also used by :mod:`mfgnn.nn.sensitivity`).
WORKSPACE = _Workspace()


def plain_interaction_sum(s: Tensor, z: Tensor, weight: Tensor, geom: PairGeometry) -> Tensor:
    """The same I from plain differentiable operations (reference and higher derivatives)."""
    env = geom.reduce(torch.bmm(s.transpose(1, 2), geom.gather(z)))
    return env.reshape(z.shape[0], -1) @ weight


def _blocks(geom: PairGeometry, per_atom: int,
            device: torch.device) -> list[tuple[int, int, int, int, Tensor | None]]:
    """Blocks (a0, a1, r0, r1, local row atom or None) of whole atoms and their rows."""
    n = geom.n_atoms
    size = n if device.type != "cpu" else max(1, CPU_BLOCK_ELEMENTS // max(per_atom, 1))
    if geom.identity:
        return [(a, min(a + size, n), a, min(a + size, n), None) for a in range(0, n, size)]
    counts = torch.bincount(geom.row_atom, minlength=n)
    start = [0] + torch.cumsum(counts, 0).tolist()
    out = []
    for a in range(0, n, size):
        b = min(a + size, n)
        out.append((a, b, start[a], start[b], geom.row_atom[start[a]:start[b]] - a))
    return out


class _Block:
    """One block of atoms: slices, the gather of per-atom values to its pair slots, and
    the sum of its rows back to atoms."""

    def __init__(self, geom: PairGeometry, a0: int, a1: int, r0: int, r1: int, local: Tensor | None) -> None:
        self.a0, self.a1, self.r0, self.r1, self.local = a0, a1, r0, r1, local
        self.src = geom.src[r0:r1].reshape(-1)
        self.width = geom.width

    def gather(self, x: Tensor, name: str = "zg") -> Tensor:
        """Per-atom x (N, b) → its values at this block's slots (rows, W, b), in the
        scratch buffer ``name``."""
        out = WORKSPACE.get(name, (self.src.numel(), x.shape[1]), x)
        return torch.index_select(x, 0, self.src, out=out).view(self.r1 - self.r0, self.width, -1)

    def rows(self, x: Tensor) -> Tensor:
        """Per-atom values of this block (atoms, ...) → per row (rows, ...)."""
        return x if self.local is None else x.index_select(0, self.local)

    def atoms(self, x: Tensor) -> Tensor:
        """Per-row values (rows, ...) → per-atom sums (atoms, ...)."""
        if self.local is None:
            return x
        return x.new_zeros((self.a1 - self.a0, *x.shape[1:])).index_add_(0, self.local, x)

    def scatter(self, out: Tensor, x: Tensor) -> None:
        """out[j] += Σ of the slot values x (rows, W, b) whose neighbour is j."""
        out.index_add_(0, self.src, x.reshape(-1, x.shape[-1]))


def _mm(x: Tensor, y: Tensor, name: str) -> Tensor:
    return torch.mm(x, y, out=WORKSPACE.get(name, (x.shape[0], y.shape[1]), x))


def _bmm(x: Tensor, y: Tensor) -> Tensor:
    return torch.bmm(x, y, out=WORKSPACE.get("pair", (x.shape[0], x.shape[1], y.shape[2]), x))


def _plan(geom: PairGeometry, per_atom: int, device: torch.device) -> list[_Block]:
    return geom.cached(("blocks", per_atom, CPU_BLOCK_ELEMENTS),
                       lambda: [_Block(geom, *blk) for blk in _blocks(geom, per_atom, device)])


def _env(blk: _Block, terms: list[tuple[Tensor, Tensor]]) -> Tensor:
    """Σ over terms (s, zg) of the block's environment Σ_j s^T z_j, per atom (atoms, ν·b)."""
    (s, zg), rest = terms[0], terms[1:]
    s0 = s[blk.r0:blk.r1].transpose(1, 2)
    env = torch.bmm(s0, zg, out=WORKSPACE.get("env", (s0.shape[0], s0.shape[1], zg.shape[2]), zg))
    for s, zg in rest:
        env.baddbmm_(s[blk.r0:blk.r1].transpose(1, 2), zg)
    env = blk.atoms(env)
    return env.view(env.shape[0], -1)


def will_need(ctx, k: int) -> bool:
    """Whether the running backward pass needs the gradient of input k (autograd.grad
    with explicit inputs skips the others), else ``needs_input_grad``."""
    if not ctx.needs_input_grad[k]:
        return False
    try:
        node = ctx.next_functions[k][0]
        return node is None or bool(torch._C._will_engine_execute_node(node))
    except (AttributeError, RuntimeError, IndexError):
        return True


class _InteractionSum(torch.autograd.Function):
    """(s, z, V) ↦ I, block by block; keeps s, z and V for the backward."""

    @staticmethod
    def forward(ctx, s: Tensor, z: Tensor, weight: Tensor, geom: PairGeometry) -> Tensor:
        out = z.new_empty(geom.n_atoms, weight.shape[1])
        for blk in _plan(geom, weight.shape[0], z.device):
            torch.mm(_env(blk, [(s, blk.gather(z))]), weight, out=out[blk.a0:blk.a1])
        ctx.save_for_backward(s, z, weight)
        ctx.geom = geom
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):
        s, z, weight = ctx.saved_tensors
        needs = tuple(will_need(ctx, k) for k in range(3))
        if not any(needs):
            return None, None, None, None
        if torch.is_grad_enabled():
            gs, gz, gw = _InteractionSumGrad.apply(grad, s, z, weight, ctx.geom, needs)
        else:
            gs, gz, gw, _ = _first_derivatives(grad, s, z, weight, ctx.geom, needs)
        return gs, gz, gw, None


def _first_derivatives(a, s, z, weight, geom, needs, keep_e: bool = False):
    """(∂L/∂s, ∂L/∂z, ∂L/∂V) for A = ∂L/∂I (only those in ``needs``), and E = A V^T
    (N, ν·b) when ``keep_e`` (the double backward reuses it), else None."""
    need_s, need_z, need_w = needs
    gs = torch.empty_like(s) if need_s else None
    gz = torch.zeros_like(z) if need_z else None
    gw = torch.zeros_like(weight) if need_w else None
    nu, b = s.shape[-1], z.shape[-1]
    e_all = a.new_empty(a.shape[0], weight.shape[0]) if keep_e and (need_s or need_z) else None
    for blk in _plan(geom, weight.shape[0], z.device):
        ab = a[blk.a0:blk.a1]
        zg = blk.gather(z) if (need_s or need_w) else None
        if need_w:
            gw.addmm_(_env(blk, [(s, zg)]).t(), ab)
        if need_s or need_z:
            if e_all is not None:
                e = torch.mm(ab, weight.t(), out=e_all[blk.a0:blk.a1])
            else:
                e = _mm(ab, weight.t(), "e")
            e = blk.rows(e.view(-1, nu, b))
            if need_s:
                torch.bmm(zg, e.transpose(1, 2), out=gs[blk.r0:blk.r1])
            if need_z:
                blk.scatter(gz, _bmm(s[blk.r0:blk.r1], e))
    return gs, gz, gw, e_all


class _InteractionSumGrad(torch.autograd.Function):
    """(A, s, z, V) ↦ (∂L/∂s, ∂L/∂z, ∂L/∂V) of :class:`_InteractionSum`, multilinear."""

    @staticmethod
    def forward(ctx, a, s, z, weight, geom, needs):
        gs, gz, gw, e_all = _first_derivatives(a, s, z, weight, geom, needs, keep_e=True)
        ctx.save_for_backward(a, s, z, weight, e_all)
        ctx.geom = geom
        ctx.set_materialize_grads(False)
        return gs, gz, gw

    @staticmethod
    def backward(ctx, t_s, t_z, t_w):
        a, s, z, weight, e_all = ctx.saved_tensors
        if torch.is_grad_enabled():
            return _generic_double_backward(ctx, (a, s, z, weight), (t_s, t_z, t_w))
        geom = ctx.geom
        need_a, need_s, need_z, need_w = (will_need(ctx, k) for k in range(4))
        ga = torch.zeros_like(a) if need_a else None
        gs = torch.zeros_like(s) if need_s else None
        gz = torch.zeros_like(z) if need_z else None
        gw = torch.zeros_like(weight) if need_w else None
        nu, b = s.shape[-1], z.shape[-1]
        for blk in _plan(geom, weight.shape[0], z.device):
            ab = a[blk.a0:blk.a1]
            zg = blk.gather(z) if (t_s is not None or t_w is not None) else None
            tzg = blk.gather(t_z, "tzg") if t_z is not None else None
            # env(T_s, z) + env(s, T_z) feeds ∂/∂A (with V) and ∂/∂V (with A)
            terms = ([(t_s, zg)] if t_s is not None else []) + ([(s, tzg)] if t_z is not None else [])
            if terms and (need_a or need_w):
                env = _env(blk, terms)
                if need_a:
                    ga[blk.a0:blk.a1].addmm_(env, weight)
                if need_w:
                    gw.addmm_(env.t(), ab)
            if t_w is not None and need_a:
                ga[blk.a0:blk.a1].addmm_(_env(blk, [(s, zg)]), t_w)
            # E = A V^T pairs with T_z (∂/∂s) and T_s (∂/∂z); Ẽ = A T_V^T with z and s
            if need_s or need_z:
                e = None
                if t_s is not None or t_z is not None:
                    e = (e_all[blk.a0:blk.a1] if e_all is not None else _mm(ab, weight.t(), "e")).view(-1, nu, b)
                et = _mm(ab, t_w.t(), "et").view(-1, nu, b) if t_w is not None else None
                e, et = (blk.rows(x) if x is not None else None for x in (e, et))
                if need_s:
                    out = gs[blk.r0:blk.r1]
                    if t_z is not None:
                        out.baddbmm_(tzg, e.transpose(1, 2))
                    if et is not None:
                        out.baddbmm_(zg, et.transpose(1, 2))
                if need_z:
                    if t_s is not None:
                        blk.scatter(gz, _bmm(t_s[blk.r0:blk.r1], e))
                    if et is not None:
                        blk.scatter(gz, _bmm(s[blk.r0:blk.r1], et))
        return ga, gs, gz, gw, None, None


def _generic_double_backward(ctx, inputs, cotangents):
    """Backward of :class:`_InteractionSumGrad` through :func:`plain_interaction_sum` (any order)."""
    needs = ctx.needs_input_grad[:4]
    with torch.enable_grad():
        leaves = [t if t.requires_grad else t.detach().requires_grad_(True) for t in inputs]
        out = plain_interaction_sum(leaves[1], leaves[2], leaves[3], ctx.geom)
        first = torch.autograd.grad(out, leaves[1:], leaves[0], create_graph=True)
        pairs = [(y, c) for y, c in zip(first, cotangents) if c is not None]
        grads = torch.autograd.grad([y for y, _ in pairs], leaves, [c for _, c in pairs],
                                    create_graph=True, allow_unused=True)
    out = [(torch.zeros_like(t) if g is None else g) if need else None
           for g, t, need in zip(grads, inputs, needs)]
    return (*out, None, None)


def fused_pays(geom: PairGeometry, per_atom: int) -> bool:
    """Whether :func:`interaction_sum` takes its fused path for environments of
    ``per_atom`` = ν·b elements per atom (else the plain formulation)."""
    return geom.n_atoms * per_atom >= SMALL_ENVIRONMENT and geom.src.numel() > 0


def interaction_sum(s: Tensor, z: Tensor, weight: Tensor, geom: PairGeometry) -> Tensor:
    """I = env(s, z) · V, shape (N, a).

    Args:
        s: (R, W, ν) sensitivities of the pair slots of ``geom`` (0 at padding).
        z: (N, b) atomic features.
        weight: (ν·b, a) interaction weights, row ν·b + b'.
        geom: the pair layout.

    Differentiable to any order in s, z and V; the first and second derivatives are
    computed block by block without an (N, ν, b) or (pairs, b) tensor (below
    :data:`SMALL_ENVIRONMENT`: :func:`plain_interaction_sum`, the same numbers).
    """
    if not fused_pays(geom, weight.shape[0]):
        return plain_interaction_sum(s, z, weight, geom)
    return _InteractionSum.apply(s, z, weight, geom)
