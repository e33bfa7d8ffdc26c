"""Building blocks of mfgnn.nn against direct (per-pair) evaluations of the paper's equations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mfgnn.errors import ConfigError
from mfgnn.nn import (
    AtomLayer,
    GaussianSensitivity,
    HierarchicalHeads,
    HIPNNConfig,
    InteractionLayer,
    build_pair_geometry,
    choose_width,
    quadrupole_components,
)



pytestmark = pytest.mark.usefixtures("float64_single_thread")


def _cluster(n: int, seed: int, box: float = 6.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, generator=g) * box


def _all_pairs(n: int, pos: torch.Tensor, cutoff: float) -> torch.Tensor:
    d = torch.cdist(pos, pos)
    tgt, src = ((d < cutoff) & ~torch.eye(n, dtype=torch.bool)).nonzero(as_tuple=True)
    return torch.stack([src, tgt])


def _reference_interaction(layer: InteractionLayer, z, pos, edge_index) -> torch.Tensor:
    """Eq. 4-6 (+ HIP-NN-TS) evaluated pair by pair with explicit 3x3 quadrupoles."""
    j, i = edge_index
    vec = pos[j] - pos[i]
    r = vec.norm(dim=-1)
    s = layer.sensitivity(r)  # (E, ν)
    pair = torch.einsum("en,nab,eb->ea", s, layer.int_weights, z[j])
    pre = torch.zeros(z.shape[0], layer.out_features).index_add(0, i, pair) + layer.self_interaction(z)
    if layer.tensor is not None:
        ts = layer.tensor
        rhat = vec / r[:, None]
        y = torch.einsum("ncb,eb->enc", ts.contraction, z[j])  # Σ_b U^ν_cb z_jb per pair
        m = torch.einsum("en,enc->ec", s, y)
        t1 = torch.zeros(z.shape[0], ts.n_channels, 3).index_add(0, i, m[:, :, None] * rhat[:, None, :])
        q = [t1.square().sum(-1)]
        if ts.tensor_order == 2:
            quad = rhat[:, :, None] * rhat[:, None, :] - torch.eye(3) / 3.0
            t2 = torch.zeros(z.shape[0], ts.n_channels, 3, 3).index_add(0, i, m[:, :, None, None] * quad[:, None])
            q.append(t2.square().sum((-1, -2)))
        pre = pre + torch.cat(q, -1) @ ts.scales.t()
    out = layer.activation(pre)
    return z + out if layer.residual else out


def test_sensitivity_matches_formula_and_vanishes_smoothly_at_cutoff():
    sens = GaussianSensitivity(20, 0.75, 5.5, 6.5)
    mu_inv = 1.0 / sens.mu.detach()
    assert torch.allclose(mu_inv[0], torch.tensor(1 / 5.5)) and torch.allclose(mu_inv[-1], torch.tensor(1 / 0.75))
    spacing = (1 / 0.75 - 1 / 5.5) / 19
    assert torch.allclose(1.0 / sens.sigma.detach(), torch.full((20,), spacing / 2))
    r = torch.tensor([0.9, 1.4, 3.0, 6.0])
    expected = torch.exp(-0.5 * ((1 / r[:, None] - mu_inv) * sens.sigma.detach()) ** 2) * (
        torch.cos(math.pi * r / 13.0) ** 2
    )[:, None]
    assert torch.allclose(sens(r), expected, atol=1e-14)
    # zero at and beyond r_c, value and slope continuous at r_c
    far = torch.tensor([6.5, 6.6, 20.0], requires_grad=True)
    val = sens(far)
    assert torch.all(val == 0)
    near = torch.tensor([6.5 - 1e-4], requires_grad=True)
    val = sens(near).sum()
    (slope,) = torch.autograd.grad(val, near)
    assert 0 < val.item() < 1e-7 and abs(slope.item()) < 1e-3


def test_pair_geometry_places_every_pair_once_and_reduces_multi_row_atoms():
    pos = _cluster(40, 0, box=5.0)
    ei = _all_pairs(40, pos, 4.0)
    geom = build_pair_geometry(pos, ei, cutoff=4.0, width=4)
    assert not geom.identity and geom.width == 4
    got = sorted(zip(geom.src[geom.mask].tolist(), geom.row_atom[:, None].expand_as(geom.src)[geom.mask].tolist()))
    assert got == sorted(zip(ei[0].tolist(), ei[1].tolist()))
    d = (pos[ei[0]] - pos[ei[1]]).norm(dim=-1)
    assert torch.allclose(torch.sort(geom.r[geom.mask]).values, torch.sort(d).values)
    assert torch.all(geom.r[~geom.mask] == 8.0)
    # reduce sums the rows of an atom
    ones = torch.ones(geom.n_rows, 1)
    assert torch.equal(geom.reduce(ones)[:, 0], torch.clamp((torch.bincount(ei[1], minlength=40) + 3) // 4, min=1).double())


def test_pair_geometry_drops_pairs_beyond_cutoff_and_source_layout_round_trips():
    pos = _cluster(30, 1, box=8.0)
    wide = _all_pairs(30, pos, 7.0)
    geom = build_pair_geometry(pos, wide, cutoff=3.0, tensor_order=2)
    assert int(geom.mask.sum()) == int(((pos[wide[0]] - pos[wide[1]]).norm(dim=-1) < 3.0).sum())
    loops = torch.cat([wide, torch.arange(30).repeat(2, 1)], 1)  # self-loops are ignored
    assert torch.equal(build_pair_geometry(pos, loops, 3.0, 2).r, geom.r)
    x = torch.randn(geom.n_rows, geom.width, 5) * geom.mask[..., None]
    back = geom.source.from_source(geom.source.to_source(x), geom.n_rows, geom.width)
    assert torch.equal(back, x)


def test_choose_width_prefers_one_row_for_small_molecules_and_splits_dense_ones():
    assert choose_width(torch.full((21,), 20)) == 20
    assert choose_width(torch.tensor([0, 0])) == 1
    w = choose_width(torch.cat([torch.full((999,), 110), torch.tensor([400])]))
    assert w < 400


def test_quadrupole_components_are_orthonormal_coordinates():
    rhat = torch.nn.functional.normalize(torch.randn(50, 3), dim=-1)
    m = torch.randn(50)
    q = quadrupole_components(rhat)
    full = rhat[:, :, None] * rhat[:, None, :] - torch.eye(3) / 3
    assert torch.allclose(q.square().sum(-1), torch.full((50,), 2 / 3))
    assert torch.allclose((m[:, None] * q).sum(0).square().sum(), (m[:, None, None] * full).sum(0).square().sum())


@pytest.mark.parametrize("tensor_order", [0, 1, 2])
@pytest.mark.parametrize("width", [None, 3])
def test_interaction_layer_matches_pairwise_reference(tensor_order, width):
    torch.manual_seed(0)
    n, b = 25, 6
    pos = _cluster(n, 2, box=5.0)
    ei = _all_pairs(n, pos, 4.0)
    for in_f, out_f in ((b, b), (3, b)):
        layer = InteractionLayer(in_f, out_f, n_sensitivities=7, soft_min=0.8, soft_max=3.5, cutoff=4.0,
                                 tensor_order=tensor_order, n_tensor_channels=4)
        if layer.tensor is not None:
            torch.nn.init.normal_(layer.tensor.scales, std=0.3)
        z = torch.randn(n, in_f)
        geom = build_pair_geometry(pos, ei, 4.0, tensor_order, width=width)
        got = layer(z, geom)
        ref = _reference_interaction(layer, z, pos, ei)
        assert torch.allclose(got, ref, atol=1e-12, rtol=1e-10)
        assert layer.residual == (in_f == out_f)


def test_atom_layer_is_eq7_with_optional_residual():
    lay = AtomLayer(5, 5, "silu", residual=True)
    z = torch.randn(7, 5)
    assert torch.allclose(lay(z), z + torch.nn.functional.silu(z @ lay.linear.weight.t() + lay.linear.bias))
    lay2 = AtomLayer(5, 3, "tanh", residual=True)
    assert not lay2.residual
    assert torch.allclose(lay2(z), torch.tanh(lay2.linear(z)))


def test_heads_modes_and_penalties():
    feats = [torch.randn(9, 4), torch.randn(9, 6)]
    ind = HierarchicalHeads([4, 6], 3, "independent", penalty=0.5)
    out = ind(feats)
    assert out.shape == (2, 9, 3)
    assert torch.allclose(out[1, :, 2], feats[1] @ ind.linears[1].weight[2] + ind.linears[1].bias[2])
    assert ind.regularization().item() == 0.0

    delta = HierarchicalHeads([4, 6], 3, "delta", penalty=0.5)
    assert torch.all(delta.linears[1].weight[1:] == 0)
    with torch.no_grad():
        for lin in delta.linears:
            lin.weight.normal_()
            lin.bias.normal_()
    raw = torch.stack([lin(z) for lin, z in zip(delta.linears, feats)])
    assert torch.allclose(delta(feats), raw.cumsum(-1))
    expected = 0.5 * sum(lin.weight[1:].square().sum() for lin in delta.linears)
    assert torch.allclose(delta.regularization(), expected)
    w_eff = delta.effective_weights()[1]
    assert torch.allclose(delta(feats)[1], feats[1] @ w_eff.t() + delta.effective_biases()[1])

    teth = HierarchicalHeads([4, 6], 3, "tethered", penalty=0.5)
    assert teth.regularization().item() == 0.0  # starts from identical heads
    with torch.no_grad():
        teth.linears[0].weight[1, 1] += 2.0  # enters w_1 - w_0 and w_2 - w_1
    assert teth.regularization().item() == pytest.approx(0.5 * 2 * 2.0**2)


def test_config_validation_and_round_trip():
    cfg = HIPNNConfig(n_features=8, tensor_order=2, heads="delta")
    assert HIPNNConfig.from_dict(cfg.to_dict()) == cfg
    for bad in ({"tensor_order": 3}, {"heads": "shared"}, {"activation": "relu6"}, {"soft_min": 6.0},
                {"n_features": 0}, {"cutoff": "far"}):
        with pytest.raises(ConfigError):
            HIPNNConfig(**bad)
    with pytest.raises(ConfigError, match="n_feature"):
        HIPNNConfig.from_dict({"n_feature": 3})


def test_interaction_double_backward_matches_finite_differences_of_forces():
    """Gradient of a force loss w.r.t. V^ν_ab (a double backward) against finite differences."""
    torch.manual_seed(3)
    pos0 = _cluster(8, 4, box=3.0)
    ei = _all_pairs(8, pos0, 4.0)
    layer = InteractionLayer(3, 5, n_sensitivities=4, soft_min=0.8, soft_max=3.0, cutoff=4.0, tensor_order=2,
                             n_tensor_channels=2)
    torch.nn.init.normal_(layer.tensor.scales, std=0.3)
    z = torch.randn(8, 3)

    def force_loss(create_graph: bool) -> torch.Tensor:
        pos = pos0.clone().requires_grad_(True)
        e = layer(z, build_pair_geometry(pos, ei, 4.0, 2)).sum()
        (g,) = torch.autograd.grad(e, pos, create_graph=create_graph)
        return g.square().sum()

    force_loss(True).backward()
    grad = layer.int_weights.grad[1, 2, 0].item()
    h = 1e-6
    with torch.no_grad():
        layer.int_weights[1, 2, 0] += h
    up = force_loss(False).item()
    with torch.no_grad():
        layer.int_weights[1, 2, 0] -= 2 * h
    down = force_loss(False).item()
    assert grad == pytest.approx((up - down) / (2 * h), rel=1e-6)
    assert np.isfinite(grad) and grad != 0.0


def test_every_layer_defaults_to_the_models_activation():
    """A layer built without an activation uses the model's default (shifted softplus),
    not plain softplus."""
    import inspect

    from mfgnn.nn.atom import AtomLayer, ShiftedSoftplus
    from mfgnn.nn.config import HIPNNConfig
    from mfgnn.nn.equivariant import EquivariantBlock
    from mfgnn.nn.interaction import InteractionBlock, InteractionLayer

    for cls in (AtomLayer, InteractionLayer, InteractionBlock, EquivariantBlock):
        default = inspect.signature(cls.__init__).parameters["activation"].default
        assert default == HIPNNConfig().activation == "shifted_softplus", cls.__name__
    layer = AtomLayer(4, 4)
    assert any(isinstance(m, ShiftedSoftplus) for m in layer.modules())
