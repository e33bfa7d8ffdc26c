"""Learned task weights (``loss.weighting: uncertainty``, seed paper 000 Eq. 1):
L = Σ_t L_t / (2 σ_t²) + log σ_t with trained s_t = log σ_t; ``fixed`` is unchanged."""

from __future__ import annotations

import csv
import math

import pytest
import torch
from torch_geometric.data import Batch, Data

from mfgnn.config import config_from_dict
from mfgnn.errors import ConfigError
from mfgnn.loss import LossConfig, MultiFidelityLoss, TaskWeights
from mfgnn.training.build import build_trainer
from mfgnn.training.setup import setup_run
from mfgnn.training.trainer import Trainer

LABELS = {"lo": ["energy", "forces"], "hi": ["energy"]}


def _batch(energy, forces):
    """Two structures of 2 atoms each with (2, F) energies and (4, F, 3) forces."""
    return Batch.from_data_list([
        Data(z=torch.tensor([1, 8]), pos=torch.zeros(2, 3), energy=energy[b:b + 1],
             forces=forces[2 * b:2 * b + 2]) for b in range(2)])


def _outputs():
    energy = torch.tensor([[1.0, 2.0], [3.0, 5.0]], dtype=torch.float64)
    forces = torch.arange(24, dtype=torch.float32).reshape(4, 2, 3).div(10)
    return {"energy": energy, "forces": forces}


def _rmse_mae(x):
    x = x.double()
    return float(x.square().mean().sqrt() + x.abs().mean())


def _hand_terms(out, level_forces: bool):
    """L_lo, L_hi (w_E,hi = 2, w_F = 0.5; zero labels) and the level-force prior term."""
    l_lo = _rmse_mae(out["energy"][:, 0]) + 0.5 * _rmse_mae(out["forces"][:, 0])
    l_hi = 2.0 * _rmse_mae(out["energy"][:, 1])
    prior = _rmse_mae(out["forces"][:, 1] - out["forces"][:, 0]) if level_forces else 0.0
    return l_lo, l_hi, prior


def _config(weighting):
    return LossConfig(energy_weight={"hi": 2.0}, forces_weight=0.5,
                      hierarchicality_weight=0.1, level_force_weight=0.3,
                      weighting=weighting)


def _zero_batch():
    return _batch(torch.zeros(2, 2, dtype=torch.float64), torch.zeros(4, 2, 3))


def test_default_is_fixed_and_unknown_weighting_is_refused():
    assert LossConfig().weighting == "fixed"
    assert MultiFidelityLoss(["lo", "hi"], LABELS).task_weights is None
    assert list(MultiFidelityLoss(["lo", "hi"], LABELS).parameters()) == []
    with pytest.raises(ConfigError, match="loss.weighting.*uncertainty"):
        LossConfig(weighting="uncertainly")


def test_fixed_weighting_equals_the_hand_computed_loss():
    loss = MultiFidelityLoss(["lo", "hi"], LABELS, _config("fixed"))
    out = _outputs()
    h, reg = torch.tensor([0.5, 0.25]), torch.tensor(0.125, dtype=torch.float64)
    total = loss(out, _zero_batch(), hierarchicality=h, regularization=reg).total
    l_lo, l_hi, prior = _hand_terms(out, level_forces=True)
    expected = l_lo * (1 + 0.1 * 0.5) + l_hi * (1 + 0.1 * 0.25) + 0.3 * prior + 0.125
    assert float(total) == pytest.approx(expected, rel=1e-6)


def test_uncertainty_weighting_value_and_gradient_for_given_sigma():
    loss = MultiFidelityLoss(["lo", "hi"], LABELS, _config("uncertainty"))
    weights = loss.task_weights
    assert isinstance(weights, TaskWeights) and weights.fidelities == ("lo", "hi")
    assert weights.sigmas() == {"lo": 1.0, "hi": 1.0}
    s = torch.tensor([0.3, -0.7], dtype=torch.float64)
    with torch.no_grad():
        weights.log_sigma.copy_(s)
    out = _outputs()
    h, reg = torch.tensor([0.5, 0.25]), torch.tensor(0.125, dtype=torch.float64)
    total = loss(out, _zero_batch(), hierarchicality=h, regularization=reg).total
    assert total.requires_grad
    l_lo, l_hi, prior = _hand_terms(out, level_forces=True)
    sigma2 = torch.exp(2 * s).tolist()
    expected = (l_lo / (2 * sigma2[0]) + 0.3 + l_hi / (2 * sigma2[1]) - 0.7
                + 0.1 * (0.5 * l_lo + 0.25 * l_hi)   # hierarchicality: sg(L_t), unweighted
                + 0.3 * prior + 0.125)               # level-force prior, regulariser
    assert float(total.detach()) == pytest.approx(expected, rel=1e-6)
    total.backward()
    grad = weights.log_sigma.grad.tolist()
    assert grad[0] == pytest.approx(1 - l_lo / sigma2[0], rel=1e-6)
    assert grad[1] == pytest.approx(1 - l_hi / sigma2[1], rel=1e-6)


