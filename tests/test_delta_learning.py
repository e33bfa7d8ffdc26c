"""Δ-learning as a recipe (:mod:`mfgnn.training.delta`, :mod:`mfgnn.nn.delta_model`): a
low-level model plus a model of E_high − E_low, saved as one model file that
``load_model``, evaluation and the ASE calculator use like any other (shared H2CO data:
MP2 low, CCSD(T)-F12 high; 64-row copies with some labels removed)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml
from _symmetry import assert_forces_are_minus_energy_gradient
from ase import Atoms
from torch_geometric.data import Batch, Data

import mfgnn
from mfgnn.calculator import MFGNNCalculator
from mfgnn.config import config_from_dict
from mfgnn.data import load_dataset
from mfgnn.errors import CheckpointError, ConfigError, ModelError
from mfgnn.experiment.predict import predict
from mfgnn.model_file import load_model, read_model_file, save_model, state_digest
from mfgnn.nn import MultiFidelityHIPNN
from mfgnn.nn.delta_model import DeltaLearningModel
from mfgnn.training.delta import (DeltaConfig, Residuals, residual_labels, train_delta,
                                  write_residual_data)
from mfgnn.training.evaluation import evaluate_run

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = {"n_features": 8, "n_interactions": 1, "n_atom_layers": 1, "n_sensitivities": 6,
        "tensor_order": 0}
N_ROWS = 64
NO_HIGH = [3, 10, 50]          # rows without the f12 energy (and forces)
NO_LOW = [5, 20]               # rows without the mp2 energy (and forces)
NO_HIGH_FORCES = [7]           # f12 energy but no f12 forces
NO_LOW_FORCES = [9]            # mp2 energy but no mp2 forces


@pytest.fixture(scope="module")
def spec(tmp_path_factory, shared_data):
    """A spec of 64-row copies of the H2CO MP2 (low) and F12 (high) files, with some
    energies and forces removed (NaN)."""
    folder = tmp_path_factory.mktemp("data")
    source = shared_data / "mp2_ccsdt"
    for name, stem, no_e, no_f in (("mp2", "ch2o_mp2_avtz_3601", NO_LOW, NO_LOW_FORCES),
                                   ("f12", "ch2o_ccf12_avtz_3601", NO_HIGH, NO_HIGH_FORCES)):
        raw = np.load(source / f"{stem}.npz")
        arrays = {k: raw[k][:N_ROWS].copy() for k in ("R", "Z", "E", "F")}
        arrays["E"][no_e] = np.nan
        arrays["F"][no_e + no_f] = np.nan
        np.savez(folder / f"{name}.npz", **arrays)
    path = folder / "h2co.yaml"
    path.write_text(f"fidelities:\n  mp2: {{path: {folder / 'mp2.npz'}}}\n"
                    f"  f12: {{path: {folder / 'f12.npz'}}}\n")
    return path


@pytest.fixture(scope="module")
def dataset(spec):
    return load_dataset(str(spec), cutoff=6.5)


def _config(spec, labels=None, **train):
    return config_from_dict({
        "data": str(spec), "labels": labels or {"mp2": ["energy", "forces"], "f12": ["energy"]},
        "split": {"train": 40, "valid": 12, "test": 12, "seed": 1}, "model": TINY,
        "train": {"max_epochs": 2, "batch_size": 16, "lr": 3e-3, **train}})


@pytest.fixture(scope="module")
def run(tmp_path_factory, spec):
    """One trained Δ-learning run (2 epochs per step on 40 structures)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = tmp_path_factory.mktemp("delta") / "run"
        metrics = train_delta(_config(spec, max_time=600.0), "mp2", "f12", out, log=None,
                              options={"low_share": 0.25})
    finally:
        torch.set_num_threads(before)
    return out, metrics


def _tiny(fidelity, seed, **changes):
    torch.manual_seed(seed)
    # small self-energies: central differences of E lose no digits to a large constant
    se = torch.tensor([[-0.5, -1.0, -2.0]], dtype=torch.float64) * (1 + 0.1 * seed)
    return MultiFidelityHIPNN({**TINY, **changes}, [fidelity], [1, 6, 8], se)


def _batch(dataset, rows, dtype=torch.float64):
    batch = Batch.from_data_list([Data(z=dataset[i].z, pos=dataset[i].pos.to(dtype))
                                  for i in rows])
    return batch


# --------------------------------------------------------------------------- the model


