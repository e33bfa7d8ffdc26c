"""Closed-form refit of energy-only heads (mfgnn.training.head_refit) on the real H2CO data."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from mfgnn.config import config_from_dict
from mfgnn.data import load_dataset
from mfgnn.errors import ConfigError
from mfgnn.model_file import load_model
from mfgnn.nn import MultiFidelityHIPNN
from mfgnn.training.batches import BatchSource
from mfgnn.training.build import build_trainer
from mfgnn.training.head_refit import energy_only_levels, refit_energy_heads
from mfgnn.training.setup import setup_run

MODEL = {"n_features": 16, "n_interactions": 1, "n_atom_layers": 1, "n_sensitivities": 8,
         "tensor_order": 1}


class Relabelled:
    """Batches of ``source`` whose column ``t`` energies are ``teacher``'s (+ noise)."""

    def __init__(self, source, teacher, t, noise=0.0, seed=0):
        self.source, self.teacher, self.t = source, teacher, t
        self.noise, self.seed = noise, seed

    def __call__(self):
        gen = torch.Generator().manual_seed(self.seed)
        for batch in self.source.batches():
            batch = batch.clone()
            with torch.no_grad():
                energy = self.teacher(batch)["energy"][:, self.t]
            batch.energy[:, self.t] = energy + self.noise * torch.randn(
                energy.shape, generator=gen, dtype=energy.dtype)
            yield batch


@pytest.fixture()
def h2co(h2co_spec):
    return load_dataset(h2co_spec, cutoff=6.5)


def _model(dataset, mode):
    torch.manual_seed(0)
    return MultiFidelityHIPNN({**MODEL, "heads": mode}, ("mp2", "f12", "extra"),
                              dataset.elements).double()


def _sources(dataset):
    columns = [0, 1, None]
    return (BatchSource(dataset, range(0, 300), columns, 64),
            BatchSource(dataset, range(300, 400), columns, 64))


def _outputs(model, source):
    energies, forces = [], []
    for batch in source.batches():
        out = model(batch, forces=True)
        energies.append(out["energy"])
        forces.append(out["forces"])
    return torch.cat(energies), torch.cat(forces)


@pytest.mark.parametrize("mode", ["independent", "delta", "tethered"])
def test_refit_recovers_a_linear_teacher_and_leaves_other_levels(h2co, mode, one_thread):
    """Labels made by the same trunk with other f12 head weights are fitted exactly, forces
    included, and the mp2 and higher level outputs do not move."""
    model = _model(h2co, mode)
    teacher = copy.deepcopy(model)
    with torch.no_grad():
        for lin in teacher.heads.linears:
            lin.weight[1] += 0.05 * torch.randn(lin.weight.shape[1], dtype=lin.weight.dtype)
    train, valid = _sources(h2co)
    before_e, before_f = _outputs(model, valid)
    target_e, target_f = _outputs(teacher, valid)
    gap = (before_e[:, 1] - target_e[:, 1]).abs().max()
    assert gap > 1e-3  # the teacher really differs
    reports = refit_energy_heads(model, Relabelled(train, teacher, 1),
                                 Relabelled(valid, teacher, 1), ["f12"])
    assert [r.fidelity for r in reports] == ["f12"] and reports[0].lam is not None
    assert reports[0].valid_rmse_after < 0.01 * reports[0].valid_rmse_before
    after_e, after_f = _outputs(model, valid)
    assert (after_e[:, 1] - target_e[:, 1]).abs().max() < 1e-3 * gap
    # forces follow from the same weights; directions the energies barely see are only
    # pinned down by the ridge, so they come within a few per cent, not exactly
    force_gap = (before_f[:, 1] - target_f[:, 1]).norm()
    assert (after_f[:, 1] - target_f[:, 1]).norm() < 0.05 * force_gap, (
        reports, float((after_f[:, 1] - target_f[:, 1]).norm() / force_gap))
    for t in (0, 2):
        assert torch.allclose(after_e[:, t], before_e[:, t], rtol=0, atol=1e-9)
        assert torch.allclose(after_f[:, t], before_f[:, t], atol=1e-12)


def test_noise_only_labels_keep_the_trained_head(h2co, one_thread):
    """When the labels differ from the model by noise unrelated to the features, no refit
    beats the trained head on validation rows: it is kept, weights untouched."""
    model = _model(h2co, "delta")
    weights = [lin.weight.detach().clone() for lin in model.heads.linears]
    train, valid = _sources(h2co)
    reports = refit_energy_heads(model, Relabelled(train, model, 1, noise=0.01, seed=1),
                                 Relabelled(valid, model, 1, noise=0.01, seed=2), ["f12"])
    assert reports[0].lam is None
    assert reports[0].valid_rmse_after == reports[0].valid_rmse_before
    assert all(torch.equal(a, lin.weight) for a, lin in zip(weights, model.heads.linears))


def test_levels_with_forces_are_not_refitted():
    assert energy_only_levels({"mp2": ["energy", "forces"], "f12": ["energy"],
                               "dz": ["forces"]}) == ["f12"]


def _config(spec, refit):
    return config_from_dict({
        "data": str(spec), "labels": {"mp2": ["energy", "forces"], "f12": ["energy"]},
        "split": {"train": 96, "valid": 32, "test": 32, "seed": 1},
        "model": {**MODEL, "heads": "delta"},
        "train": {"max_epochs": 2, "batch_size": 16, "lr": 3e-3, "seed": 0,
                  "refit_energy_heads": refit}})


def test_training_run_refits_saves_and_reports(h2co_spec, tmp_path, one_thread):
    """With ``train.refit_energy_heads`` the saved model is the refitted one: its
    validation energy error is the one reported in head_refit.json, below the plain
    run's, and the MP2 level (trained with forces) is identical to the plain run's."""
    runs = {}
    for refit in (False, True):
        trainer = build_trainer(setup_run(_config(h2co_spec, refit)), tmp_path / str(refit),
                                log=None)
        trainer.fit()
        runs[refit] = trainer
    report = json.loads((tmp_path / "True" / "head_refit.json").read_text())
    assert [r["fidelity"] for r in report] == ["f12"]
    assert not (tmp_path / "False" / "head_refit.json").exists()
    plain, refitted = (load_model(tmp_path / str(k) / "model.pt") for k in (False, True))
    valid = runs[True].data.valid

    def f12_rmse(model):
        errors = []
        for batch in valid.batches():
            with torch.no_grad():
                errors.append(model(batch)["energy"][:, 1] - batch.energy[:, 1].double())
        return 1e3 * float(torch.cat(errors).square().mean().sqrt())

    assert f12_rmse(refitted) == pytest.approx(report[0]["valid_rmse_after"], rel=1e-4)
    assert f12_rmse(plain) == pytest.approx(report[0]["valid_rmse_before"], rel=1e-4)
    assert report[0]["lam"] is not None and f12_rmse(refitted) < 0.95 * f12_rmse(plain)
    batch = next(iter(valid.batches()))
    e_plain, e_refit = plain(batch)["energy"], refitted(batch)["energy"]
    assert torch.equal(e_plain[:, 0], e_refit[:, 0])
    assert not torch.allclose(e_plain[:, 1], e_refit[:, 1])


def test_refit_flag_must_be_boolean(h2co_spec):
    with pytest.raises(ConfigError, match="train.refit_energy_heads"):
        _config(h2co_spec, "yes")
