"""Data-parallel training under ``torchrun`` (gloo on CPU processes) equals one process
with the same global batch, survives a killed rank, and shards batches by rank."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from mfgnn.training.batches import BatchSource
from mfgnn.training.build import train
from mfgnn.training.distributed import KILL_ENV, Distributed

EPOCHS = 4


@pytest.fixture(scope="module")
def sparse_spec(tmp_path_factory, shared_data) -> Path:
    """H2CO at MP2 (energies and forces) and F12 with energies on one row in seven only,
    so that many shares of a global batch hold no high-level label at all."""
    folder = shared_data / "mp2_ccsdt"
    out = tmp_path_factory.mktemp("sparse")
    f12 = dict(np.load(folder / "ch2o_ccf12_avtz_3601.npz"))
    missing = np.arange(len(f12["E"])) % 7 != 0
    f12["E"] = np.where(missing, np.nan, f12["E"])
    np.savez(out / "f12_sparse.npz", **f12)
    spec = out / "spec.yaml"
    spec.write_text("fidelities:\n"
                    f"  mp2: {{path: {folder / 'ch2o_mp2_avtz_3601.npz'}, energy_unit: eV}}\n"
                    f"  f12: {{path: {out / 'f12_sparse.npz'}, energy_unit: eV, forces: null}}\n")
    return spec


def run_config(spec: Path, folder: Path) -> Path:
    """A small run: 17 structures per global batch (uneven shares, 9 + 8), 33
    validation structures in batches of 32 (the last share of one rank is empty)."""
    config = {
        "data": str(spec),
        "labels": {"mp2": ["energy", "forces"], "f12": ["energy"]},
        "split": {"train": 96, "valid": 33, "test": 20, "seed": 3},
        "model": {"n_features": 12, "n_interactions": 1, "n_atom_layers": 1,
                  "n_sensitivities": 8, "tensor_order": 0},
        "loss": {"hierarchicality_weight": 0.01},
        "train": {"max_epochs": EPOCHS, "batch_size": 17, "eval_batch_size": 32,
                  "lr": 3.0e-3, "seed": 5, "scheduler": "cosine", "patience": None,
                  "device": "cpu", "progress_every": 0, "refit_energy_heads": True},
    }
    path = folder / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def torchrun(config: Path, out: Path, *extra: str, env: dict | None = None):
    """``torchrun --standalone --nproc_per_node=2 [extra] -m mfgnn train``."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           "--nproc_per_node=2", *extra, "-m", "mfgnn", "train", str(config), "--out", str(out)]
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo", **(env or {})}
    result = subprocess.run(cmd, capture_output=True, text=True, env=full_env, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    return result


def metrics(folder: Path) -> list[dict]:
    with open(folder / "metrics.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def weights(folder: Path) -> dict[str, torch.Tensor]:
    state = torch.load(folder / "checkpoint.pt", map_location="cpu", weights_only=False)
    return state["model"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, sparse_spec):
    """The same run in one process, in two processes, and in two processes with rank 1
    killed (SIGKILL) after epoch 2 and the worker group restarted by torchrun."""
    root = tmp_path_factory.mktemp("runs")
    config = run_config(sparse_spec, root)
    torch.set_num_threads(1)
    train(config, root / "one", log=None)
    torchrun(config, root / "two")
    killed = torchrun(config, root / "killed", "--max-restarts=1", env={KILL_ENV: "1:2"})
    return root, killed


def test_two_processes_train_like_one(runs):
    root, _ = runs
    one, two = metrics(root / "one"), metrics(root / "two")
    assert len(one) == len(two) == EPOCHS
    for a, b in zip(one, two):
        for key in ("train_loss", "valid_loss", "valid_f12_energy_rmse", "valid_mp2_forces_rmse"):
            assert float(b[key]) == pytest.approx(float(a[key]), rel=2e-4), (key, a, b)
    w1, w2 = weights(root / "one"), weights(root / "two")
    for name in w1:
        torch.testing.assert_close(w2[name], w1[name], rtol=1e-3, atol=1e-5, msg=name)
    # the weights moved: equality is not that of two untrained models
    first = torch.load(root / "one" / "checkpoint.pt", weights_only=False)["history"][0]
    assert float(one[-1]["valid_loss"]) < first["valid_loss"] or EPOCHS == 1


def test_only_rank_zero_writes_and_test_metrics_agree(runs):
    root, _ = runs
    for run in ("one", "two"):
        names = {p.name for p in (root / run).iterdir()}
        assert {"model.pt", "checkpoint.pt", "metrics.csv", "test_metrics.json"} <= names
        assert not [n for n in names if ".tmp" in n], names
    import json

    a = json.loads((root / "one" / "test_metrics.json").read_text())
    b = json.loads((root / "two" / "test_metrics.json").read_text())
    assert a["mp2"]["n_forces"] == b["mp2"]["n_forces"] > 0
    for key in ("energy_rmse", "forces_rmse", "forces_p99"):
        assert b["mp2"][key] == pytest.approx(a["mp2"][key], rel=1e-4)
    # the energy-only level's head refit sums over both ranks' shares: the same choice
    refit_one, refit_two = (json.loads((root / run / "head_refit.json").read_text())
                            for run in ("one", "two"))
    assert [r["fidelity"] for r in refit_one] == ["f12"]
    assert refit_two[0]["lam"] == refit_one[0]["lam"]
    assert refit_two[0]["n_train"] == refit_one[0]["n_train"] > 0
    for key in ("valid_rmse_before", "valid_rmse_after"):
        assert refit_two[0][key] == pytest.approx(refit_one[0][key], rel=1e-3)


def test_killed_rank_resumes_without_losing_an_epoch(runs):
    root, killed = runs
    assert "resumed" in killed.stderr, killed.stderr[-3000:]
    rows, reference = metrics(root / "killed"), metrics(root / "two")
    assert [int(r["epoch"]) for r in rows] == list(range(1, EPOCHS + 1))
    for a, b in zip(reference, rows):
        assert float(b["valid_loss"]) == pytest.approx(float(a["valid_loss"]), rel=1e-6)
    w1, w2 = weights(root / "two"), weights(root / "killed")
    for name in w1:
        torch.testing.assert_close(w2[name], w1[name], rtol=1e-6, atol=1e-8, msg=name)


def test_shards_are_disjoint_and_cover_every_global_batch():
    source = BatchSource(dataset=None, rows=list(range(50)), columns=[0], batch_size=16,
                         shuffle=True, seed=2)
    plan = source.plan(3)
    for world in (1, 2, 3, 5):
        for positions in plan:
            parts = [Distributed(r, world).shard(positions) for r in range(world)]
            assert np.array_equal(np.concatenate(parts), positions)
            assert max(map(len, parts)) - min(map(len, parts)) <= 1
    assert len(Distributed(1, 3).shard(np.arange(2))) == 1
    assert len(Distributed(2, 3).shard(np.arange(2))) == 0


def test_steps_per_epoch_walks_through_successive_passes():
    source = BatchSource(dataset=None, rows=list(range(10)), columns=[0], batch_size=4,
                         shuffle=True, seed=1, steps_per_epoch=2)
    steps = [p for epoch in range(6) for p in source.plan(epoch)]  # 12 steps = 4 passes
    passes = [np.concatenate(steps[k:k + 3]) for k in range(0, 12, 3)]
    for k, order in enumerate(passes):
        assert sorted(order.tolist()) == list(range(10))
        assert np.array_equal(order, np.concatenate(source.pass_plan(k)))
    assert not np.array_equal(passes[0], passes[1])  # reshuffled every pass


def test_commands_other_than_train_refuse_several_processes(monkeypatch, capsys):
    from mfgnn.cli import main

    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["evaluate", "no-such-run"]) == 2
    assert "runs in one process" in capsys.readouterr().err