def test_energy_is_the_sum_and_forces_are_minus_its_gradient(dataset):
    low = _tiny("mp2", 0).double()
    corr = _tiny("f12", 1, cutoff=5.0, soft_max=4.5).double()
    model = DeltaLearningModel(low, corr)
    assert model.fidelities == ("mp2", "f12") and model.elements == (1, 6, 8)
    assert model.config.cutoff == 6.5 and model.dtype == torch.float64
    batch = _batch(dataset, [0, 30, 63])
    out = model(batch, forces=True)
    e_low, e_corr = low(batch)["energy"][:, 0], corr(batch)["energy"][:, 0]
    assert out["energy"].dtype == torch.float64 and out["energy"].shape == (3, 2)
    assert torch.equal(out["energy"][:, 0], e_low)
    assert torch.equal(out["energy"][:, 1], e_low + e_corr)
    assert out["forces"].shape == (12, 2, 3) and out["hierarchical"].shape[-1] == 2
    assert out["forces"][:, 1].sub(out["forces"][:, 0]).abs().max() > 1e-4  # Δ has forces
    assert_forces_are_minus_energy_gradient(model, batch, atoms=range(12), h=1e-5)
    only_high = model(batch, forces=["f12"])["forces"]
    assert torch.isnan(only_high[:, 0]).all()
    assert torch.allclose(only_high[:, 1], out["forces"][:, 1], rtol=0, atol=1e-12)
    assert torch.equal(model.self_energies[1], low.self_energies[0] + corr.self_energies[0])
    assert model.hierarchicality(out).shape == (2,) and float(model.head_regularization()) == 0
    with pytest.raises(ModelError, match="unknown fidelity 'ccsdt'.*mp2, f12"):
        model(batch, forces=["ccsdt"])
    # energy-only training keeps the graph; predictions for experiment.predict
    assert model(batch)["energy"].requires_grad
    energies, forces = predict(model, dataset, [0, 1], batch_size=2)
    assert energies.shape == (2, 2) and forces.shape == (8, 2, 3)


def test_model_refuses_parts_that_do_not_fit():
    with pytest.raises(ModelError, match="one head"):
        DeltaLearningModel(MultiFidelityHIPNN(TINY, ["mp2", "f12"], [1, 6, 8]),
                           _tiny("f12", 0))
    with pytest.raises(ModelError, match="elements"):
        DeltaLearningModel(_tiny("mp2", 0), MultiFidelityHIPNN(TINY, ["f12"], [1, 6, 7, 8]))
    with pytest.raises(ModelError, match="must differ"):
        DeltaLearningModel(_tiny("mp2", 0), _tiny("mp2", 1))


def test_hparams_rebuild_the_model_and_the_file_round_trips(tmp_path, dataset):
    model = DeltaLearningModel(_tiny("mp2", 0), _tiny("f12", 1, n_features=4))
    hp = json.loads(json.dumps(model.hparams()))
    assert hp["kind"] == "delta" and hp["correction"]["config"]["n_features"] == 4
    save_model(tmp_path / "model.pt", model, {"mp2": ["energy", "forces"], "f12": ["energy"]})
    payload = read_model_file(tmp_path / "model.pt")
    assert payload["format_version"] == 1 and payload["hparams"]["kind"] == "delta"
    assert payload["state_sha256"] == state_digest(payload["state_dict"])
    assert any(k.startswith("correction.") for k in payload["state_dict"])
    loaded = mfgnn.load_model(tmp_path / "model.pt")
    assert isinstance(loaded, DeltaLearningModel) and not loaded.training
    assert loaded.metadata["kind"] == "delta" and loaded.metadata["forces_trained"] == ["mp2"]
    batch = _batch(dataset, [2, 4], dtype=torch.float32)
    a, b = model(batch, forces=True), loaded(batch, forces=True)
    assert torch.equal(a["energy"], b["energy"]) and torch.equal(a["forces"], b["forces"])


# --------------------------------------------------------------------------- residuals


