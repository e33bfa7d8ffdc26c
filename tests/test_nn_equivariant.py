"""The optional E(3)-equivariant trunk block on real geometries (CH2O, aspirin), float64."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from torch_geometric.data import Batch, Data

from mfgnn.config import config_from_dict
from mfgnn.errors import ConfigError
from mfgnn.model_file import load_model, save_model
from _symmetry import (assert_forces_are_minus_energy_gradient, assert_invariant_and_equivariant,
                       batch_of, random_orthogonal)

from mfgnn.nn import EquivariantConfig, HIPNNConfig, MultiFidelityHIPNN

ELEMENTS = (1, 6, 8)
FIDELITIES = ("dft", "mp2", "cc")
HEADS = ("independent", "delta", "tethered")


pytestmark = pytest.mark.usefixtures("float64_single_thread")




_CACHE: dict[tuple, MultiFidelityHIPNN] = {}


def _model(heads="independent", position="after", layers=1, self_energies=True):
    """A small float64 model with the block; built once per argument set (e3nn code
    generation takes ~0.5 s), so callers that change it must work on a copy."""
    key = (heads, position, layers, self_energies)
    if key not in _CACHE:
        _CACHE[key] = _build(heads, position, layers, self_energies)
    model = _CACHE[key]
    model.zero_grad(set_to_none=True)
    return model


def _build(heads, position, layers, self_energies):
    torch.manual_seed(0)
    eq = {"lmax": 2, "channels": 4, "layers": layers, "position": position, "radial_hidden": 8}
    cfg = HIPNNConfig(n_features=12, n_interactions=2, n_atom_layers=1, n_sensitivities=6,
                      heads=heads, equivariant=eq)
    se = None
    if self_energies:
        se = torch.tensor([[-13.6, -1029.5, -2042.6]]) * torch.linspace(1.0, 1.01, len(FIDELITIES))[:, None]
    model = MultiFidelityHIPNN(cfg, FIDELITIES, ELEMENTS, se)
    with torch.no_grad():  # make every head matter (delta corrections start at 0)
        for lin in model.heads.linears:
            lin.weight.normal_(std=0.3)
            lin.bias.normal_(std=0.1)
    return model.double()




def test_block_sits_in_the_trunk_and_hierarchy(molecules):
    after, before = _model(position="after"), _model(position="before")
    assert after.n_blocks == 3 and after.equivariant_index == 3 and after.trunk()[-1] is after.equivariant
    assert before.equivariant_index == 1 and before.trunk()[0] is before.equivariant
    assert before.equivariant.in_features == len(ELEMENTS) and before.blocks[0].interaction.in_features == 12
    assert str(after.equivariant.irreps_hidden) == "4x0e+4x1o+4x2e"
    assert [lin.in_features for lin in after.heads.linears] == [3, 12, 12, 12]
    assert HIPNNConfig().equivariant is None and MultiFidelityHIPNN(HIPNNConfig(), FIDELITIES, ELEMENTS).equivariant is None


@pytest.mark.parametrize("position", ["after", "before"])
@pytest.mark.parametrize("reflect", [False, True])
def test_energy_invariant_and_forces_equivariant(molecules, position, reflect):
    model = _model(position=position, layers=2)
    assert_invariant_and_equivariant(model, molecules, seed=7, reflect=reflect,
                                     min_force=1e-2)


@pytest.mark.parametrize("lmax", [1, 3])
def test_other_lmax_and_block_alone_are_invariant(molecules, lmax):
    """No interaction block (the equivariant block is the whole trunk), ℓ_max 1 and 3 (3o)."""
    torch.manual_seed(1)
    cfg = HIPNNConfig(n_features=8, n_interactions=0, n_sensitivities=6,
                      equivariant={"lmax": lmax, "channels": 3, "layers": 2, "radial_hidden": 8})
    model = MultiFidelityHIPNN(cfg, FIDELITIES[:2], ELEMENTS).double()
    assert model.n_blocks == 1 and model.trunk() == [model.equivariant]
    assert str(model.equivariant.irreps_hidden) == ("3x0e+3x1o" if lmax == 1 else "3x0e+3x1o+3x2e+3x3o")
    z, p = molecules[3]
    q = random_orthogonal(11, reflect=True)
    ref = model(Data(z=z, pos=p), forces=True)
    out = model(Data(z=z, pos=p @ q.t() - 4.0), forces=True)
    assert torch.allclose(out["energy"], ref["energy"], rtol=1e-12, atol=1e-9)
    assert torch.allclose(out["forces"], ref["forces"] @ q.t(), atol=1e-10)
    assert ref["hierarchical"].shape == (2, 21, 2) and ref["forces"].abs().max() > 1e-2


@pytest.mark.parametrize("reflect", [False, True])
def test_hidden_features_transform_as_their_irreps(molecules, reflect):
    """h^(1) of the block (4x0e+4x1o+4x2e) obeys h(Qr) = D(Q) h(r), parity included."""
    model = _model(layers=2)
    block = model.equivariant
    seen = []
    handle = block.layers[0].register_forward_hook(lambda mod, args, out: seen.append(out))
    z, p = molecules[2]
    q = random_orthogonal(3, reflect)
    model(Data(z=z, pos=p))
    model(Data(z=z, pos=p @ q.t()))
    handle.remove()
    d = block.irreps_hidden.D_from_matrix(q)
    assert torch.allclose(seen[1], seen[0] @ d.t(), atol=1e-11)
    vectors = seen[0][:, 4:16]  # the 1o part: odd under inversion
    assert vectors.abs().max() > 1e-3


def test_invariant_output_uses_the_angular_channels(molecules):
    """Dropping Y^1, Y^2 from the messages changes the block's invariants: it sees angles."""
    model = copy.deepcopy(_model())
    block = model.equivariant
    data = Data(z=molecules[2][0], pos=molecules[2][1])
    geom = model.geometry(data, data.pos)
    z = torch.randn(21, 12, generator=torch.Generator().manual_seed(0))
    full = block.invariants(z, geom)

    class Radial(torch.nn.Module):
        def __init__(self, sh):
            super().__init__()
            self.inner = sh

        def forward(self, x):
            y = self.inner(x)
            return torch.cat((y[:, :1], torch.zeros_like(y[:, 1:])), dim=1)

    block.sh = Radial(block.sh)
    radial_only = block.invariants(z, geom)
    assert (full - radial_only).abs().max() > 0.1 * full.abs().max()


