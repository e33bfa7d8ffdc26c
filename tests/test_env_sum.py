"""The fused operations of force training against their plain formulations (float64, CPU):

- :func:`mfgnn.nn.env_sum.interaction_sum` against the padded bmm of
  ``InteractionLayer.environment`` followed by the matrix product with V;
- :func:`mfgnn.nn.sensitivity.gaussian_sensitivity` against the sensitivity formula;

in value, first and second derivatives (gradcheck, gradgradcheck, and the written-out
double backward that force training uses), and for a whole model in energies, forces and
the parameter gradients of a force loss.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.autograd import gradcheck, gradgradcheck

import mfgnn.nn.env_sum as env_sum
from mfgnn.nn import InteractionLayer, MultiFidelityHIPNN, build_pair_geometry
from mfgnn.nn.env_sum import interaction_sum, plain_interaction_sum
from mfgnn.nn.sensitivity import gaussian_sensitivity, reference_sensitivity

pytestmark = pytest.mark.usefixtures("float64_single_thread")


@pytest.fixture(autouse=True)
def fused_even_when_small(monkeypatch):
    """These systems are tiny: make interaction_sum take its fused path anyway."""
    monkeypatch.setattr(env_sum, "SMALL_ENVIRONMENT", 0)


def _geometry(n: int, seed: int, cutoff: float, width: int | None = None):
    g = torch.Generator().manual_seed(seed)
    pos = torch.rand(n, 3, generator=g) * 3.0
    d = torch.cdist(pos, pos)
    tgt, src = ((d < cutoff) & ~torch.eye(n, dtype=torch.bool)).nonzero(as_tuple=True)
    edges = torch.stack([src, tgt])
    return pos, edges, build_pair_geometry(pos, edges, cutoff, width=width)


@pytest.fixture(params=["one_row_per_atom", "several_rows_and_blocks"])
def layout(request, monkeypatch):
    """A pair layout with one row per atom and one block, or rows of width 3 split into
    blocks of 2 atoms (every gather, row sum and block boundary exercised)."""
    if request.param == "one_row_per_atom":
        pos, edges, geom = _geometry(9, 0, 2.5)
        assert geom.identity
    else:
        monkeypatch.setattr(env_sum, "CPU_BLOCK_ELEMENTS", 2 * 6)
        pos, edges, geom = _geometry(9, 0, 2.5, width=3)
        assert not geom.identity
    return geom


def _inputs(geom, nu=3, b=2, a=2, seed=1):
    g = torch.Generator().manual_seed(seed)
    s = (torch.rand(geom.n_rows, geom.width, nu, generator=g) * geom.mask[..., None]).requires_grad_()
    z = torch.randn(geom.n_atoms, b, generator=g).requires_grad_()
    w = torch.randn(nu * b, a, generator=g).requires_grad_()
    return s, z, w


def test_interaction_sum_equals_padded_bmm_environment_times_weights(layout):
    s, z, w = _inputs(layout, nu=4, b=3, a=5)
    layer = InteractionLayer(3, 5, n_sensitivities=4)
    env = layer.environment(z, s, layout)  # the plain formulation, (N, ν, b)
    expected = env.reshape(layout.n_atoms, -1) @ w
    got = interaction_sum(s, z, w, layout)
    assert torch.allclose(got, expected, rtol=1e-13, atol=1e-13)
    # the environment itself: V = identity
    eye = torch.eye(4 * 3)
    assert torch.allclose(interaction_sum(s, z, eye, layout), env.reshape(layout.n_atoms, -1), atol=1e-13)


def test_interaction_sum_gradcheck_and_gradgradcheck(layout):
    s, z, w = _inputs(layout)
    assert gradcheck(lambda s, z, w: interaction_sum(s, z, w, layout), (s, z, w))
    assert gradgradcheck(lambda s, z, w: interaction_sum(s, z, w, layout), (s, z, w))


def test_interaction_sum_written_out_double_backward_matches_plain(layout):
    """The force-training case: ∂L/∂(s, z) with a graph, then a cotangent for those only
    and no further graph (the path written out in _InteractionSumGrad.backward)."""
    s, z, w = _inputs(layout)
    a = torch.randn(layout.n_atoms, w.shape[1]).requires_grad_()
    cot = (torch.randn_like(s), torch.randn_like(z))

    def second(fn):
        first = torch.autograd.grad(fn(s, z, w, layout), (s, z), a, create_graph=True)
        return torch.autograd.grad(first, (s, z, w, a), cot)

    for got, want in zip(second(interaction_sum), second(plain_interaction_sum)):
        assert torch.allclose(got, want, rtol=1e-12, atol=1e-13)
    # third derivatives (autograd through the plain formulation)
    assert gradgradcheck(lambda s, z, w, a: torch.autograd.grad(
        interaction_sum(s, z, w, layout), (s, z), a, create_graph=True), (s, z, w, a))


def _distances():
    r = torch.tensor([[0.7, 1.0, 1.6], [2.2, 3.1, 3.9], [3.99, 8.0, 0.95]])  # 8.0: padding (2 r_c)
    mu = (1.0 / torch.linspace(1 / 3.0, 1 / 0.8, 5)).requires_grad_()
    sigma = torch.full((5,), 2.0 / ((1 / 0.8 - 1 / 3.0) / 4)).requires_grad_()
    return r.requires_grad_(), mu, sigma


def test_sensitivity_equals_formula_and_passes_gradcheck_and_gradgradcheck():
    r, mu, sigma = _distances()
    s = gaussian_sensitivity(r, mu, sigma, 4.0)
    formula = torch.exp(-0.5 * ((1 / r[..., None] - 1 / mu) * sigma) ** 2) * torch.where(
        r < 4.0, torch.cos(math.pi * r / 8.0) ** 2, 0.0)[..., None]
    assert torch.allclose(s, formula, rtol=1e-13, atol=1e-30)
    assert s[2, 1].abs().max() == 0.0  # padding slot
    fn = lambda r, mu, sigma: gaussian_sensitivity(r, mu, sigma, 4.0)
    assert gradcheck(fn, (r, mu, sigma))
    assert gradgradcheck(fn, (r, mu, sigma))


def test_sensitivity_written_out_double_backward_matches_autograd_of_formula():
    r, mu, sigma = _distances()
    grad_s = torch.randn(3, 3, 5).requires_grad_()
    cot = torch.randn(3, 3)

    def second(fn):
        (force,) = torch.autograd.grad(fn(r, mu, sigma, 4.0), r, grad_s, create_graph=True)
        return torch.autograd.grad(force, (r, mu, sigma, grad_s), cot)

    for got, want in zip(second(gaussian_sensitivity), second(reference_sensitivity)):
        assert torch.allclose(got, want, rtol=1e-11, atol=1e-12)


def _unfused(model):
    for layer in model.modules():
        if isinstance(layer, InteractionLayer):
            layer.fused = False
    return model


@pytest.mark.parametrize("tensor_order,small", [(0, False), (2, False), (0, True)])
def test_model_energies_forces_and_force_loss_gradients_match_plain_formulation(molecules, tensor_order,
                                                                                small, monkeypatch):
    """A two-fidelity model, fused against plain (padded bmm and the sensitivity formula
    taped by autograd), on CH2O and aspirin in one batch; ``small``: the path molecule-sized
    systems take (Σ_ν env_ν V_ν^T)."""
    if small:
        monkeypatch.setattr(env_sum, "SMALL_ENVIRONMENT", 10**9)
    from torch_geometric.data import Batch, Data

    import mfgnn.nn.sensitivity as sensitivity

    config = {"n_features": 8, "n_interactions": 2, "n_atom_layers": 2, "n_sensitivities": 6,
              "tensor_order": tensor_order, "n_tensor_channels": 3}
    batch = Batch.from_data_list([Data(z=z, pos=p) for z, p in molecules])
    results = []
    for fused in (True, False):
        torch.manual_seed(0)
        model = MultiFidelityHIPNN(config, ["low", "high"], [1, 6, 8])
        if not fused:
            _unfused(model)
            monkeypatch.setattr(sensitivity, "gaussian_sensitivity",
                                lambda r, mu, sigma, cutoff, env=None: reference_sensitivity(r, mu, sigma, cutoff))
        out = model(batch, forces=["low"], training=True)
        loss = out["energy"].square().sum() + out["forces"][:, 0].square().sum()
        loss = loss + 1e-3 * model.hierarchicality(out).sum()
        loss.backward()
        grads = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
        results.append((out["energy"].detach(), out["forces"][:, 0].detach(), grads))
    (e1, f1, g1), (e2, f2, g2) = results
    assert torch.allclose(e1, e2, rtol=1e-12, atol=1e-10)
    assert torch.allclose(f1, f2, rtol=1e-10, atol=1e-10)
    assert g1.keys() == g2.keys() and any("int_weights" in k for k in g1)
    for name in g1:
        scale = g2[name].abs().max().clamp(min=1e-8)
        assert (g1[name] - g2[name]).abs().max() / scale < 1e-10, name


def test_forces_only_pass_skips_weight_gradient_but_not_forces(molecules):
    """autograd.grad(E, pos) asks for no parameter gradient; the forces still match the
    plain formulation, and a later backward still reaches V."""
    from torch_geometric.data import Data

    z, pos = molecules[2]
    torch.manual_seed(0)
    model = MultiFidelityHIPNN({"n_features": 8, "n_interactions": 1, "n_atom_layers": 1,
                                "n_sensitivities": 5}, ["low"], [1, 6, 8])
    f_fused = model(Data(z=z, pos=pos), forces=True)["forces"]
    f_plain = _unfused(model)(Data(z=z, pos=pos), forces=True)["forces"]
    assert torch.allclose(f_fused, f_plain, rtol=1e-11, atol=1e-11)
    for layer in model.modules():
        if isinstance(layer, InteractionLayer):
            layer.fused = True
    model(Data(z=z, pos=pos))["energy"].sum().backward()
    assert model.blocks[0].interaction.int_weights.grad.abs().sum() > 0


@pytest.mark.parametrize("width", [None, 4])
def test_numpy_row_layout_equals_the_torch_one_used_off_the_cpu(width):
    """build_pair_geometry lays out the rows with numpy on the CPU and with torch
    elsewhere; both give the same rows, slots, neighbours and mask."""
    from mfgnn.nn import pairs

    pos, edges, _ = _geometry(40, 3, 4.0)
    pos = pos * 1.7
    on_cpu = pairs._layout_numpy(pos, edges, 3.0, width)
    other = pairs._layout_torch(pos, edges, 3.0, width)
    for a, b in zip(on_cpu, other):
        assert torch.equal(torch.as_tensor(a), torch.as_tensor(b))


def test_small_systems_take_the_plain_formulation(monkeypatch):
    """Below SMALL_ENVIRONMENT elements the taped formulation runs (no fused node)."""
    monkeypatch.setattr(env_sum, "SMALL_ENVIRONMENT", 10**9)
    geom = _geometry(9, 0, 2.5)[2]
    s, z, w = _inputs(geom)
    out = interaction_sum(s, z, w, geom)
    assert "InteractionSum" not in type(out.grad_fn).__name__
    monkeypatch.setattr(env_sum, "SMALL_ENVIRONMENT", 0)
    assert "InteractionSum" in type(interaction_sum(s, z, w, geom).grad_fn).__name__