def test_residual_labels_are_differences_and_nan_without_the_high_level(dataset, tmp_path):
    low = _tiny("mp2", 3)
    e = dataset.energies
    k_lo, k_hi = dataset.fidelities.index("mp2"), dataset.fidelities.index("f12")
    pred, pred_f = predict(low, dataset, range(N_ROWS))
    both = np.isfinite(e[:, k_lo]) & np.isfinite(e[:, k_hi])
    res = residual_labels(dataset, low, "mp2", "f12", "labels", forces=True, batch_size=7)
    np.testing.assert_array_equal(res.energy[both], e[both, k_hi] - e[both, k_lo])
    assert np.isnan(res.energy[NO_HIGH]).all()
    assert not np.isnan(np.delete(res.energy, NO_HIGH)).any()
    np.testing.assert_allclose(res.energy[NO_LOW], e[NO_LOW, k_hi] - pred[NO_LOW, 0], rtol=0,
                               atol=1e-6)
    assert sorted(res.predicted_energy_rows) == NO_LOW
    assert sorted(res.predicted_forces_rows) == sorted(NO_LOW + NO_LOW_FORCES)
    for row in range(N_ROWS):
        f = res.forces[row]
        if row in NO_HIGH + NO_HIGH_FORCES:
            assert f is None
            continue
        item = dataset[row].forces.double().numpy()
        low_f = (pred_f[4 * row:4 * row + 4, 0] if row in NO_LOW + NO_LOW_FORCES
                 else item[:, k_lo])
        np.testing.assert_allclose(f, item[:, k_hi] - low_f, rtol=0, atol=1e-5)
    # predicted: the low model's energy on every high row
    res = residual_labels(dataset, low, "mp2", "f12", "predicted")
    has_high = np.isfinite(e[:, k_hi])
    np.testing.assert_allclose(res.energy[has_high], e[has_high, k_hi] - pred[has_high, 0],
                               rtol=0, atol=1e-6)
    assert res.forces is None and np.isnan(res.energy[NO_HIGH]).all()
    # the residual file holds the same geometries row by row and the residual labels
    res = residual_labels(dataset, low, "mp2", "f12", "labels", forces=True)
    spec = write_residual_data(tmp_path, dataset, "f12", res, "mp2")
    back = load_dataset(str(spec))
    assert back.fidelities == ("f12",) and len(back) == N_ROWS
    np.testing.assert_array_equal(back.energies[:, 0], res.energy)
    assert not back.has_force_rows[NO_HIGH + NO_HIGH_FORCES, 0].any()
    assert back.has_force_rows[:, 0].sum() == N_ROWS - len(NO_HIGH + NO_HIGH_FORCES)
    for row in (0, 9, 20):
        z, pos = back.geometry(row)
        z0, pos0 = dataset.geometry(row)
        np.testing.assert_array_equal(z, z0)
        np.testing.assert_array_equal(pos, pos0)
        np.testing.assert_allclose(back[row].forces[:, 0].double().numpy(), res.forces[row],
                                   rtol=1e-6, atol=1e-6)


def test_residual_file_without_forces(dataset, tmp_path):
    res = Residuals(energy=np.arange(N_ROWS, dtype=np.float64), forces=None,
                    predicted_energy_rows=np.array([]), predicted_forces_rows=np.array([]))
    back = load_dataset(str(write_residual_data(tmp_path, dataset, "f12", res)))
    assert not back.has_forces["f12"]
    np.testing.assert_array_equal(back.energies[:, 0], res.energy)


# --------------------------------------------------------------------------- the recipe


def test_run_folder_shares_one_split_and_writes_the_residuals(run, dataset):
    out, metrics = run
    for name in ("config.yaml", "split.json", "delta.json", "residual.npz", "residual.yaml",
                 "model.pt", "test_metrics.json", "low/model.pt", "correction/model.pt"):
        assert (out / name).is_file(), name
    split = json.loads((out / "split.json").read_text())
    for step in ("low", "correction"):
        assert json.loads((out / step / "split.json").read_text()) == split
    options = json.loads((out / "delta.json").read_text())
    assert options["delta_target"] == "labels" and options["low_share"] == 0.25
    e = dataset.energies
    residual = np.load(out / "residual.npz")["E"]
    both = np.isfinite(e).all(axis=1)
    np.testing.assert_array_equal(residual[both], e[both, 1] - e[both, 0])
    assert np.isnan(residual[NO_HIGH]).all()
    low = load_model(out / "low")
    pred, _ = predict(low, dataset, NO_LOW)
    np.testing.assert_allclose(residual[NO_LOW], e[NO_LOW, 1] - pred[:, 0], rtol=0, atol=1e-6)
    # the correction's self-energies were fitted to the residual: small per element
    corr = load_model(out / "correction")
    assert corr.fidelities == ("f12",) and corr.self_energies.abs().max() < 1.0
    low_cfg = yaml.safe_load((out / "low" / "config.yaml").read_text())
    assert low_cfg["train"]["max_time"] == pytest.approx(150.0)
    assert low_cfg["labels"] == {"mp2": ["energy", "forces"]}


