"""Bad input data: elements the trained model does not know, atomic numbers out of range
or used as padding, NaN (a missing label) and inf values, a damaged HDF5 chunk, a
truncated npz file and level files that disagree, each one clear error naming file, row
and field, with nothing lost; and the model's own refusal of non-finite or coincident
positions.

Cases the data-layer tests already cover are not repeated here (see the "Reliability"
section of README.md for the full map): NaN/inf coordinates and inf labels in npz,
coincident atoms (npz, ANI-HDF5, extxyz), level files with different geometries or row
counts, truncated npz/HDF5 at open, implausible declared units, unknown config keys.
"""

from __future__ import annotations

import json
import shutil

import ase.io
import h5py
import numpy as np
import pytest
import torch
from _reliability import (assert_clean_error, cli, h2co_files, lone_h2co_rows, run_config,
                          trained_h2co_run, write_spec)
from ase import Atoms
from torch_geometric.data import Data

from mfgnn.config import config_from_dict
from mfgnn.data import load_dataset
from mfgnn.errors import DataError, ModelError
from mfgnn.model_file import load_model
from mfgnn.training.evaluation import evaluate_run
from mfgnn.training.setup import setup_run
from mfgnn.training.build import build_trainer

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, shared_data):
    return trained_h2co_run(tmp_path_factory, shared_data)


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
    trainer = build_trainer(setup, tmp_path / "run", log=None)
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


# --------------------------------------------------------------------------- the model's checks


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
