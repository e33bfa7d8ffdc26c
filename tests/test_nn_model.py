"""MultiFidelityHIPNN on real geometries: forces, symmetries, heads, errors, dtypes, round trips."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from torch_geometric.data import Batch, Data

from mfgnn.data.graph import radius_graph
from mfgnn.errors import ModelError
from _symmetry import (assert_forces_are_minus_energy_gradient, assert_invariant_and_equivariant,
                       batch_of)

from mfgnn.nn import HIPNNConfig, MultiFidelityHIPNN

ELEMENTS = (1, 6, 7, 8)
FIDELITIES = ("dft", "mp2", "cc")
HEADS = ("independent", "delta", "tethered")


pytestmark = pytest.mark.usefixtures("float64_single_thread")




def _model(tensor_order=0, heads="independent", seed=0, fidelities=FIDELITIES, self_energies=True, **kw):
    torch.manual_seed(seed)
    cfg = HIPNNConfig(n_features=12, n_interactions=2, n_atom_layers=2, n_sensitivities=6,
                      tensor_order=tensor_order, heads=heads, n_tensor_channels=3, **kw)
    se = None
    if self_energies:
        se = torch.tensor([[-13.6, -1029.5, -1485.0, -2042.6]]) * torch.linspace(1.0, 1.01, len(fidelities))[:, None]
    model = MultiFidelityHIPNN(cfg, fidelities, ELEMENTS, se)
    with torch.no_grad():  # make every head and tensor term matter (delta corrections start at 0)
        for lin in model.heads.linears:
            lin.weight.normal_(std=0.3)
            lin.bias.normal_(std=0.1)
        for block in model.blocks:
            if block.interaction.tensor is not None:
                block.interaction.tensor.scales.normal_(std=0.3)
    return model.double()




@pytest.mark.parametrize("heads", HEADS)
@pytest.mark.parametrize("tensor_order", [0, 1, 2])
def test_forces_are_minus_energy_gradient_by_central_differences(molecules, tensor_order, heads):
    model = _model(tensor_order, heads, self_energies=False)
    data = batch_of([molecules[0], molecules[2]])
    # all of CH2O, a few of aspirin
    assert_forces_are_minus_energy_gradient(model, data, atoms=(0, 1, 2, 3, 4, 11, 17, 24))


@pytest.mark.parametrize("tensor_order", [0, 1, 2])
@pytest.mark.parametrize("reflect", [False, True])
def test_energy_invariant_and_forces_equivariant(molecules, tensor_order, reflect):
    model = _model(tensor_order, "independent")
    assert_invariant_and_equivariant(model, molecules, seed=10 * tensor_order, reflect=reflect,
                                     min_force=1e-3)


@pytest.mark.parametrize("heads", HEADS)
def test_hierarchical_terms_sum_to_energy(molecules, heads):
    model = _model(2, heads)
    data = batch_of(molecules)
    out = model(data)
    hier = out["hierarchical"]
    assert hier.shape == (3, data.num_nodes, 3)
    idx = torch.tensor([ELEMENTS.index(int(z)) for z in data.z])
    per_atom = hier.sum(0) + model.self_energies[:, idx].t()
    total = torch.zeros(4, 3).index_add(0, data.batch, per_atom)
    assert torch.allclose(total, out["energy"], rtol=1e-14, atol=1e-9)
    assert out["energy"].dtype == torch.float64 and out["energy"].shape == (4, 3)
    # hierarchicality (F,) against the definition
    e2 = hier.square()
    expect = (e2[1:] / (e2[1:] + e2[:-1] + 1e-12)).sum(0).mean(0)
    assert torch.allclose(model.hierarchicality(out), expect)
    assert model.hierarchicality(out).shape == (3,)


def test_delta_heads_with_zero_corrections_reproduce_the_lower_fidelity(molecules):
    model = _model(1, "delta")
    with torch.no_grad():
        for lin in model.heads.linears:
            lin.weight[2:].zero_()
            lin.bias[2:].zero_()
    data = batch_of(molecules)
    out = model(data, forces=True)
    idx = torch.tensor([ELEMENTS.index(int(z)) for z in data.z])
    shift = torch.zeros(4).index_add(0, data.batch, (model.self_energies[2] - model.self_energies[1])[idx])
    assert torch.allclose(out["energy"][:, 2] - out["energy"][:, 1], shift, atol=1e-9)
    assert torch.allclose(out["forces"][:, 2], out["forces"][:, 1], atol=1e-12)
    assert not torch.allclose(out["forces"][:, 1], out["forces"][:, 0])
    # the penalty only sees the remaining correction (fidelity 1)
    expected = 1e-3 * sum(lin.weight[1].square().sum() for lin in model.heads.linears)
    assert torch.allclose(model.head_regularization(), expected)


def test_tethered_penalty_zero_for_equal_heads_and_independent_penalty_zero():
    model = _model(0, "tethered")
    assert model.head_regularization().item() > 0
    with torch.no_grad():
        for lin in model.heads.linears:
            lin.weight.copy_(lin.weight[:1].expand_as(lin.weight))
    assert model.head_regularization().item() == 0.0
    fresh = MultiFidelityHIPNN(HIPNNConfig(n_features=8, heads="tethered"), FIDELITIES, ELEMENTS)
    assert fresh.head_regularization().item() == 0.0
    ind = _model(0, "independent")
    reg = ind.head_regularization()
    assert reg.shape == () and reg.item() == 0.0 and reg.dtype == torch.float64


def test_forces_for_a_subset_match_one_by_one_and_others_are_nan(molecules):
    model = _model(2, "independent")
    data = batch_of(molecules)
    both = model(data, forces=["cc", "dft"])["forces"]
    assert both.shape == (data.num_nodes, 3, 3)
    assert torch.isnan(both[:, 1]).all() and not torch.isnan(both[:, [0, 2]]).any()
    for t, name in enumerate(FIDELITIES):
        single = model(data, forces=[name])["forces"]
        assert torch.isnan(single[:, [k for k in range(3) if k != t]]).all()
        if name != "mp2":
            assert torch.allclose(single[:, t], both[:, t], rtol=1e-13, atol=1e-13)
    assert torch.allclose(model(data, forces=True)["forces"][:, 0], both[:, 0], rtol=1e-13, atol=1e-13)
    assert "forces" not in model(data)


@pytest.mark.parametrize("tensor_order", [0, 2])
def test_training_forces_support_double_backward(molecules, tensor_order):
    model = _model(tensor_order, "delta")
    out = model(batch_of(molecules), forces=["dft"], training=True)
    loss = out["forces"][:, 0].square().mean() + out["energy"][:, 2].square().mean()
    loss.backward()
    for block in model.blocks:
        inter = block.interaction
        for p in (inter.int_weights, inter.sensitivity.mu, inter.sensitivity.sigma):
            assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0
        if tensor_order:
            assert inter.tensor.contraction.grad.abs().sum() > 0
    # evaluation mode outputs carry no graph
    ev = model(batch_of(molecules), forces=True)
    assert not ev["forces"].requires_grad and not ev["energy"].requires_grad
    assert model(batch_of(molecules))["energy"].requires_grad  # energy-only training keeps the graph
    with torch.no_grad():
        assert torch.isfinite(model(batch_of(molecules), forces=True)["forces"]).all()


def test_isolated_atom_and_batch_independence(molecules):
    model = _model(2, "independent")
    lone = Data(z=torch.tensor([8]), pos=torch.tensor([[0.3, -1.0, 2.0]]))
    out = model(lone, forces=True)
    assert out["energy"].shape == (1, 3) and torch.isfinite(out["energy"]).all()
    assert torch.equal(out["forces"], torch.zeros(1, 3, 3))
    # block 0 alone: w^0_t[O] + b^0_t, plus the blocks evaluated on an empty environment
    assert torch.allclose(out["hierarchical"][0, 0], model.heads.linears[0].weight[:, 3] + model.heads.linears[0].bias)
    # a structure's energy does not depend on what else is in the batch
    far = Data(z=torch.tensor([1]), pos=torch.tensor([[50.0, 0.0, 0.0]]))
    mixed = Batch.from_data_list([lone, Data(z=molecules[2][0], pos=molecules[2][1]), far])
    e = model(mixed)["energy"]
    assert torch.allclose(e[0], out["energy"][0], atol=1e-10)
    assert torch.allclose(e[1], model(Data(z=molecules[2][0], pos=molecules[2][1]))["energy"][0], atol=1e-10)


def test_large_structure_matches_finite_differences_and_is_translation_free():
    g = torch.Generator().manual_seed(5)
    n = 300
    box = (n / 0.1) ** (1 / 3)  # ~0.1 atoms / Å^3
    pos = torch.rand(n, 3, generator=g) * box
    z = torch.tensor(ELEMENTS)[torch.randint(0, 4, (n,), generator=g)]
    model = _model(2, "independent", self_energies=False)
    data = Data(z=z, pos=pos)
    out = model(data, forces=["cc"])
    f = out["forces"][:, 2]
    assert torch.isfinite(f).all() and f.abs().max() > 0
    assert torch.allclose(f.sum(0), torch.zeros(3), atol=1e-9)
    h = 1e-5
    for a, x in ((0, 0), (123, 2)):
        p = pos.clone()
        p[a, x] += h
        up = model(Data(z=z, pos=p))["energy"][0, 2]
        p[a, x] -= 2 * h
        down = model(Data(z=z, pos=p))["energy"][0, 2]
        assert (-(up - down) / (2 * h)).item() == pytest.approx(f[a, x].item(), rel=1e-6, abs=1e-8)


def test_given_edge_index_with_larger_cutoff_gives_same_result(molecules):
    model = _model(1, "independent")
    data = batch_of(molecules)
    wide = data.clone()
    wide.edge_index = radius_graph(wide.pos, 9.0, wide.batch)
    a, b = model(data, forces=True), model(wide, forces=True)
    assert torch.allclose(a["energy"], b["energy"], rtol=1e-13) and torch.allclose(a["forces"], b["forces"], atol=1e-12)


def test_unknown_element_and_fidelity_raise_model_error(molecules):
    model = _model(0)
    bad = Data(z=torch.tensor([6, 9, 1, 17]), pos=torch.randn(4, 3))
    with pytest.raises(ModelError, match=r"9, 17.*1, 6, 7, 8"):
        model(bad)
    with pytest.raises(ModelError, match=r"'ccsd\(t\)'.*dft, mp2, cc"):
        model(batch_of(molecules[:1]), forces=["dft", "ccsd(t)"])
    with pytest.raises(ModelError, match="shape"):
        MultiFidelityHIPNN(HIPNNConfig(n_features=4), FIDELITIES, ELEMENTS, torch.zeros(2, 4))


def test_hparams_round_trip_reproduces_outputs(molecules):
    model = _model(2, "tethered")
    rebuilt = MultiFidelityHIPNN.from_hparams(json.loads(json.dumps(model.hparams())))
    rebuilt.load_state_dict(model.state_dict())
    rebuilt = rebuilt.double()
    data = batch_of(molecules)
    a, b = model(data, forces=True), rebuilt(data, forces=True)
    assert torch.equal(a["energy"], b["energy"]) and torch.equal(a["forces"], b["forces"])
    assert rebuilt.fidelities == FIDELITIES and rebuilt.elements == ELEMENTS and rebuilt.config == model.config


def test_float32_and_float64_keep_float64_self_energies(molecules):
    model = _model(2, "delta")
    with torch.no_grad():
        model.self_energies.mul_(100.0)  # ~1e5 eV per atom: float32 would lose ~1e-2 eV
    se = model.self_energies.clone()
    data = batch_of(molecules)
    e64 = model(data, forces=True)
    m32 = copy.deepcopy(model).float()
    assert m32.self_energies.dtype == torch.float64 and torch.equal(m32.self_energies, se)
    data32 = batch_of(molecules)
    data32.pos = data32.pos.float()
    e32 = m32(data32, forces=True)
    assert e32["energy"].dtype == torch.float64 and e32["forces"].dtype == torch.float32
    assert e32["hierarchical"].dtype == torch.float32
    assert (e32["energy"] - e64["energy"]).abs().max() < 1e-4
    assert torch.allclose(e32["forces"].double(), e64["forces"], atol=1e-4)
    back = m32.double()
    assert back.self_energies.dtype == torch.float64 and torch.equal(back.self_energies, se)