def test_trained_model_is_the_sum_and_round_trips(run, dataset, tmp_path):
    out, _ = run
    model = mfgnn.load_model(out)
    assert isinstance(model, DeltaLearningModel) and model.fidelities == ("mp2", "f12")
    low, corr = load_model(out / "low"), load_model(out / "correction")
    batch = _batch(dataset, [0, 11, 40], dtype=torch.float32)
    out_model = model(batch, forces=True)
    assert torch.equal(out_model["energy"][:, 0], low(batch)["energy"][:, 0])
    assert torch.equal(out_model["energy"][:, 1],
                       low(batch)["energy"][:, 0] + corr(batch)["energy"][:, 0])
    meta = model.metadata
    assert meta["kind"] == "delta" and meta["trained_labels"] == {
        "mp2": ["energy", "forces"], "f12": ["energy"]}
    lineage = meta["delta_learning"]
    assert lineage["low"] == "mp2" and lineage["high"] == "f12"
    for step in ("low", "correction"):
        assert lineage["models"][step]["sha256"] == read_model_file(out / step)["state_sha256"]
        assert lineage["models"][step]["epochs"] == 2
    # save / load again: same predictions, checksum checked
    save_model(tmp_path / "again.pt", model, meta["trained_labels"])
    again = load_model(tmp_path / "again.pt")
    out_again = again(batch, forces=True)
    assert torch.equal(out_model["energy"], out_again["energy"])
    assert torch.equal(out_model["forces"], out_again["forces"])
    payload = torch.load(tmp_path / "again.pt", weights_only=False)
    payload["state_dict"]["correction.heads.linears.0.weight"] += 1e-3
    torch.save(payload, tmp_path / "damaged.pt")
    with pytest.raises(CheckpointError, match=r"damaged\.pt: the weights do not match"):
        load_model(tmp_path / "damaged.pt")
    # float64 copy: forces are −dE/dx of the sum
    double = load_model(out, dtype=torch.float64)
    assert_forces_are_minus_energy_gradient(double, _batch(dataset, [12]), atoms=range(4), h=1e-5)


def test_calculator_drives_the_delta_model(run, dataset):
    out, _ = run
    z, pos = dataset.geometry(17)
    atoms = Atoms(numbers=z, positions=pos)
    calc = MFGNNCalculator(out / "model.pt", fidelity="f12", num_threads=1,
                           compute_all_forces=True)
    atoms.calc = calc
    energy, forces = atoms.get_potential_energy(), atoms.get_forces()
    model = load_model(out, dtype=torch.float64)
    data = Data(z=torch.as_tensor(z), pos=torch.as_tensor(pos))
    ref = model(data, forces=True)
    assert energy == pytest.approx(float(ref["energy"][0, 1]), abs=1e-9)
    np.testing.assert_allclose(forces, ref["forces"][:, 1].numpy(), rtol=0, atol=1e-9)
    assert calc.results["energies_all"]["mp2"] == pytest.approx(float(ref["energy"][0, 0]),
                                                                abs=1e-9)
    assert calc.cutoff == model.config.cutoff and calc.fidelities == ("mp2", "f12")
    np.testing.assert_allclose(calc.results["forces_all"]["mp2"], ref["forces"][:, 0].numpy(),
                               atol=1e-9)
    assert np.abs(forces).max() > 1e-3


def test_evaluation_of_the_combined_run_reports_high_level_forces(run):
    out, metrics = run
    assert set(metrics) == {"mp2", "f12"}
    assert metrics["f12"]["n_forces"] > 0 and np.isfinite(metrics["f12"]["forces_rmse"])
    assert metrics["f12"]["n_energy"] > 0 and metrics["mp2"]["n_forces"] > 0
    again = evaluate_run(out, split="valid")
    assert again["f12"]["n_forces"] > 0
    saved = json.loads((out / "test_metrics.json").read_text())
    assert saved["f12"]["forces_rmse"] == pytest.approx(metrics["f12"]["forces_rmse"])


