"""Training on data far from equilibrium: target scales inside the model, a ZBL prior,
sensitivity ranges from the data, a schedule that spends the budget, and errors binned
by energy above the minimum (on the shared wide-range H2O2 RHF/MP2 set)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from _symmetry import assert_forces_are_minus_energy_gradient
from torch_geometric.data import Batch, Data

from mfgnn.config import config_from_dict
from mfgnn.loss import LossConfig, MultiFidelityLoss
from mfgnn.model_file import load_model
from mfgnn.nn import MultiFidelityHIPNN
from mfgnn.nn.zbl import ZBLRepulsion
from mfgnn.training.build import build_trainer
from mfgnn.training.evaluation import evaluate_run
from mfgnn.training.setup import setup_run

TINY = {"n_features": 8, "n_interactions": 1, "n_atom_layers": 1, "n_sensitivities": 6,
        "tensor_order": 0}


@pytest.fixture()
def widerange(tmp_path, shared_data):
    path = shared_data / "widerange" / "h2o2_hf_mp2.npz"
    spec = tmp_path / "h2o2.yaml"
    spec.write_text("fidelities:\n" + "".join(
        f"  {lvl}: {{path: {path}, energy_unit: eV, keys: {{positions: R, numbers: Z, "
        f"energy: E_{lvl}, forces: F_{lvl}}}}}\n" for lvl in ("hf", "mp2")))
    return spec


def _values(spec, model=None, train=None, labels=None):
    return {"data": str(spec),
            "labels": labels or {"hf": ["energy", "forces"], "mp2": ["energy"]},
            "split": {"train": 200, "valid": 40, "test": 300, "seed": 0},
            "model": {**TINY, **(model or {})},
            "train": {"max_epochs": 2, "batch_size": 20, "lr": 3e-3, **(train or {})}}


def _h2o2(seed=0):
    rng = np.random.default_rng(seed)
    pos = torch.tensor([[0.0, 0.9, 0.1], [0.0, 0.0, 0.0], [1.45, 0.0, 0.0], [1.5, 0.9, -0.2]],
                       dtype=torch.float64) + 0.05 * torch.from_numpy(rng.standard_normal((4, 3)))
    return Data(z=torch.tensor([1, 8, 8, 1]), pos=pos)


def test_target_scales_enter_the_energy_as_documented():
    """E_t = Σε_t + N μ_t + σ_t Ê_t, and forces scale with σ_t."""
    torch.manual_seed(0)
    model = MultiFidelityHIPNN(TINY, ["lo", "hi"], [1, 8], torch.tensor([[-0.5, -75.0],
                                                                       [-0.6, -75.1]], dtype=torch.float64)).double()
    batch = Batch.from_data_list([_h2o2(0), _h2o2(1)])
    plain = model(batch, forces=True)
    reference = torch.tensor([2 * -0.5 + 2 * -75.0, 2 * -0.6 + 2 * -75.1], dtype=torch.float64)
    model.set_target_scales([0.25, -0.1], [3.0, 7.0])
    scaled = model(batch, forces=True)
    mu = torch.tensor([0.25, -0.1], dtype=torch.float64)
    sigma = torch.tensor([3.0, 7.0], dtype=torch.float64)
    expected = reference + 4 * mu + sigma * (plain["energy"] - reference)
    assert torch.allclose(scaled["energy"], expected, rtol=1e-12, atol=1e-10)
    assert torch.allclose(scaled["forces"], plain["forces"] * sigma[None, :, None], rtol=1e-10)
    with pytest.raises(Exception, match="positive"):
        model.set_target_scales([0.0, 0.0], [1.0, -1.0])
    # kept in float64 and in the model file's weights
    assert model.float().target_scale.dtype == torch.float64


def test_zbl_prior_adds_the_pair_repulsion_and_keeps_forces_exact():
    torch.manual_seed(0)
    with_zbl = MultiFidelityHIPNN({**TINY, "zbl": True, "zbl_inner": 0.6, "zbl_outer": 1.0},
                                  ["lo", "hi"], [1, 8]).double()
    without = MultiFidelityHIPNN(TINY, ["lo", "hi"], [1, 8]).double()
    without.load_state_dict(with_zbl.state_dict())
    close = _h2o2(0)
    close.pos[0] = close.pos[1] + torch.tensor([0.45, 0.3, 0.0], dtype=torch.float64)  # 0.54 Å O–H
    batch = Batch.from_data_list([close, _h2o2(2)])
    diff = with_zbl(batch)["energy"] - without(batch)["energy"]
    zbl = ZBLRepulsion(0.6, 1.0)(batch.z, batch.pos, with_zbl.edges(batch, batch.pos),
                                 batch.batch, 2)
    assert torch.allclose(diff, zbl[:, None].expand_as(diff), rtol=1e-12, atol=1e-12)
    assert float(zbl[0]) > 1.0  # a 0.54 Å O–H contact repels by more than an eV
    assert_forces_are_minus_energy_gradient(with_zbl, batch, atoms=range(4), h=1e-5)


def test_loss_in_units_of_the_target_scale():
    labels = {"lo": ["energy", "forces"]}
    cfg = LossConfig(hierarchicality_weight=0.0)
    batch = Batch.from_data_list([_h2o2(0)])
    batch.energy = torch.tensor([[1.0]], dtype=torch.float64)
    batch.forces = torch.ones(4, 1, 3)
    out = {"energy": torch.tensor([[3.0]], dtype=torch.float64), "forces": torch.zeros(4, 1, 3)}
    plain = MultiFidelityLoss(["lo"], labels, cfg)(out, batch).total
    scaled = MultiFidelityLoss(["lo"], labels, cfg, scales=torch.tensor([4.0]))(out, batch).total
    assert float(plain) == pytest.approx(2 * 2.0 + 2 * 1.0)
    assert float(scaled) == pytest.approx(float(plain) / 4.0)


def test_setup_fits_scales_on_trained_labels_and_chooses_the_range(widerange):
    with pytest.warns(UserWarning, match=r"closer than soft_min = 0.750 Å.*closest is 0\.6"):
        setup_run(config_from_dict(_values(widerange)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an automatic range covers the data: no warning
        setup = setup_run(config_from_dict(_values(
            widerange, model={"scale_targets": True, "soft_min": "auto", "soft_max": "auto"})))
    model = setup.config.model
    assert 0.3 < model.soft_min < 0.6 < model.soft_max < model.cutoff
    rows = setup.split.train
    rms = float(np.sqrt(np.nanmean(np.concatenate(
        [setup.dataset[int(i)].forces[:, 0].double().numpy().ravel() for i in rows]) ** 2)))
    scales = setup.target_scales
    assert scales.scale.tolist() == pytest.approx([rms, rms], rel=1e-9)  # from HF forces only
    assert 5.0 < rms < 30.0  # wide-range forces: an order of magnitude above equilibrium sets
    assert any("sensitivity range chosen" in note for note in setup.notes)


def test_trained_model_file_keeps_scales_and_evaluate_bins_by_energy(widerange, tmp_path):
    values = _values(widerange, model={"scale_targets": True, "soft_min": "auto"})
    setup = setup_run(config_from_dict(values))
    trainer = build_trainer(setup, tmp_path / "run", log=None)
    trainer.fit()
    model = load_model(tmp_path / "run" / "model.pt")
    assert torch.equal(model.target_scale, trainer.model.target_scale.cpu())
    assert float(model.target_scale[0]) == pytest.approx(float(setup.target_scales.scale[0]))
    metrics = evaluate_run(tmp_path / "run")
    bins = metrics["mp2"]["by_energy"]
    assert len(bins) >= 3  # H2O2 test rows span 0 to > 10 eV above the minimum
    assert sum(b["n_structures"] for b in bins.values()) == 300
    assert {"forces_rmse", "forces_p99", "energy_rmse"} <= set(bins["0-2 eV"])
    assert metrics["mp2"]["forces_p99"] >= metrics["mp2"]["forces_mae"]


def test_budget_schedule_ends_at_min_lr_and_resumes_exactly(widerange, tmp_path):
    values = _values(widerange, train={"max_epochs": 4, "scheduler": "cosine", "warmup": 0.1,
                                       "min_lr": 1e-5, "patience": 100})
    full = build_trainer(setup_run(config_from_dict(values)), tmp_path / "full", log=None)
    full.fit()
    lrs = [row["lr"] for row in full.history]
    assert lrs[-1] == pytest.approx(1e-5) and lrs == sorted(lrs, reverse=True)

    class Killed(Exception):
        pass

    def kill_after_two(trainer, row):
        if trainer.epoch == 2:
            raise Killed

    part = build_trainer(setup_run(config_from_dict(values)), tmp_path / "part", log=None)
    part.callbacks.append(kill_after_two)
    with pytest.raises(Killed):
        part.fit()
    resumed = build_trainer(setup_run(config_from_dict(values), tmp_path / "part"),
                            tmp_path / "part", resume=True, log=None)
    resumed.fit()
    assert [r["valid_loss"] for r in resumed.history] == pytest.approx(
        [r["valid_loss"] for r in full.history], rel=1e-9, abs=0)
    assert [r["lr"] for r in resumed.history] == lrs


def test_level_force_prior_pulls_the_energy_only_level_toward_the_lower_levels_forces():
    labels = {"lo": ["energy", "forces"], "hi": ["energy"]}
    cfg = LossConfig(hierarchicality_weight=0.0, level_force_weight=0.5)
    loss = MultiFidelityLoss(["lo", "hi"], labels, cfg)
    batch = Batch.from_data_list([_h2o2(0)])
    batch.energy = torch.tensor([[1.0, 2.0]], dtype=torch.float64)
    batch.forces = torch.full((4, 2, 3), float("nan"))
    assert loss.needs_forces(batch) == []  # no low-level force label: no extra pass
    batch.forces[:3, 0] = 0.0  # low-level forces on three atoms
    assert loss.needs_forces(batch) == ["lo", "hi"]
    f_lo = torch.zeros(4, 3, requires_grad=True)
    f_hi = torch.full((4, 3), 2.0, requires_grad=True)
    out = {"energy": torch.tensor([[1.0, 2.0]], dtype=torch.float64),
           "forces": torch.stack([f_lo, f_hi], dim=1)}
    terms = loss(out, batch)
    # prior: 0.5 · (RMSE + MAE) of F_hi − F_lo over the 3 labelled atoms = 0.5 · (2 + 2)
    assert terms.level_forces == {"hi": pytest.approx(4.0)}
    assert float(terms.total) == pytest.approx(2.0)
    terms.total.backward()
    assert f_lo.grad.abs().sum() == 0  # the lower level is the anchor, not pulled
    assert f_hi.grad[:3].abs().sum() > 0 and f_hi.grad[3].abs().sum() == 0
    off = MultiFidelityLoss(["lo", "hi"], labels, LossConfig(hierarchicality_weight=0.0))
    assert off.needs_forces(batch) == ["lo"] and off.level_force_pairs() == []


def test_automatic_soft_min_only_lowers_the_default(shared_data, h2co_spec):
    """Near equilibrium (H2CO, closest pairs about 0.97 Å) auto keeps 0.75 Å; far from it
    (H2O2, pairs to 0.60 Å) it goes below the closest training pairs."""
    values = _values(h2co_spec, model={"soft_min": "auto"},
                     labels={"mp2": ["energy", "forces"]})
    assert setup_run(config_from_dict(values)).config.model.soft_min == 0.75