def test_unlabelled_fidelity_adds_neither_its_error_nor_log_sigma():
    loss = MultiFidelityLoss(["lo", "hi"], {"lo": ["energy"], "hi": ["energy"]},
                             LossConfig(hierarchicality_weight=0.0, weighting="uncertainty"))
    with torch.no_grad():
        loss.task_weights.log_sigma.fill_(0.5)
    energy = torch.tensor([[0.0, float("nan")], [0.0, float("nan")]], dtype=torch.float64)
    out = {"energy": torch.tensor([[3.0, 7.0], [4.0, 9.0]], dtype=torch.float64)}
    total = loss(out, _batch(energy, torch.zeros(4, 2, 3))).total
    l_lo = math.sqrt(12.5) + 3.5
    assert float(total.detach()) == pytest.approx(l_lo / (2 * math.exp(1.0)) + 0.5,
                                                  rel=1e-12)
    total.backward()
    assert float(loss.task_weights.log_sigma.grad[1]) == 0.0


def test_sigma_squared_moves_to_each_task_loss():
    """Two tasks with fixed losses of very different scale: Adam on s_t alone drives
    σ_t² to the optimum L_t of L/(2σ²) + log σ."""
    weights = TaskWeights(["small", "large"])
    values = {"small": torch.tensor(0.01, dtype=torch.float64),
              "large": torch.tensor(100.0, dtype=torch.float64)}
    optimizer = torch.optim.Adam(weights.parameters(), lr=0.05)
    for _ in range(1500):
        optimizer.zero_grad()
        sum(weights(name, value) for name, value in values.items()).backward()
        optimizer.step()
    sigma = weights.sigmas()
    assert sigma["small"] ** 2 == pytest.approx(0.01, rel=0.02)
    assert sigma["large"] ** 2 == pytest.approx(100.0, rel=0.02)


def test_trainer_refuses_task_weights_outside_the_optimiser():
    """A recipe that builds its own optimiser (e.g. fine-tuning) fails loudly rather
    than training with σ_t frozen at 1."""
    model = torch.nn.Linear(2, 2)
    loss = MultiFidelityLoss(["lo", "hi"], LABELS, LossConfig(weighting="uncertainty"))
    with pytest.raises(ConfigError, match="task weights"):
        Trainer(model, loss, torch.optim.Adam(model.parameters()), None, None, None, None)
    both = torch.optim.Adam([{"params": model.parameters()},
                             {"params": loss.parameters(), "weight_decay": 0.0}])
    Trainer(model, loss, both, None, None, None, None)


# ---------------------------------------------------------------- tiny real training
TINY_MODEL = {"n_features": 8, "n_interactions": 1, "n_atom_layers": 1,
              "n_sensitivities": 6, "tensor_order": 0}


@pytest.fixture()
def spec(h2co_spec):
    return h2co_spec


def _run_config(spec, epochs):
    return config_from_dict({
        "data": str(spec),
        "labels": {"mp2": ["energy", "forces"], "f12": ["energy"]},
        "split": {"train": 48, "valid": 8, "test": 8, "seed": 1},
        "model": TINY_MODEL,
        "loss": {"weighting": "uncertainty"},
        "train": {"max_epochs": epochs, "batch_size": 16, "lr": 1e-2, "seed": 0,
                  "weight_decay": 1e-3, "optimizer": "adamw"},
    })


def _rows(path):
    with open(path / "metrics.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def test_training_learns_logs_and_resumes_sigma(spec, tmp_path):
    full = build_trainer(setup_run(_run_config(spec, 3)), tmp_path / "full", log=None)
    group = full.optimizer.param_groups[-1]
    assert group["params"] == [full.loss_fn.task_weights.log_sigma]
    assert group["weight_decay"] == 0.0 and len(full.optimizer.param_groups) == 2
    full.fit()
    rows = _rows(tmp_path / "full")
    print({k: [row[k] for row in rows] for k in ("sigma_mp2", "sigma_f12", "valid_loss")})
    assert len(rows) == 3
    for name in ("sigma_mp2", "sigma_f12"):
        values = [float(row[name]) for row in rows]
        assert all(math.isfinite(v) and v > 0 for v in values)
        assert abs(values[-1] - 1.0) > 1e-3, (name, values)

    part = build_trainer(setup_run(_run_config(spec, 2)), tmp_path / "part", log=None)
    part.fit()
    resumed = build_trainer(setup_run(_run_config(spec, 3), tmp_path / "part"),
                            tmp_path / "part", resume=True, log=None)
    assert resumed.epoch == 2
    assert resumed.loss_fn.task_weights.sigmas() == part.loss_fn.task_weights.sigmas()
    resumed.fit()
    for key in ("train_loss", "valid_loss", "sigma_mp2", "sigma_f12"):
        a = [row[key] for row in full.history]
        b = [row[key] for row in resumed.history]
        assert a == pytest.approx(b, rel=1e-9, abs=0), key
