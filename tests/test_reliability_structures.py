"""Odd but valid structures: single atoms and atoms with no neighbour within the cutoff
train and predict (zero force, additive energy), and structures far larger than any in
training (150-300-atom clusters, cell-list graphs) predict and evaluate.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from _reliability import lone_h2co_rows, run_config, trained_h2co_run, write_spec
from torch_geometric.data import Batch, Data

from mfgnn.config import config_from_dict
from mfgnn.data import load_dataset
from mfgnn.model_file import load_model
from mfgnn.training.evaluation import evaluate_run
from mfgnn.training.setup import setup_run
from mfgnn.training.build import build_trainer

pytestmark = pytest.mark.usefixtures("one_thread")


# --------------------------------------------------------------------------- helpers


def write_mixed_npz(path: Path, shared_data: Path, n_mol=24, n_far=8) -> dict[str, np.ndarray]:
    """H2CO molecules, H2CO with a far-away H atom (no neighbour within any cutoff), and
    single atoms, padded to 5 columns with atomic number 0. Energies are relative to free
    atoms, so a free atom has exactly E = 0, F = 0 and the far H adds nothing: the labels
    are physically exact."""
    z, R, E, F = lone_h2co_rows(shared_data, range(n_mol + n_far))
    rows_z, rows_r, rows_e, rows_f = [], [], [], []
    for k in range(n_mol):
        rows_z.append(list(z))
        rows_r.append(R[k])
        rows_e.append(E[k])
        rows_f.append(F[k])
    for k in range(n_mol, n_mol + n_far):
        rows_z.append(list(z) + [1])
        rows_r.append(np.vstack([R[k], [[30.0 + k, -25.0, 40.0]]]))
        rows_e.append(E[k])
        rows_f.append(np.vstack([F[k], [[0.0, 0.0, 0.0]]]))
    for element in (1, 6, 8, 1):
        rows_z.append([element])
        rows_r.append(np.array([[0.3 * element, -1.0, 2.0]]))
        rows_e.append(0.0)
        rows_f.append(np.zeros((1, 3)))
    n, width = len(rows_z), 5
    Z = np.zeros((n, width), dtype=np.int64)
    Rp = np.zeros((n, width, 3))
    Fp = np.zeros((n, width, 3))
    for r in range(n):
        m = len(rows_z[r])
        Z[r, :m], Rp[r, :m], Fp[r, :m] = rows_z[r], rows_r[r], rows_f[r]
    arrays = {"R": Rp, "Z": Z, "E": np.array(rows_e), "F": Fp}
    np.savez(path, **arrays)
    return arrays


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, shared_data):
    return trained_h2co_run(tmp_path_factory, shared_data)


# --------------------------------------------------------------------------- structures


@pytest.fixture(scope="module")
def mixed_run(tmp_path_factory, shared_data):
    """Train on H2CO + H2CO with a far-away H + single atoms; every kind in every split."""
    folder = tmp_path_factory.mktemp("mixed")
    write_mixed_npz(folder / "mixed.npz", shared_data)
    spec = write_spec(folder / "mixed.yaml", mp2=folder / "mixed.npz")
    # rows 0-23 H2CO, 24-31 H2CO + far H, 32-35 single atoms (H, C, O, H)
    split = {"n": 36, "seed": None, "train": list(range(0, 16)) + [24, 25, 26, 27, 32, 33, 34],
             "valid": list(range(16, 20)) + [28, 29, 35], "test": [20, 21, 22, 23, 30, 31]}
    (folder / "split.json").write_text(json.dumps(split))
    values = run_config(spec, labels={"mp2": ["energy", "forces"]},
                        split={"file": str(folder / "split.json")}, epochs=3, batch_size=8)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        setup = setup_run(config_from_dict(values))
        trainer = build_trainer(setup, folder / "run", log=None)
        trainer.fit()
    finally:
        torch.set_num_threads(before)
    return trainer, folder


def test_single_atoms_and_isolated_atoms_train_and_predict(mixed_run):
    trainer, folder = mixed_run
    assert len(trainer.history) == 3
    for row in trainer.history:
        assert np.isfinite(row["train_loss"]) and np.isfinite(row["valid_loss"])
        assert row["skipped_steps"] == 0
    for p in trainer.model.parameters():
        assert torch.isfinite(p).all()
    model = load_model(folder / "run")
    ds = trainer.data.train.dataset
    lone = [ds[i] for i in (32, 33, 34)]  # H, C, O alone
    batch = Batch.from_data_list([ds[0], ds[24]] + lone)
    out = model(batch, forces=True)
    assert torch.isfinite(out["energy"]).all() and torch.isfinite(out["forces"]).all()
    # no neighbour: zero force, and the far H adds exactly a lone H's energy
    assert torch.equal(out["forces"][batch.batch >= 2], torch.zeros(3, 1, 3))
    far_h = int(np.flatnonzero(batch.batch.numpy() == 1)[-1])
    assert torch.equal(out["forces"][far_h], torch.zeros(1, 3))
    alone = model(ds[24].clone(), forces=True)
    without = Data(z=ds[24].z[:4], pos=ds[24].pos[:4])
    with torch.no_grad():
        e_sum = model(without)["energy"][0, 0] + out["energy"][2, 0]
    assert float(alone["energy"][0, 0]) == pytest.approx(float(e_sum), rel=0, abs=1e-5)
    assert torch.allclose(alone["forces"][:4], model(without, forces=True)["forces"], atol=1e-6)
    metrics = json.loads((folder / "run" / "test_metrics.json").read_text())
    assert metrics["mp2"]["n_energy"] == 6 and metrics["mp2"]["n_forces"] == 4 * 4 + 2 * 5


def random_cluster(n: int, seed: int, spacing: float = 1.6, min_sep: float = 0.9):
    """n atoms of H, C, O on a jittered cubic grid (every pair at least ``min_sep`` Å)."""
    rng = np.random.default_rng(seed)
    side = int(np.ceil(n ** (1 / 3))) + 1
    grid = np.stack(np.meshgrid(*[np.arange(side)] * 3, indexing="ij"), -1).reshape(-1, 3)
    jitter = (spacing - min_sep) / (2 * np.sqrt(3))
    pos = grid[rng.choice(len(grid), n, replace=False)] * spacing
    pos = pos + rng.uniform(-jitter, jitter, pos.shape)
    return rng.choice([1, 6, 8], n), pos


def test_structures_larger_than_any_in_training(trained_run, tmp_path):
    """Trained on 4-atom molecules, evaluated on 150-300-atom clusters (cell-list graphs),
    directly and through ``evaluate_run`` on a dataset of such clusters."""
    sizes = (150, 300)
    Z = np.zeros((2, 300), dtype=np.int64)
    R = np.zeros((2, 300, 3))
    for r, n in enumerate(sizes):
        Z[r, :n], R[r, :n] = random_cluster(n, seed=r)
    E = np.array([-3.0 * n for n in sizes])
    F = np.random.default_rng(2).normal(0, 1, R.shape)
    np.savez(tmp_path / "big.npz", R=R, Z=Z, E=E, F=F)
    spec = write_spec(tmp_path / "big.yaml", f12=tmp_path / "big.npz")
    model = load_model(trained_run)
    ds = load_dataset(str(spec), cutoff=model.config.cutoff)
    out = model(Batch.from_data_list([ds[0], ds[1]]), forces=True)
    assert torch.isfinite(out["energy"]).all() and torch.isfinite(out["forces"]).all()
    one = model(ds[1], forces=True)
    assert torch.allclose(one["energy"], out["energy"][1:], rtol=1e-6)
    metrics = evaluate_run(trained_run, data=str(spec))
    assert set(metrics) == {"f12"} and metrics["f12"]["n_forces"] == sum(sizes)
    assert all(np.isfinite(v) for v in metrics["f12"].values())


