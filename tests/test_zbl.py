"""ZBL pair repulsion: values, switching smoothness, forces, symmetry, double backward."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mfgnn.nn.zbl import ZBLRepulsion, smooth_switch

R_IN, R_OUT = 0.8, 1.4


def _zbl_numpy(r: float, zi: int, zj: int) -> float:
    """Independent evaluation of the unswitched ZBL formula, eV."""
    a = 0.46850 / (zi**0.23 + zj**0.23)
    x = r / a
    phi = (0.18175 * np.exp(-3.1998 * x) + 0.50986 * np.exp(-0.94229 * x)
           + 0.28022 * np.exp(-0.4029 * x) + 0.02817 * np.exp(-0.20162 * x))
    return 14.399645 * zi * zj / r * phi


def _dimer_energy(module: ZBLRepulsion, r: float, zi: int, zj: int) -> float:
    z = torch.tensor([zi, zj])
    pos = torch.tensor([[0.0, 0.0, 0.0], [r, 0.0, 0.0]], dtype=torch.float64)
    edges = torch.tensor([[0, 1], [1, 0]])
    return float(module(z, pos, edges)[0])


def _all_edges(n: int) -> torch.Tensor:
    i, j = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    keep = i != j
    return torch.stack([i[keep], j[keep]])


@pytest.mark.parametrize("zi,zj,r", [(1, 1, 0.5), (8, 8, 0.6), (1, 8, 0.7)])
def test_value_matches_numpy_below_r_inner(zi, zj, r):
    module = ZBLRepulsion(R_IN, R_OUT)
    assert _dimer_energy(module, r, zi, zj) == pytest.approx(_zbl_numpy(r, zi, zj), rel=1e-12)


def test_value_in_switching_region():
    module = ZBLRepulsion(R_IN, R_OUT)
    r = 1.1
    x = (r - R_IN) / (R_OUT - R_IN)
    sw = 1 - (10 * x**3 - 15 * x**4 + 6 * x**5)
    assert _dimer_energy(module, r, 8, 8) == pytest.approx(_zbl_numpy(r, 8, 8) * sw, rel=1e-12)


def test_zero_beyond_r_outer_with_zero_gradient():
    module = ZBLRepulsion(R_IN, R_OUT)
    z = torch.tensor([8, 8])
    pos = torch.tensor([[0.0, 0.0, 0.0], [R_OUT + 1e-9, 0.0, 0.0]], dtype=torch.float64, requires_grad=True)
    e = module(z, pos, torch.tensor([[0, 1], [1, 0]]))
    assert float(e.detach()) == 0.0
    (g,) = torch.autograd.grad(e.sum(), pos)
    assert torch.all(g == 0)
    # a far pair, and a pair exactly at r_outer
    assert _dimer_energy(module, 5.0, 8, 8) == 0.0
    assert _dimer_energy(module, R_OUT, 8, 8) == 0.0


@pytest.mark.parametrize("r0", [R_IN, R_OUT])
def test_energy_and_derivative_continuous_at_radii(r0):
    module = ZBLRepulsion(R_IN, R_OUT)

    def e(r):
        return _dimer_energy(module, r, 8, 8)

    h = 1e-6
    # value continuity
    assert e(r0 - h) == pytest.approx(e(r0 + h), abs=1e-3)
    # one-sided derivatives agree (both vanish-matched); compare left and right slopes
    left = (e(r0) - e(r0 - h)) / h
    right = (e(r0 + h) - e(r0)) / h
    assert left == pytest.approx(right, abs=1e-3 * max(1.0, abs(left)))
    # the switch itself has zero first and second derivatives at both ends
    r = torch.tensor([r0], dtype=torch.float64, requires_grad=True)
    s = smooth_switch(r, R_IN, R_OUT)
    (d1,) = torch.autograd.grad(s.sum(), r, create_graph=True)
    (d2,) = torch.autograd.grad(d1.sum(), r)
    assert abs(float(d1.detach())) < 1e-12 and abs(float(d2)) < 1e-9


def _cluster(dtype=torch.float64):
    g = torch.Generator().manual_seed(0)
    z = torch.tensor([1, 8, 8, 1, 6])
    pos = torch.tensor([[0.0, 0.0, 0.0], [0.7, 0.1, 0.0], [1.3, 0.5, 0.2],
                        [1.9, 0.3, 0.9], [0.4, 0.9, 0.6]], dtype=dtype)
    pos = pos + 0.01 * torch.randn(pos.shape, generator=g, dtype=dtype)
    return z, pos, _all_edges(5)


def test_forces_match_finite_differences(float64_single_thread):
    module = ZBLRepulsion(R_IN, R_OUT)
    z, pos, edges = _cluster()
    p = pos.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(module(z, p, edges).sum(), p)
    forces = -grad
    h = 1e-6
    fd = torch.zeros_like(pos)
    for a in range(pos.shape[0]):
        for k in range(3):
            plus, minus = pos.clone(), pos.clone()
            plus[a, k] += h
            minus[a, k] -= h
            fd[a, k] = -(module(z, plus, edges) - module(z, minus, edges)).sum() / (2 * h)
    assert torch.allclose(forces, fd, rtol=1e-6, atol=1e-6)
    assert float(forces.abs().max()) > 1.0  # the test actually probes the repulsive region


def test_double_backward(float64_single_thread):
    module = ZBLRepulsion(R_IN, R_OUT)
    z, pos, edges = _cluster()
    p = pos.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(module(z, p, edges).sum(), p, create_graph=True)
    (hess_vec,) = torch.autograd.grad(grad.square().sum(), p)
    assert torch.isfinite(hess_vec).all() and float(hess_vec.abs().max()) > 0


def test_float32_positions_give_float64_energy():
    module = ZBLRepulsion(R_IN, R_OUT)
    z, pos, edges = _cluster(torch.float32)
    p = pos.clone().requires_grad_(True)
    e = module(z, p, edges)
    assert e.dtype == torch.float64
    (g,) = torch.autograd.grad(e.sum(), p)
    assert g.dtype == torch.float32 and torch.isfinite(g).all()


def test_rotation_translation_invariance(float64_single_thread):
    module = ZBLRepulsion(R_IN, R_OUT)
    z, pos, edges = _cluster()
    q, _ = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64))
    moved = pos @ q.T + torch.tensor([3.0, -2.0, 7.5], dtype=torch.float64)
    e0, e1 = module(z, pos, edges), module(z, moved, edges)
    assert float(e0) > 0
    assert torch.allclose(e0, e1, rtol=1e-12, atol=0)


def test_monotone_repulsive_below_r_inner():
    module = ZBLRepulsion(R_IN, R_OUT)
    for zi, zj in [(1, 1), (1, 8), (8, 8)]:
        es = [_dimer_energy(module, r, zi, zj) for r in np.linspace(0.2, R_IN, 50)]
        assert all(a > b for a, b in zip(es, es[1:]))
        assert es[-1] > 0
    # the switched energy never increases with r anywhere (ZBL decreasing × decreasing switch)
    es = [_dimer_energy(module, r, 8, 8) for r in np.linspace(0.2, R_OUT + 0.1, 200)]
    assert all(a >= b for a, b in zip(es, es[1:]))


def test_batch_counts_each_pair_once():
    module = ZBLRepulsion(R_IN, R_OUT)
    # two dimers in one batch, plus a far pair in a third graph
    z = torch.tensor([1, 1, 8, 8, 8, 8])
    pos = torch.tensor([[0, 0, 0], [0.5, 0, 0], [0, 0, 0], [0.6, 0, 0], [0, 0, 0], [3.0, 0, 0]],
                       dtype=torch.float64)
    edges = torch.tensor([[0, 1, 2, 3, 4, 5], [1, 0, 3, 2, 5, 4]])
    batch = torch.tensor([0, 0, 1, 1, 2, 2])
    e = module(z, pos, edges, batch, num_graphs=4)
    assert e.shape == (4,)
    assert float(e[0]) == pytest.approx(_zbl_numpy(0.5, 1, 1), rel=1e-12)
    assert float(e[1]) == pytest.approx(_zbl_numpy(0.6, 8, 8), rel=1e-12)
    assert float(e[2]) == 0.0 and float(e[3]) == 0.0


def test_invalid_radii():
    with pytest.raises(ValueError):
        ZBLRepulsion(1.5, 1.0)
    with pytest.raises(ValueError):
        ZBLRepulsion(-0.1, 1.0)
    assert math.isfinite(ZBLRepulsion(0.0, 1.0).r_outer)
