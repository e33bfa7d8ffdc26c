"""``loss.energy_only_trunk_gradient``: how much an energy-only level's energies train the
shared trunk (the single-run form of the ``frozen`` paradigm at 0)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch_geometric.data import Batch, Data

from mfgnn.config import config_from_dict
from mfgnn.errors import ConfigError
from mfgnn.loss import LossConfig, MultiFidelityLoss
from mfgnn.nn import MultiFidelityHIPNN
from mfgnn.training.build import build_trainer
from mfgnn.training.setup import setup_run

TINY = {"n_features": 8, "n_interactions": 1, "n_atom_layers": 1, "n_sensitivities": 6,
        "tensor_order": 1, "n_tensor_channels": 4}


def _batch():
    rng = np.random.default_rng(0)
    structures = []
    for _ in range(3):
        pos = torch.tensor([[0.0, 0.9, 0.1], [0.0, 0.0, 0.0], [1.45, 0.0, 0.0], [1.5, 0.9, -0.2]],
                           dtype=torch.float64) + 0.05 * torch.from_numpy(rng.standard_normal((4, 3)))
        structures.append(Data(z=torch.tensor([1, 8, 8, 1]), pos=pos))
    return Batch.from_data_list(structures)


def _gradients(model, share):
    """Gradients of Σ E_hi (column 1) with column 1 damped by ``share``."""
    model.zero_grad(set_to_none=True)
    out = model(_batch(), trunk_gradient={1: share}, training=True)
    out["energy"][:, 1].sum().backward()
    return out["energy"].detach(), {n: (p.grad.clone() if p.grad is not None else torch.zeros_like(p))
                                    for n, p in model.named_parameters()}


@pytest.mark.parametrize("mode", ["independent", "delta"])
def test_damping_scales_the_trunk_gradient_and_leaves_values_and_head_gradients(mode):
    torch.manual_seed(0)
    model = MultiFidelityHIPNN({**TINY, "heads": mode}, ["lo", "hi"], [1, 8]).double()
    with torch.no_grad():  # delta heads start with zero corrections: give them some
        for lin in model.heads.linears:
            lin.weight.add_(0.1 * torch.randn_like(lin.weight))
    e_full, g_full = _gradients(model, 1.0)
    for share in (0.25, 0.0):
        e, g = _gradients(model, share)
        assert torch.allclose(e, e_full, rtol=0, atol=1e-12)
        trunk = [n for n in g if not n.startswith("heads.")]
        assert trunk and any(g_full[n].abs().max() > 0 for n in trunk)
        for name in trunk:
            assert torch.allclose(g[name], share * g_full[name], atol=1e-12), name
        for name in (n for n in g if n.startswith("heads.")):
            assert torch.allclose(g[name], g_full[name], atol=1e-12), name
    # the low level's column is not damped: its gradient reaches the trunk in full
    model.zero_grad(set_to_none=True)
    model(_batch(), trunk_gradient={1: 0.0}, training=True)["energy"][:, 0].sum().backward()
    assert model.trunk()[0].interaction.int_weights.grad.abs().max() > 0


def test_config_range_and_the_energy_only_levels():
    labels = {"lo": ["energy", "forces"], "mid": ["energy", "forces"], "hi": ["energy"]}
    loss = MultiFidelityLoss(["lo", "mid", "hi"], labels, LossConfig(energy_only_trunk_gradient=0.3))
    assert loss.trunk_gradient() == {2: 0.3}
    assert MultiFidelityLoss(["lo", "mid", "hi"], labels).trunk_gradient() == {}
    for bad in (-0.1, 1.5, "half"):
        with pytest.raises(ConfigError, match="energy_only_trunk_gradient"):
            LossConfig(energy_only_trunk_gradient=bad)
    with pytest.raises(ConfigError, match="level_force_weight"):
        LossConfig(energy_only_trunk_gradient=0.5, level_force_weight=0.1)


def _trained_state(spec, labels, share, out, start=None):
    """(initial, final) parameters of a short run; ``start``: initial parameters to
    load first (a model with fewer levels takes the leading rows of the heads)."""
    values = {"data": str(spec), "labels": labels,
              "split": {"train": 120, "valid": 30, "test": 30, "seed": 0},
              "model": {**TINY, "zbl": False},
              "loss": {"hierarchicality_weight": 0.0, "energy_only_trunk_gradient": share},
              "train": {"max_epochs": 2, "batch_size": 20, "lr": 3e-3, "grad_clip": 0.0,
                        "scheduler": "cosine", "warmup": 0.0, "ema_decay": 0.0,
                        "seed": 0, "device": "cpu"}}
    trainer = build_trainer(setup_run(config_from_dict(values)), out)
    with torch.no_grad():
        for name, p in trainer.model.named_parameters():
            if start is not None:
                p.copy_(start[name][:p.shape[0]])
    init = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.fit()
    return init, {n: p.detach().clone() for n, p in trainer.model.named_parameters()}


def test_at_zero_the_trunk_trains_as_without_the_energy_only_level(h2co_spec, tmp_path):
    """Real H2CO, MP2 energies + forces and F12 energies: with the share 0, every trunk
    parameter ends where a run without the F12 labels ends; the F12 head trained."""
    spec = h2co_spec
    init, both = _trained_state(spec, {"mp2": ["energy", "forces"], "f12": ["energy"]}, 0.0,
                                tmp_path / "both")
    # without F12 labels the model has only the MP2 head: it starts as the row above
    _, low_only = _trained_state(spec, {"mp2": ["energy", "forces"]}, 0.0, tmp_path / "low",
                                 start=init)
    _, joint = _trained_state(spec, {"mp2": ["energy", "forces"], "f12": ["energy"]}, 1.0,
                              tmp_path / "joint")
    trunk = [n for n in both if not n.startswith("heads.")]
    for name in trunk:
        assert torch.allclose(both[name], low_only[name], rtol=0, atol=1e-6), name
    for name in (n for n in both if n.startswith("heads.")):  # the MP2 head too
        assert torch.allclose(both[name][0], low_only[name][0], rtol=0, atol=1e-6), name
    assert max(float((joint[n] - low_only[n]).abs().max()) for n in trunk) > 1e-4
    f12_rows = [both[n][1] - init[n][1] for n in both if n.startswith("heads.")]
    assert max(float(d.abs().max()) for d in f12_rows) > 1e-3
