"""Training on the real H2CO MP2 / CCSD(T)-F12 data: the loss goes down, runs resume
exactly, saved models predict identically, and bad labels fail clearly."""

from __future__ import annotations

import errno
import json

import pytest
import torch

from mfgnn.cli import main
from mfgnn.config import config_from_dict
from mfgnn.errors import CheckpointError, ConfigError
from mfgnn.model_file import load_model
from mfgnn.training.build import train
from mfgnn.training.evaluation import evaluate_run
from mfgnn.training.setup import setup_run
from mfgnn.training.build import build_trainer

TINY_MODEL = {"n_features": 16, "n_interactions": 1, "n_atom_layers": 1,
              "n_sensitivities": 8, "tensor_order": 1, "heads": "delta"}


@pytest.fixture()
def spec(h2co_spec):
    return h2co_spec


def _config(spec, epochs=3, labels=None, **train):
    return config_from_dict({
        "data": str(spec),
        "labels": labels or {"mp2": ["energy", "forces"], "f12": ["energy"]},
        "split": {"train": 96, "valid": 32, "test": 32, "seed": 1},
        "model": TINY_MODEL,
        "train": {"max_epochs": epochs, "batch_size": 16, "lr": 3e-3, "seed": 0, **train},
    })


def test_loss_goes_down_on_real_data(spec, tmp_path):
    config = _config(spec, epochs=8)
    setup = setup_run(config)
    trainer = build_trainer(setup, tmp_path / "run", log=None)
    first, _ = trainer.evaluate(trainer.data.valid)
    trainer.fit()
    losses = [row["valid_loss"] for row in trainer.history]
    assert len(losses) == 8
    assert min(losses) < 0.6 * first, (first, losses)
    assert (tmp_path / "run" / "metrics.csv").read_text().count("\n") == 9


def test_resume_repeats_the_uninterrupted_run(spec, tmp_path):
    full = build_trainer(setup_run(_config(spec, epochs=4)), tmp_path / "full", log=None)
    full.fit()
    part = build_trainer(setup_run(_config(spec, epochs=2)), tmp_path / "part", log=None)
    part.fit()
    resumed = build_trainer(setup_run(_config(spec, epochs=4), tmp_path / "part"),
                      tmp_path / "part", resume=True, log=None)
    assert resumed.epoch == 2
    resumed.fit()
    a = [row["valid_loss"] for row in full.history]
    b = [row["valid_loss"] for row in resumed.history]
    assert a == pytest.approx(b, rel=1e-9, abs=0)


def test_existing_run_is_not_overwritten(spec, tmp_path):
    train(_config(spec, epochs=1), tmp_path / "run", log=None)
    before = (tmp_path / "run" / "checkpoint.pt").read_bytes()
    with pytest.raises(CheckpointError, match="--resume"):
        train(_config(spec, epochs=1), tmp_path / "run", log=None)
    assert (tmp_path / "run" / "checkpoint.pt").read_bytes() == before


def test_saved_model_predicts_identically_and_is_self_describing(spec, tmp_path):
    config = _config(spec, epochs=2)
    setup = setup_run(config)
    trainer = build_trainer(setup, tmp_path / "run", log=None)
    trainer.fit()
    loaded = load_model(tmp_path / "run" / "model.pt")
    meta = loaded.metadata
    assert meta["fidelities"] == ["mp2", "f12"]
    assert meta["trained_labels"] == {"mp2": ["energy", "forces"], "f12": ["energy"]}
    assert meta["units"]["energy"] == "eV" and meta["elements"] == [1, 6, 8]
    batch = next(iter(trainer.data.test.batches()))
    trainer.model.eval()
    a = trainer.model(batch.clone(), forces=True)
    b = loaded(batch.clone(), forces=True)
    assert torch.equal(a["energy"], b["energy"])
    assert torch.equal(a["forces"], b["forces"])


