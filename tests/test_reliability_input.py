"""Bad input: one clear error each (file, row, field), nothing lost; odd but valid input
(single atoms, isolated atoms, larger structures than in training, batches without force
labels) must work for prediction and training.

Cases the data-layer tests already cover are not repeated here (see the "Reliability"
section of README.md for the full map): NaN/inf coordinates and inf labels in npz,
coincident atoms (npz, ANI-HDF5, extxyz), level files with different geometries or row
counts, truncated npz/HDF5 at open, implausible declared units, unknown config keys.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import ase.io
import h5py
import numpy as np
import pytest
import torch
import yaml
from ase import Atoms
from torch_geometric.data import Batch, Data

from mfgnn.cli import main
from mfgnn.config import config_from_dict
from mfgnn.data import load_dataset
from mfgnn.errors import ConfigError, DataError, MfgnnError, ModelError
from mfgnn.io import load_model
from mfgnn.run import evaluate_run, train
from mfgnn.training.setup import setup_run
from mfgnn.training.trainer import Trainer

TINY_MODEL = {"n_features": 16, "n_interactions": 1, "n_atom_layers": 1,
              "n_sensitivities": 8, "tensor_order": 1, "heads": "delta"}
REPO = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_thread")


# --------------------------------------------------------------------------- helpers


def h2co_files(shared_data: Path) -> tuple[Path, Path]:
    d = shared_data / "mp2_ccsdt"
    return d / "ch2o_mp2_avtz_3601.npz", d / "ch2o_ccf12_avtz_3601.npz"


def write_spec(path: Path, **fidelities) -> Path:
    """A dataset spec file; each fidelity is a path or a dict (energy_unit eV by default)."""
    out = {}
    for name, value in fidelities.items():
        entry = {"path": str(value)} if isinstance(value, (str, Path)) else dict(value)
        entry.setdefault("energy_unit", "eV")
        out[name] = entry
    path.write_text(yaml.safe_dump({"fidelities": out}, sort_keys=False))
    return path


def run_config(spec, labels=None, split=None, epochs=1, **train_opts) -> dict:
    return {
        "data": str(spec),
        "labels": labels or {"mp2": ["energy", "forces"], "f12": ["energy"]},
        "split": split or {"train": 48, "valid": 16, "test": 16, "seed": 1},
        "model": dict(TINY_MODEL),
        "train": {"max_epochs": epochs, "batch_size": 16, "lr": 3e-3, "seed": 0,
                  "device": "cpu", **train_opts},
    }


def write_config(path: Path, values: dict) -> Path:
    path.write_text(yaml.safe_dump(values, sort_keys=False))
    return path


def cli(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_clean_error(code: int, err: str, *fragments: str) -> None:
    """Non-zero exit, one 'mfgnn: error:' message containing ``fragments``, no traceback."""
    assert code == 2, err
    assert "Traceback" not in err
    line = err.strip().splitlines()[-1]  # progress lines, if any, come before
    assert line.startswith("mfgnn: error: "), err
    for fragment in fragments:
        assert fragment in line, (fragment, err)


def lone_h2co_rows(shared_data: Path, rows=range(24)):
    """Real H2CO geometries and MP2 labels (energies relative to free atoms, eV)."""
    raw = np.load(h2co_files(shared_data)[0])
    rows = list(rows)
    keep = raw["Z"][0] > 0
    return (raw["Z"][0][keep], raw["R"][rows][:, keep], raw["E"][rows], raw["F"][rows][:, keep])


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
    """A tiny H2CO model (mp2 energy+forces, f12 energy), one epoch: a trained run folder."""
    folder = tmp_path_factory.mktemp("trained")
    low, high = h2co_files(shared_data)
    spec = write_spec(folder / "h2co.yaml", mp2=low, f12=high)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(config_from_dict(run_config(spec)), folder / "run", log=None)
    finally:
        torch.set_num_threads(before)
    return folder / "run"


# --------------------------------------------------------------------------- elements


def test_unknown_element_for_trained_model_names_file_row_and_allowed(trained_run, tmp_path,
                                                                     shared_data, capsys):
    z, R, E, F = lone_h2co_rows(shared_data, range(10))
    Z = np.tile(z, (10, 1))
    Z[7, 2] = 9  # row 7: an H2CO whose H became F
    np.savez(tmp_path / "with_f.npz", R=R, Z=Z, E=E, F=F)
    spec = write_spec(tmp_path / "f.yaml", mp2=tmp_path / "with_f.npz")
    with pytest.raises(ModelError) as info:
        evaluate_run(trained_run, data=str(spec))
    message = str(info.value)
    assert "with_f.npz" in message and "row 7" in message and "element(s) 9" in message
    assert "allowed atomic numbers: 1, 6, 8" in message
    code, _, err = cli(capsys, "evaluate", trained_run, "--data", spec)
    assert_clean_error(code, err, "with_f.npz", "row 7", "allowed atomic numbers: 1, 6, 8")
    # the model itself refuses unknown elements, including 0 (padding is stripped on load)
    model = load_model(trained_run)
    for bad in ([6, 8, 1, 9], [6, 8, 1, 0]):
        with pytest.raises(ModelError, match=rf"element\(s\) {bad[-1]} not supported"):
            model(Data(z=torch.tensor(bad), pos=torch.as_tensor(R[0], dtype=torch.float32)))


@pytest.mark.parametrize("value, message", [
    (200, r"row 3, atom 1: atomic number 200 is not an element .*"),
    (-6, r"row 3, atom 1: negative atomic number -6"),
])
def test_atomic_number_out_of_range(tmp_path, shared_data, value, message):
    z, R, E, F = lone_h2co_rows(shared_data, range(5))
    Z = np.tile(z, (5, 1))
    Z[3, 1] = value
    np.savez(tmp_path / "z.npz", R=R, Z=Z, E=E, F=F)
    with pytest.raises(DataError, match=rf"z\.npz: {message} \(key 'Z'\)"):
        load_dataset({"fidelities": {"a": {"path": str(tmp_path / "z.npz"), "energy_unit": "eV"}}})


def test_atomic_number_out_of_range_in_ani_h5(tmp_path):
    with h5py.File(tmp_path / "bad.h5", "w") as f:
        g = f.create_group("mol")
        g["coordinates"] = np.array([[[0.0, 0, 0], [1.0, 0, 0]]])
        g["atomic_numbers"] = np.array([1, 150])
        g["dft.energy"] = np.array([-1.0])
    with pytest.raises(DataError, match=r"bad\.h5: group '/mol': atomic number 150 is not an "
                       r"element .*'atomic_numbers'"):
        load_dataset({"fidelities": {"dft": {"path": str(tmp_path / "bad.h5"),
                                             "energy_key": "dft.energy"}}})


def test_atomic_number_zero_is_padding_anywhere_in_a_row(tmp_path, shared_data):
    """Padding columns (Z = 0) before, between and after the atoms, with NaN or garbage
    positions and forces, give exactly the unpadded dataset."""
    z, R, E, F = lone_h2co_rows(shared_data, range(6))
    np.savez(tmp_path / "plain.npz", R=R, Z=np.tile(z, (6, 1)), E=E, F=F)
    cols = [None, 0, 1, None, 2, 3, None]  # None: a padding column
    Zp = np.zeros((6, len(cols)), dtype=np.int64)
    Rp = np.full((6, len(cols), 3), np.nan)
    Fp = np.full((6, len(cols), 3), 1.0e6)
    Rp[:, 3] = 0.0  # padding at the origin: two "atoms" at the same place must not matter
    Rp[:, 6] = 0.0
    for c, k in enumerate(cols):
        if k is not None:
            Zp[:, c], Rp[:, c], Fp[:, c] = z[k], R[:, k], F[:, k]
    np.savez(tmp_path / "padded.npz", R=Rp, Z=Zp, E=E, F=Fp)
    spec = lambda name: {"fidelities": {"a": {"path": str(tmp_path / name),  # noqa: E731
                                              "energy_unit": "eV"}}}
    plain, padded = load_dataset(spec("plain.npz"), 5.0), load_dataset(spec("padded.npz"), 5.0)
    assert (padded.n_atoms == 4).all() and padded.elements == (1, 6, 8)
    assert any("padding" in p for p in padded.provenance)
    for i in range(6):
        a, b = plain[i], padded[i]
        for key in ("z", "pos", "forces", "energy", "edge_index"):
            assert torch.equal(getattr(a, key), getattr(b, key)), key


# --------------------------------------------------------------------------- NaN / inf


def test_nan_energy_is_missing_and_training_uses_the_other_rows(tmp_path, shared_data):
    low, high = h2co_files(shared_data)
    raw = dict(np.load(high))
    raw["E"] = raw["E"].copy()
    raw["E"][::2] = np.nan  # every other row has no high-level label
    np.savez(tmp_path / "f12_half.npz", **raw)
    spec = write_spec(tmp_path / "s.yaml", mp2=low, f12=tmp_path / "f12_half.npz")
    setup = setup_run(config_from_dict(run_config(spec)))
    assert np.isnan(setup.dataset.energies[::2, 1]).all()
    trainer = Trainer(setup, tmp_path / "run", log=None)
    trainer.fit()
    row = trainer.history[-1]
    assert np.isfinite(row["train_loss"]) and np.isfinite(row["valid_loss"])
    assert row["skipped_steps"] == 0
    metrics = json.loads((tmp_path / "run" / "test_metrics.json").read_text())
    n_test_labelled = int(np.isfinite(setup.dataset.energies[setup.split.test, 1]).sum())
    assert metrics["f12"]["n_energy"] == n_test_labelled < len(setup.split.test)


def test_inf_labels_in_extxyz_and_ani_forces_are_errors(tmp_path, shared_data):
    z, R, E, F = lone_h2co_rows(shared_data, range(3))
    frames = []
    for k in range(3):
        a = Atoms(numbers=z, positions=R[k])
        a.info["e_mp2"] = float(E[k]) if k != 1 else float("inf")
        frames.append(a)
    ase.io.write(tmp_path / "inf.xyz", frames, format="extxyz")
    with pytest.raises(DataError, match=r"inf\.xyz: frame 1: energy is inf \(field 'e_mp2'\)"):
        load_dataset({"fidelities": {"a": {"path": str(tmp_path / "inf.xyz"),
                                           "energy_key": "e_mp2", "energy_unit": "eV"}}})
    sample = shared_data / "ani1x_sample" / "ani1_n5.hdf5"
    shutil.copy(sample, tmp_path / "f.h5")
    with h5py.File(tmp_path / "f.h5", "r+") as f:
        group = list(f)[0]
        forces = f[group]["wb97x_dz.forces"]
        block = forces[()]
        block[1, 2, 0] = -np.inf
        forces[...] = block
    ds = load_dataset({"fidelities": {"dft": {"path": str(tmp_path / "f.h5"),
                                              "energy_key": "wb97x_dz.energy"}}})
    assert ds[0].forces.isfinite().all()
    with pytest.raises(DataError, match=rf"group '/{group}', row 1 \(dataset row 1\), atom 2: "
                       r"force .*'wb97x_dz\.forces'.*inf labels are not allowed"):
        ds[1]


def test_corrupt_hdf5_chunk_fails_when_the_row_is_read(tmp_path):
    """A damaged compressed chunk (header intact): the file opens, the good rows read, the
    damaged row raises a DataError naming file, group and row (not an h5py OSError)."""
    rng = np.random.default_rng(0)
    n, n_atoms = 40, 6
    base = np.arange(n_atoms)[:, None] * np.array([1.3, 0.0, 0.0])
    path = tmp_path / "gz.h5"
    with h5py.File(path, "w") as f:
        g = f.create_group("mol")
        g.create_dataset("coordinates", compression="gzip", chunks=(4, n_atoms, 3),
                         data=base[None] + rng.normal(0, 0.05, (n, n_atoms, 3)))
        g["atomic_numbers"] = np.array([6, 1, 1, 8, 1, 1])
        g["dft.energy"] = rng.normal(-2.0, 0.1, n)
        chunk = g["coordinates"].id.get_chunk_info(5)  # rows 20-23
    raw = bytearray(path.read_bytes())
    raw[chunk.byte_offset:chunk.byte_offset + chunk.size] = bytes(chunk.size)
    path.write_bytes(bytes(raw))
    ds = load_dataset({"fidelities": {"dft": {"path": str(path), "energy_key": "dft.energy",
                                              "energy_unit": "eV"}}})
    assert ds[0].pos.shape == (6, 3) and ds[30].pos.shape == (6, 3)
    with pytest.raises(DataError, match=r"gz\.h5: cannot read group '/mol' rows 21-21 .*"
                       r"(truncated|corrupt)"):
        ds[21]


def test_truncated_npz_through_the_cli(tmp_path, shared_data, capsys):
    data = h2co_files(shared_data)[0].read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 3])
    spec = write_spec(tmp_path / "s.yaml", mp2=tmp_path / "cut.npz")
    code, _, err = cli(capsys, "data", "summary", spec)
    assert_clean_error(code, err, "cut.npz", "truncated or corrupt")


def test_level_files_that_disagree_through_the_cli(tmp_path, shared_data, capsys):
    low, _ = h2co_files(shared_data)
    raw = dict(np.load(low))
    raw["R"] = raw["R"].copy()
    raw["R"][1234, 1, 2] += 0.01
    np.savez(tmp_path / "moved.npz", **raw)
    spec = write_spec(tmp_path / "s.yaml", mp2=low, f12=tmp_path / "moved.npz")
    code, _, err = cli(capsys, "data", "summary", spec)
    assert_clean_error(code, err, str(low.resolve()), "moved.npz", "row 1234", "atom 1")


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
        trainer = Trainer(setup, folder / "run", log=None)
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
    ds = trainer.setup.dataset
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
    trainer = Trainer(setup, tmp_path / "run", log=None)
    no_forces = np.array([r for r in setup.split.train if r % 2 == 1])
    assert len(no_forces) >= 16
    setup.split.train = no_forces
    requested, grads = [], []
    forward = type(trainer.model).forward

    def spy_forward(self, data, forces=False, training=False):
        requested.append(forces)
        return forward(self, data, forces=forces, training=training)

    real_grad = torch.autograd.grad
    monkeypatch.setattr(type(trainer.model), "forward", spy_forward)
    monkeypatch.setattr(torch.autograd, "grad", lambda *a, **k: grads.append(1) or real_grad(*a, **k))
    before = [p.detach().clone() for p in trainer.model.parameters()]
    result = trainer._train_epoch()
    assert requested and all(r is False for r in requested)
    assert grads == []
    assert np.isfinite(result["train_loss"]) and result["skipped_steps"] == 0
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.model.parameters()))
    # and a mixed batch does request the MP2 forces
    setup.split.train = np.arange(48)
    requested.clear()
    trainer._train_epoch()
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


def test_model_refuses_non_finite_and_coincident_positions():
    import torch
    from torch_geometric.data import Data

    from mfgnn.errors import ModelError
    from mfgnn.nn import HIPNNConfig, MultiFidelityHIPNN

    model = MultiFidelityHIPNN(HIPNNConfig(n_features=8, n_interactions=1, n_atom_layers=1),
                               ["lo"], [1, 8])
    z = torch.tensor([8, 1, 1])
    pos = torch.tensor([[0.0, 0.0, 0.0], [0.96, 0.0, 0.0], [-0.24, 0.93, 0.0]])
    bad = pos.clone()
    bad[2, 1] = float("nan")
    with pytest.raises(ModelError, match="non-finite coordinates of atom 2"):
        model(Data(z=z, pos=bad), forces=True)
    same = pos.clone()
    same[2] = same[1]
    with pytest.raises(ModelError, match="atoms [12] and [12] are at the same position"):
        model(Data(z=z, pos=same), forces=True)
    assert torch.isfinite(model(Data(z=z, pos=pos), forces=True)["forces"]).all()
