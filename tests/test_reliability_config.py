"""Bad run setups: empty splits, a split file of another dataset, labels the data does
not have, fidelity names missing from the data or the model, and batches without force
labels (which train on the energies alone); unknown config keys, unwritable output paths
and the CLI's exit code and one-line error message (also in a subprocess).
"""

from __future__ import annotations

import dataclasses

import json
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from _reliability import (REPO, assert_clean_error, cli, h2co_files, run_config,
                          trained_h2co_run, write_config, write_spec)

from mfgnn.cli import main
from mfgnn.config import config_from_dict
from mfgnn.errors import ConfigError, DataError, MfgnnError, ModelError
from mfgnn.model_file import load_model
from mfgnn.training.setup import setup_run
from mfgnn.training.build import build_trainer

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, shared_data):
    return trained_h2co_run(tmp_path_factory, shared_data)


# --------------------------------------------------------------------------- splits, labels


def test_empty_splits_are_one_clear_error(tmp_path, shared_data, capsys):
    low, high = h2co_files(shared_data)
    spec = write_spec(tmp_path / "s.yaml", mp2=low, f12=high)
    with pytest.raises(DataError, match=r"the training split is empty \(train 0, valid 16"):
        setup_run(config_from_dict(run_config(spec, split={"train": 0, "valid": 16, "test": 16})))
    split = {"n": 3601, "seed": 0, "train": list(range(10)), "valid": [], "test": [10, 11]}
    (tmp_path / "split.json").write_text(json.dumps(split))
    values = run_config(spec, split={"file": "split.json"})
    with pytest.raises(DataError, match="the validation split is empty"):
        setup_run(config_from_dict(values, base_dir=tmp_path))
    cfg = write_config(tmp_path / "run.yaml", run_config(spec, split={"train": 0.5, "valid": 0.0}))
    code, _, err = cli(capsys, "train", cfg, "--out", tmp_path / "out")
    assert_clean_error(code, err, "validation split is empty")
    assert not (tmp_path / "out" / "checkpoint.pt").exists()


def test_split_file_for_another_dataset_names_the_file(tmp_path, shared_data):
    low, high = h2co_files(shared_data)
    spec = write_spec(tmp_path / "s.yaml", mp2=low, f12=high)
    split = {"n": 5000, "seed": 0, "train": [1, 2, 4500], "valid": [3], "test": []}
    (tmp_path / "other.json").write_text(json.dumps(split))
    with pytest.raises(DataError, match=r"other\.json: split has row 4500 but the dataset has "
                       r"3601 rows"):
        setup_run(config_from_dict(run_config(spec, split={"file": str(tmp_path / "other.json")})))


def test_labels_the_data_does_not_have(tmp_path, shared_data):
    low, high = h2co_files(shared_data)
    no_forces = write_spec(tmp_path / "nf.yaml", mp2=low,
                           f12={"path": str(high), "keys": {"forces": None}})
    with pytest.raises(ConfigError, match=r"forces selected for fidelity 'f12', but the data "
                       r"declares no forces"):
        setup_run(config_from_dict(run_config(no_forces, labels={"f12": ["energy", "forces"]})))
    # the key exists, but every training row's label is missing (NaN)
    raw = dict(np.load(high))
    raw["E"] = np.full_like(raw["E"], np.nan)
    raw["F"] = np.full_like(raw["F"], np.nan)
    np.savez(tmp_path / "empty_labels.npz", **raw)
    spec = write_spec(tmp_path / "s.yaml", mp2=low, f12=tmp_path / "empty_labels.npz")
    with pytest.raises(DataError, match=r"energy selected for fidelity 'f12', but none of the 48 "
                       r"training rows has a 'f12' energy .*empty_labels\.npz"):
        setup_run(config_from_dict(run_config(spec)))
    with pytest.raises(DataError, match=r"forces selected for fidelity 'f12', but none of the 48 "
                       r"training rows has 'f12' forces .*empty_labels\.npz"):
        setup_run(config_from_dict(run_config(spec, labels={"mp2": ["energy"],
                                                            "f12": ["forces"]})))


def test_fidelity_names_not_in_the_data_or_the_model(trained_run, tmp_path, shared_data, capsys):
    low, _ = h2co_files(shared_data)
    spec = write_spec(tmp_path / "other.yaml", ccsdt=low)
    code, _, err = cli(capsys, "evaluate", trained_run, "--data", spec)
    assert_clean_error(code, err, "none of the model's fidelities", "model: mp2, f12",
                       "data: ccsdt")
    cfg = write_config(tmp_path / "run.yaml", run_config(spec, labels={"mp2": ["energy"]}))
    code, _, err = cli(capsys, "train", cfg, "--out", tmp_path / "out")
    assert_clean_error(code, err, "fidelity 'mp2' is not in the data", "the dataset has: ccsdt")
    model = load_model(trained_run)
    with pytest.raises(ModelError, match=r"unknown fidelity 'ccsdt'; the model's fidelities are "
                       r"mp2, f12"):
        model.fidelity_index("ccsdt")