@pytest.mark.parametrize("heads", HEADS)
def test_forces_are_minus_energy_gradient_by_central_differences(molecules, heads):
    model = _model(heads, layers=2, self_energies=False)
    data = batch_of([molecules[0], molecules[2]])
    # C and O of CH2O, C, O, H of aspirin
    assert_forces_are_minus_energy_gradient(model, data, atoms=(0, 2, 4, 11, 24))


@pytest.mark.parametrize("position", ["after", "before"])
@pytest.mark.parametrize("heads", HEADS)
def test_every_fidelity_loss_reaches_every_block_parameter(molecules, heads, position):
    model = _model(heads, position=position)
    params = dict(model.equivariant.named_parameters())
    data = batch_of(molecules[1:3])
    for t in range(len(FIDELITIES)):
        model.zero_grad(set_to_none=True)
        out = model(data)
        (out["energy"][:, t] - 1.0).square().mean().backward()
        for name, p in params.items():
            assert p.grad is not None and torch.isfinite(p.grad).all(), (t, name)
            assert p.grad.abs().sum() > 1e-12, (t, name)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_force_training_double_backward_gives_finite_block_gradients(molecules, dtype):
    model = copy.deepcopy(_model("delta", layers=2)).to(dtype)
    data = batch_of(molecules)
    data.pos = data.pos.to(dtype)
    out = model(data, forces=True, training=True)
    assert out["forces"].dtype == dtype and out["forces"].requires_grad
    loss = out["forces"].square().mean() + 1e-3 * out["energy"][:, 2].square().mean()
    loss = loss + model.hierarchicality(out).sum() + model.head_regularization()
    loss.backward()
    for name, p in model.equivariant.named_parameters():
        assert p.grad is not None and p.grad.dtype == dtype, name
        assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("heads", HEADS)