def test_evaluate_reports_unseen_high_level_forces(spec, tmp_path, capsys):
    train(_config(spec, epochs=1), tmp_path / "run", log=None)
    code = main(["evaluate", str(tmp_path / "run"), "--json", str(tmp_path / "m.json")])
    assert code == 0
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert set(metrics) == {"mp2", "f12"}
    for fid in ("mp2", "f12"):
        assert metrics[fid]["n_energy"] == 32 and metrics[fid]["n_forces"] == 32 * 4
        assert metrics[fid]["forces_rmse"] > 0
    assert "f12" in capsys.readouterr().out
    assert evaluate_run(tmp_path / "run", split="valid")["f12"]["n_energy"] == 32


@pytest.mark.parametrize("labels,message", [
    ({"ccsdt": ["energy"]}, "'ccsdt' is not in the data"),
])
def test_labels_that_the_data_lacks(spec, tmp_path, labels, message):
    with pytest.raises(ConfigError, match=message):
        setup_run(_config(spec, labels=labels))


def test_checkpoint_write_failure_keeps_previous(spec, tmp_path, monkeypatch):
    trainer = build_trainer(setup_run(_config(spec, epochs=1)), tmp_path / "run", log=None)
    trainer.fit()
    before = (tmp_path / "run" / "checkpoint.pt").read_bytes()

    def full_disk(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("os.fsync", full_disk)
    with pytest.raises(CheckpointError, match="No space left.*previous checkpoint is intact"):
        trainer.folder.save_checkpoint(trainer.state_dict(), trainer.epoch)
    assert (tmp_path / "run" / "checkpoint.pt").read_bytes() == before
    assert not [p for p in (tmp_path / "run").iterdir() if p.name.endswith(".tmp")]


def test_step_budget_with_short_epochs_resumes_exactly(spec, tmp_path):
    """max_steps caps the optimiser steps (the last epoch is cut short) and the cosine
    schedule ends there; epochs of steps_per_epoch batches walk through successive
    shuffled passes, and a run resumed after 2 such epochs repeats the uninterrupted one."""
    def config(scheduler, **train):
        return _config(spec, epochs=50, max_steps=11, steps_per_epoch=4, valid_sample=10,
                       scheduler=scheduler, patience=None, **train)

    cosine = build_trainer(setup_run(config("cosine")), tmp_path / "cosine", log=None)
    cosine.fit()
    assert cosine.step == 11 and cosine.epoch == 3  # 4 + 4 + 3 steps
    assert cosine.optimizer.param_groups[0]["lr"] == pytest.approx(cosine.settings.min_lr)
    assert len(cosine.data.valid) == 10 and len(cosine.data.train) == 96
    # the schedule is budget-independent here, so stopping after 2 epochs is an interruption
    full = build_trainer(setup_run(config("plateau")), tmp_path / "full", log=None)
    full.fit()
    part = build_trainer(setup_run(config("plateau", max_epochs=2)), tmp_path / "part",
                         log=None)
    part.fit()
    resumed = build_trainer(setup_run(config("plateau"), tmp_path / "part"), tmp_path / "part",
                            resume=True, log=None)
    assert (resumed.epoch, resumed.step) == (2, 8)
    resumed.fit()
    a = [row["valid_loss"] for row in full.history]
    b = [row["valid_loss"] for row in resumed.history]
    assert len(a) == 3 and a == pytest.approx(b, rel=1e-9, abs=0)


def test_worker_processes_give_the_same_run(spec, tmp_path):
    """Training batches made ahead by a worker process are the batches made in-process."""
    runs = []
    for workers in (0, 1):
        trainer = build_trainer(setup_run(_config(spec, epochs=2, num_workers=workers)),
                                tmp_path / f"w{workers}", log=None)
        trainer.fit()
        runs.append([row["train_loss"] for row in trainer.history])
    assert runs[0] == pytest.approx(runs[1], rel=1e-12, abs=0)


def test_a_run_folders_split_wins_and_a_size_change_is_reported(spec, tmp_path):
    train(_config(spec, epochs=1), tmp_path / "run", log=None)
    changed = _config(spec, epochs=2)
    changed.split.train = 64
    with pytest.warns(UserWarning, match=r"split.json holds this run folder's split .*train 96"
                                         r".*not the configuration's train 64"):
        setup = setup_run(changed, tmp_path / "run")
    assert len(setup.split.train) == 96