def test_batch_without_force_labels_trains_without_force_autograd(tmp_path, shared_data,
                                                                 monkeypatch):
    """Half of the rows have no MP2 forces; an epoch over those rows only takes normal
    optimiser steps on the energies and never differentiates for forces."""
    low, high = h2co_files(shared_data)
    raw = dict(np.load(low))
    raw["F"] = raw["F"].copy()
    raw["F"][1::2] = np.nan  # odd rows: no forces
    np.savez(tmp_path / "half_forces.npz", **raw)
    spec = write_spec(tmp_path / "s.yaml", mp2=tmp_path / "half_forces.npz", f12=high)
    setup = setup_run(config_from_dict(run_config(spec)))
    trainer = build_trainer(setup, tmp_path / "run", log=None)
    no_forces = np.array([r for r in setup.split.train if r % 2 == 1])
    assert len(no_forces) >= 16
    trainer.data.train = dataclasses.replace(trainer.data.train, rows=no_forces)
    requested, grads = [], []
    forward = type(trainer.model).forward

    def spy_forward(self, data, forces=False, training=False):
        requested.append(forces)
        return forward(self, data, forces=forces, training=training)

    real_grad = torch.autograd.grad
    monkeypatch.setattr(type(trainer.model), "forward", spy_forward)
    monkeypatch.setattr(torch.autograd, "grad", lambda *a, **k: grads.append(1) or real_grad(*a, **k))
    before = [p.detach().clone() for p in trainer.model.parameters()]
    result = trainer.train_epoch()
    assert requested and all(r is False for r in requested)
    assert grads == []
    assert np.isfinite(result["train_loss"]) and result["skipped_steps"] == 0
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.model.parameters()))
    # and a mixed batch does request the MP2 forces
    trainer.data.train = dataclasses.replace(trainer.data.train, rows=np.arange(48))
    requested.clear()
    trainer.train_epoch()
    assert all(r == ["mp2"] for r in requested)


# --------------------------------------------------------------------------- config and CLI


def test_unknown_config_key_through_the_cli(tmp_path, shared_data, capsys):
    low, high = h2co_files(shared_data)
    spec = write_spec(tmp_path / "s.yaml", mp2=low, f12=high)
    values = run_config(spec)
    values["model"]["n_feature"] = values["model"].pop("n_features")
    cfg = write_config(tmp_path / "run.yaml", values)
    code, _, err = cli(capsys, "train", cfg, "--out", tmp_path / "out")
    assert_clean_error(code, err, str(cfg), "model", "unknown key 'n_feature'",
                       "did you mean 'n_features'?")
    with pytest.raises(ConfigError, match="did you mean 'n_features'"):
        main(["--debug", "train", str(cfg), "--out", str(tmp_path / "out")])
    values = run_config(spec)
    values["trian"] = values.pop("train")
    code, _, err = cli(capsys, "train", write_config(tmp_path / "r2.yaml", values),
                       "--out", tmp_path / "out")
    assert_clean_error(code, err, "unknown key 'trian'", "did you mean 'train'?")


def test_unwritable_output_paths_through_the_cli(trained_run, tmp_path, shared_data, capsys):
    """Output paths under a regular file: one message naming the path, no traceback."""
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    low, high = h2co_files(shared_data)
    spec = write_spec(tmp_path / "s.yaml", mp2=low, f12=high)
    cfg = write_config(tmp_path / "run.yaml", run_config(spec))
    code, _, err = cli(capsys, "train", cfg, "--out", blocker / "run")
    assert_clean_error(code, err, f"cannot create the run folder {blocker / 'run'}")
    code, _, err = cli(capsys, "data", "summary", spec, "--json", blocker / "s.json")
    assert_clean_error(code, err, f"--json {blocker / 's.json'}: cannot write")
    code, _, err = cli(capsys, "evaluate", trained_run, "--json", blocker / "m.json")
    assert_clean_error(code, err, f"could not write {blocker / 'm.json'}")


def test_cli_subprocess_exit_code_and_no_traceback(tmp_path):
    bad = tmp_path / "run.yaml"
    bad.write_text("data: d.yaml\nlabels: {a: [energy]}\ntrain: {max_epoch: 3}\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    argv = [sys.executable, "-m", "mfgnn.cli", "train", str(bad), "--out", str(tmp_path / "o")]
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300, cwd=REPO)
    assert done.returncode == 2
    assert done.stderr.startswith("mfgnn: error: ") and "Traceback" not in done.stderr
    assert "unknown key 'max_epoch'" in done.stderr and "did you mean 'max_epochs'?" in done.stderr
    assert issubclass(ConfigError, MfgnnError)


def test_cli_hides_library_deprecation_notices_and_keeps_its_own(monkeypatch):
    """A newer torch's FutureWarning, raised while torch_geometric is imported, must not
    reach a CLI user's stderr (it would precede the one-line error); a warning of the
    package itself, or one the user asked for with -W, still does."""
    from mfgnn.cli import quiet_library_warnings

    def raised(module: str, category=FutureWarning) -> int:
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            quiet_library_warnings()
            warnings.warn_explicit("deprecated", category, "lib.py", 1, module=module)
            return len(seen)

    monkeypatch.setattr(sys, "warnoptions", [])
    assert raised("torch_geometric.typing") == 0
    assert raised("torch.jit._script", DeprecationWarning) == 0
    assert raised("torchani.aev") == 1          # not torch itself
    assert raised("mfgnn.training.setup") == 1
    assert raised("torch_geometric.typing", UserWarning) == 1
    monkeypatch.setattr(sys, "warnoptions", ["default"])
    assert raised("torch_geometric.typing") == 1