def test_hierarchical_terms_sum_to_energy(molecules, heads):
    model = _model(heads)
    data = batch_of(molecules)
    out = model(data)
    hier = out["hierarchical"]
    assert hier.shape == (4, data.num_nodes, 3)  # one-hot, 2 interaction blocks, equivariant block
    idx = torch.tensor([ELEMENTS.index(int(z)) for z in data.z])
    total = torch.zeros(4, 3).index_add(0, data.batch, hier.sum(0) + model.self_energies[:, idx].t())
    assert torch.allclose(total, out["energy"], rtol=1e-14, atol=1e-9)
    assert hier[3].abs().max() > 1e-3  # the block's own term is not empty
    e2 = hier.square()
    assert torch.allclose(model.hierarchicality(out), (e2[1:] / (e2[1:] + e2[:-1] + 1e-12)).sum(0).mean(0))


def test_float32_matches_float64(molecules):
    model = _model("tethered", layers=2)
    data = batch_of(molecules)
    e64 = model(data, forces=True)
    m32 = copy.deepcopy(model).float()
    data32 = batch_of(molecules)
    data32.pos = data32.pos.float()
    e32 = m32(data32, forces=True)
    assert e32["energy"].dtype == torch.float64 and e32["forces"].dtype == torch.float32
    assert (e32["energy"] - e64["energy"]).abs().max() < 1e-3
    scale = e64["forces"].abs().max()
    assert scale > 1.0 and (e32["forces"].double() - e64["forces"]).abs().max() < 1e-5 * scale


def test_isolated_atoms_have_no_edges_and_finite_outputs():
    model = _model()
    lone = Batch.from_data_list([Data(z=torch.tensor([8]), pos=torch.tensor([[0.3, -1.0, 2.0]])),
                                 Data(z=torch.tensor([1]), pos=torch.tensor([[40.0, 0.0, 0.0]]))])
    out = model(lone, forces=True)
    assert torch.isfinite(out["energy"]).all() and torch.equal(out["forces"], torch.zeros(2, 3, 3))


@pytest.mark.parametrize("position", ["after", "before"])
def test_save_load_round_trip_predicts_identically(molecules, tmp_path, position):
    model = _model("delta", position=position, layers=2)
    hp = json.loads(json.dumps(model.hparams()))
    assert hp["config"]["equivariant"] == {"lmax": 2, "channels": 4, "layers": 2, "position": position,
                                           "radial_hidden": 8, "avg_neighbors": 16.0}
    save_model(tmp_path / "model.pt", model, {f: ["energy"] for f in FIDELITIES})
    loaded = load_model(tmp_path, dtype=torch.float64)
    assert loaded.config == model.config and isinstance(loaded.config.equivariant, EquivariantConfig)
    data = batch_of(molecules)
    a, b = model(data, forces=True), loaded(data, forces=True)
    assert torch.equal(a["energy"], b["energy"]) and torch.equal(a["forces"], b["forces"])
    assert torch.equal(a["hierarchical"], b["hierarchical"])


def test_bad_equivariant_config_raises_config_error_naming_the_key():
    with pytest.raises(ConfigError, match=r"model\.equivariant: unknown key 'chanels'; did you mean 'channels'"):
        HIPNNConfig.from_dict({"equivariant": {"lmax": 2, "chanels": 8}})
    run = {"data": "spec.yaml", "labels": {"mp2": ["energy"]},
           "model": {"equivariant": {"lmax": 2, "channels": 8, "layer": 2}}}
    with pytest.raises(ConfigError, match=r"unknown key 'layer'; did you mean 'layers'"):
        config_from_dict(run)
    with pytest.raises(ConfigError, match=r"model\.equivariant\.lmax must be 1, 2 or 3, got 5"):
        HIPNNConfig(equivariant={"lmax": 5})
    with pytest.raises(ConfigError, match=r"model\.equivariant: unknown position 'middle'"):
        HIPNNConfig(equivariant={"position": "middle"})
    with pytest.raises(ConfigError, match=r"model\.equivariant\.channels must be an integer >= 1, got 0"):
        HIPNNConfig(equivariant={"channels": 0})
    with pytest.raises(ConfigError, match=r"model\.equivariant must be a mapping"):
        HIPNNConfig(equivariant=[2, 32])
    good = config_from_dict({"data": "spec.yaml", "labels": {"mp2": ["energy"]},
                             "model": {"equivariant": {"lmax": 1, "channels": 8}}})
    assert good.model.equivariant == EquivariantConfig(lmax=1, channels=8)
    assert good.to_dict()["model"]["equivariant"]["position"] == "after"