def test_predicted_target_force_residuals_and_a_smaller_correction(spec, dataset, tmp_path):
    config = _config(spec, labels={"mp2": ["energy", "forces"], "f12": ["energy", "forces"]},
                     max_epochs=1)
    small = {"n_features": 4, "cutoff": 5.0, "soft_max": 4.5}
    metrics = train_delta(config, "mp2", "f12", tmp_path / "run", log=None,
                          options={"delta_target": "predicted", "correction_model": small})
    out = tmp_path / "run"
    low = load_model(out / "low")
    pred, pred_f = predict(low, dataset, range(N_ROWS))
    saved = np.load(out / "residual.npz")
    e = dataset.energies
    high = np.isfinite(e[:, 1])
    np.testing.assert_allclose(saved["E"][high], e[high, 1] - pred[high, 0], rtol=0, atol=1e-6)
    for row in (0, 5, 9, 7, 3):  # labelled, no mp2, no mp2 forces, no f12 forces, no f12
        if row in NO_HIGH + NO_HIGH_FORCES:
            assert np.isnan(saved["F"][row]).all()
            continue
        expect = dataset[row].forces[:, 1].double().numpy() - pred_f[4 * row:4 * row + 4, 0]
        np.testing.assert_allclose(saved["F"][row, :4], expect, rtol=0, atol=1e-4)
    model = load_model(out)
    assert model.correction.config.n_features == 4 and model.correction.config.cutoff == 5.0
    assert model.config.cutoff == 6.5
    assert model.metadata["trained_labels"]["f12"] == ["energy", "forces"]
    assert model.metadata["delta_learning"]["delta_target"] == "predicted"
    assert metrics["f12"]["n_forces"] > 0


def test_resume_refinishes_and_existing_run_is_refused(run, spec):
    out, metrics = run
    with pytest.raises(CheckpointError, match="already holds a Δ-learning run"):
        train_delta(_config(spec, max_time=600.0), "mp2", "f12", out, log=None,
                    options={"low_share": 0.25})
    with pytest.raises(ConfigError, match="started with"):
        train_delta(_config(spec, max_time=600.0), "mp2", "f12", out, resume=True, log=None,
                    options={"low_share": 0.5})
    before = read_model_file(out)["state_sha256"]
    again = train_delta(_config(spec, max_time=600.0), "mp2", "f12", out, resume=True,
                        log=None, options=DeltaConfig(low_share=0.25))
    assert read_model_file(out)["state_sha256"] == before
    assert again["f12"]["energy_rmse"] == pytest.approx(metrics["f12"]["energy_rmse"])


def test_options_and_levels_are_checked(spec, tmp_path):
    with pytest.raises(ConfigError, match="delta_target 'predict'; did you mean 'predicted'"):
        DeltaConfig(delta_target="predict")
    with pytest.raises(ConfigError, match="low_share"):
        DeltaConfig(low_share=1.0)
    with pytest.raises(ConfigError, match="unknown key 'share'"):
        train_delta(_config(spec), "mp2", "f12", tmp_path / "a", log=None,
                    options={"share": 0.5})
    with pytest.raises(ConfigError, match="'f12' comes after 'mp2'|swap"):
        train_delta(_config(spec), "f12", "mp2", tmp_path / "b", log=None)
    with pytest.raises(ConfigError, match="'ccsdt' is not in the data"):
        train_delta(_config(spec), "mp2", "ccsdt", tmp_path / "c", log=None)
    with pytest.raises(ConfigError, match="labels.mp2: the low model of Δ-learning needs"):
        train_delta(_config(spec, labels={"mp2": ["forces"]}), "mp2", "f12", tmp_path / "d",
                    log=None)
    assert not any((tmp_path / x).exists() for x in "abcd")


def test_old_files_without_kind_load_and_unknown_kinds_are_refused(run, tmp_path):
    out, _ = run
    payload = torch.load(out / "low" / "model.pt", weights_only=False)
    assert payload["hparams"]["kind"] == "hipnn"
    payload["hparams"].pop("kind")
    torch.save(payload, tmp_path / "old.pt")
    old = load_model(tmp_path / "old.pt")
    assert isinstance(old, MultiFidelityHIPNN) and old.fidelities == ("mp2",)
    payload["hparams"]["kind"] = "meta"
    torch.save(payload, tmp_path / "future.pt")
    with pytest.raises(CheckpointError, match=r"future\.pt: model kind 'meta'.*hipnn, delta"):
        load_model(tmp_path / "future.pt")
