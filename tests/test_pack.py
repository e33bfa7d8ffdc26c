"""Packed datasets: ``mfgnn data pack`` (atomic, resumable, fingerprinted) and
:class:`~mfgnn.data.packed.PackedDataset` (memory-mapped items equal to
MultiFidelityDataset's).

Data: the shared H2CO MP2/F12 npz files and small ANI-layout HDF5 files made on the fly
(several levels, missing labels, padding); a 20 k-conformer file for the memory bound.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import tracemalloc
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml
from torch_geometric.loader import DataLoader

from mfgnn.cli import main
from mfgnn.data import fit_self_energies, load_dataset
from mfgnn.data.pack import KILL_ENV, PROGRESS, pack_dataset
from mfgnn.data.packed import META, PackedDataset, array_layout, open_dataset
from mfgnn.errors import DataError

FIELDS = ("z", "pos", "energy", "forces", "idx", "dataset")
ARRAYS = tuple(array_layout(0, 0, 0))


def assert_same_item(a, b) -> None:
    """Same fields, dtypes and values (NaN where NaN)."""
    for key in FIELDS:
        x, y = getattr(a, key).numpy(), getattr(b, key).numpy()
        assert x.dtype == y.dtype, key
        np.testing.assert_array_equal(x, y, err_msg=key)


def assert_same_pack(a: Path, b: Path) -> None:
    for name in ARRAYS:
        np.testing.assert_array_equal(np.load(a / f"{name}.npy"), np.load(b / f"{name}.npy"),
                                      err_msg=name)


def write_ani(path: Path, groups: int, rows: int, seed: int = 0, width: int | None = None,
              bad_force_row: bool = False) -> None:
    """ANI layout: levels dft (E+F), tz (E+F; group 1 has no tz forces, group 2 no tz at
    all), cc (E, NaN every third row); odd groups carry an atomic-number-0 padding column.
    ``width``: every group has that many atoms, no padding (for big files)."""
    rng = np.random.default_rng(seed)
    with h5py.File(path, "w") as f:
        for g in range(groups):
            n_atoms = width or 4 + 2 * (g % 3)
            z = np.resize(np.array([6, 1, 1, 8]), n_atoms)
            if width is None and g % 2:
                z = np.append(z, 0)
            shape = (rows, len(z), 3)
            grp = f.create_group(f"mol{g:02d}")
            grp["coordinates"] = (np.arange(len(z))[:, None] * np.array([1.3, 0.0, 0.0])
                                  + rng.normal(0, 0.05, shape)).astype(np.float32)
            grp["atomic_numbers"] = z.astype(np.uint8)
            grp["dft.energy"] = -28.5 * n_atoms + rng.normal(0, 0.01, rows)
            forces = rng.normal(0, 0.01, shape).astype(np.float32)
            if bad_force_row and g == 0:
                forces[1, 0, 0] = np.nan  # one NaN component: the row has no dft forces
            grp["dft.forces"] = forces
            if width is not None or g != 2:
                grp["tz.energy"] = -28.6 * n_atoms + rng.normal(0, 0.01, rows)
                if width is not None or g != 1:
                    grp["tz.forces"] = rng.normal(0, 0.01, shape).astype(np.float32)
            cc = -28.7 * n_atoms + rng.normal(0, 0.01, rows)
            cc[::3] = np.nan
            grp["cc.energy"] = cc


def ani_spec(path: Path, folder: Path, name: str = "ani") -> Path:
    spec = {"fidelities": {lv: {"path": str(path), "format": "ani-h5",
                                "energy_key": f"{lv}.energy"} for lv in ("dft", "tz", "cc")}}
    out = folder / f"{name}.yaml"
    out.write_text(yaml.safe_dump(spec, sort_keys=False))
    return out


@pytest.fixture
def small_ani(tmp_path) -> Path:
    """A spec of a 6-group x 40-row ANI file (240 conformers)."""
    write_ani(tmp_path / "small.h5", groups=6, rows=40)
    return ani_spec(tmp_path / "small.h5", tmp_path)


@pytest.fixture(autouse=True)
def _quiet_unit_check():
    with warnings.catch_warnings():  # synthetic energies: the unit plausibility warning
        warnings.simplefilter("ignore", UserWarning)
        yield


def test_h2co_pack_gives_the_datasets_items(h2co_spec, tmp_path):
    out = tmp_path / "pack"
    result = pack_dataset(h2co_spec, out, chunk_rows=1000)
    assert result.n == 3601 and result.n_atoms == 4 * 3601 and not result.already_done
    assert sorted(p.name for p in out.iterdir()) == sorted([*(f"{a}.npy" for a in ARRAYS), META])
    ref, packed = load_dataset(h2co_spec), PackedDataset(out)
    assert len(packed) == len(ref) and packed.fidelities == ("mp2", "f12")
    assert packed.has_forces == ref.has_forces and packed.elements == ref.elements
    assert packed.names == ref.names == ("h2co",) and packed.spec is None
    for i in (0, 1, 999, 1000, 1800, 3600, -1):
        assert_same_item(packed[i], ref[i])
        z, pos = packed.geometry(i)
        np.testing.assert_array_equal(z, ref.geometry(i)[0])
        np.testing.assert_array_equal(pos, ref.geometry(i)[1].astype(np.float32))
    np.testing.assert_array_equal(packed.energies, ref.energies)
    np.testing.assert_array_equal(packed.has_force_rows, ref.has_force_rows)
    np.testing.assert_array_equal(packed.n_atoms, ref.n_atoms)
    np.testing.assert_array_equal(packed.dataset_index, ref.dataset_index)
    np.testing.assert_array_equal(packed.element_counts(), ref.element_counts())
    rows = np.array([3000, 5, 17, 5])
    np.testing.assert_array_equal(packed.element_counts_of(rows), ref.element_counts_of(rows))
    np.testing.assert_allclose(packed.force_rms(rows), ref.force_rms(rows), rtol=1e-12)
    np.testing.assert_array_equal(fit_self_energies(packed, rows).values,
                                  fit_self_energies(ref, rows).values)
    meta = json.loads((out / META).read_text())
    assert meta["units"] == {"energy": "eV", "positions": "Angstrom", "forces": "eV/Angstrom"}
    assert meta["rows_complete"] == meta["n_structures"] == 3601
    assert [Path(s["path"]).name for s in meta["sources"]] == [
        "ch2o_mp2_avtz_3601.npz", "ch2o_ccf12_avtz_3601.npz"]
    assert all(len(s["sha256_head_tail"]) == 64 and s["size"] > 0 for s in meta["sources"])
    assert packed.source_changes() == []


def test_graph_subset_batches_and_pickling(h2co_spec, tmp_path):
    pack_dataset(h2co_spec, tmp_path / "pack")
    packed, ref = PackedDataset(tmp_path / "pack", cutoff=3.0), load_dataset(h2co_spec, cutoff=3.0)
    assert packed.cutoff == 3.0
    for i in (0, 2000):
        np.testing.assert_array_equal(packed[i].edge_index.numpy(), ref[i].edge_index.numpy())
    sub = packed.subset([10, 20, 30])
    np.testing.assert_array_equal(sub.energies, ref.energies[[10, 20, 30]])
    assert sub[1].idx.item() == 20
    batch = next(iter(DataLoader(sub, batch_size=3)))
    assert batch.energy.shape == (3, 2) and batch.forces.shape == (12, 2, 3)
    clone = pickle.loads(pickle.dumps(packed))  # workers map the files themselves
    assert len(pickle.dumps(packed)) < (tmp_path / "pack" / "forces.npy").stat().st_size / 2
    assert_same_item(clone[7], ref[7])
    assert isinstance(open_dataset(tmp_path / "pack"), PackedDataset)


def test_multilevel_ani_and_several_datasets_round_trip(small_ani, h2co_spec, tmp_path):
    """Missing levels (NaN), groups without a level's forces, padding, two datasets."""
    spec = yaml.safe_load(small_ani.read_text())
    h2co = yaml.safe_load(h2co_spec.read_text())["fidelities"]
    for level in h2co.values():
        level["path"] = str(h2co_spec.parent / level["path"])
    multi = tmp_path / "multi.yaml"
    multi.write_text(yaml.safe_dump({"datasets": {"ani": spec, "h2co": {"fidelities": h2co}},
                                     "order": ["mp2", "dft", "tz", "f12", "cc"]},
                                    sort_keys=False))
    for path, rows in ((small_ani, range(240)), (multi, [*range(0, 240, 7), 240, 2000, 3840])):
        out = tmp_path / f"pack_{path.stem}"
        pack_dataset(path, out, chunk_rows=50)
        ref, packed = load_dataset(path), PackedDataset(out)
        assert packed.fidelities == ref.fidelities and packed.names == ref.names
        np.testing.assert_array_equal(packed.energies, ref.energies)
        np.testing.assert_array_equal(packed.has_force_rows, ref.has_force_rows)
        np.testing.assert_array_equal(packed.dataset_index, ref.dataset_index)
        for i in rows:
            assert_same_item(packed[i], ref[i])
    assert packed.names == ("ani", "h2co") and packed.dataset_index[-1] == 1
    k = {f: packed.fidelities.index(f) for f in packed.fidelities}
    assert np.isnan(packed.energies[:240, k["mp2"]]).all()       # another dataset's level
    assert np.isnan(packed.energies[80:120, k["tz"]]).all()      # group 2 has no tz
    assert not packed.has_force_rows[40:80, k["tz"]].any()       # group 1: no tz forces
    assert packed[45].forces[:, k["tz"]].isnan().all()
    cc = packed.energies[:240, k["cc"]].reshape(6, 40)               # NaN every third row
    assert np.isnan(cc[:, ::3]).all() and np.isfinite(cc[:, 1::3]).all()
    assert packed[40].z.tolist() == [6, 1, 1, 8, 6, 1]           # padding removed


def test_extxyz_frames_of_several_sizes(tmp_path):
    import ase.io
    from ase import Atoms

    rng = np.random.default_rng(1)
    frames = []
    for r in range(7):
        n = 3 + r % 3
        a = Atoms(numbers=np.resize([8, 1, 1, 6], n),
                  positions=np.arange(n)[:, None] * [1.1, 0, 0] + rng.normal(0, 0.02, (n, 3)))
        a.info["energy"] = -10.0 * n + rng.normal()
        a.arrays["forces"] = rng.normal(0, 0.3, (n, 3))
        if r != 4:
            a.info["hi_energy"] = -11.0 * n + rng.normal()
        frames.append(a)
    ase.io.write(tmp_path / "f.extxyz", frames, format="extxyz")
    spec = {"fidelities": {
        "lo": {"path": str(tmp_path / "f.extxyz")},
        "hi": {"path": str(tmp_path / "f.extxyz"), "keys": {"energy": "hi_energy",
                                                             "forces": None}}}}
    pack_dataset(spec, tmp_path / "pack", chunk_rows=3)
    ref, packed = load_dataset(spec), PackedDataset(tmp_path / "pack")
    for i in range(7):
        assert_same_item(packed[i], ref[i])
    assert packed.has_forces == {"lo": True, "hi": False} and np.isnan(packed.energies[4, 1])


def test_a_row_with_a_nan_force_has_no_forces(tmp_path):
    write_ani(tmp_path / "nan.h5", groups=2, rows=4, bad_force_row=True)
    pack_dataset(ani_spec(tmp_path / "nan.h5", tmp_path), tmp_path / "pack")
    packed = PackedDataset(tmp_path / "pack")
    assert not packed.has_force_rows[1, 0] and packed[1].forces[:, 0].isnan().all()
    assert packed.has_force_rows[[0, 2], 0].all()


def test_kill_9_mid_pack_resumes_to_the_uninterrupted_result(tmp_path):
    write_ani(tmp_path / "k.h5", groups=6, rows=100)
    spec = ani_spec(tmp_path / "k.h5", tmp_path)
    out, partial = tmp_path / "pack", tmp_path / "pack.partial"
    code = ("import sys; from mfgnn.data.pack import pack_dataset; "
            "pack_dataset(sys.argv[1], sys.argv[2], chunk_rows=70)")
    env = {**os.environ, KILL_ENV: "3", "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-c", code, str(spec), str(out)], env=env,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == -signal.SIGKILL, run.stderr
    assert not out.exists() and not (partial / META).exists()
    # the third chunk was written but not recorded: it is redone
    assert json.loads((partial / PROGRESS).read_text())["rows_done"] == 140
    with pytest.raises(DataError, match=r"pack\.partial: not a finished packed dataset: "
                                        r"meta\.json is missing \(an interrupted"):
        PackedDataset(partial)
    result = pack_dataset(spec, out, chunk_rows=70)
    assert result.resumed_from == 140 and result.n == 600
    assert not partial.exists() and not (out / PROGRESS).exists()
    pack_dataset(spec, tmp_path / "whole", chunk_rows=600)
    assert_same_pack(out, tmp_path / "whole")
    ref = load_dataset(spec)
    for i in (0, 139, 140, 209, 599):
        assert_same_item(PackedDataset(out)[i], ref[i])


def test_a_crash_then_a_changed_source_is_refused_naming_the_file(tmp_path, monkeypatch):
    import mfgnn.data.pack as pack_module

    path = tmp_path / "c.h5"
    write_ani(path, groups=4, rows=30)
    spec, out = ani_spec(path, tmp_path), tmp_path / "pack"
    real, calls = pack_module.read_rows, []

    def crash_on_third(*args):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("simulated crash")
        return real(*args)

    monkeypatch.setattr(pack_module, "read_rows", crash_on_third)
    with pytest.raises(RuntimeError, match="simulated crash"):
        pack_dataset(spec, out, chunk_rows=25)
    monkeypatch.setattr(pack_module, "read_rows", real)
    with h5py.File(path, "r+") as f:
        f["mol01/dft.energy"][3] = -1.0  # same size, other content
    with pytest.raises(DataError, match=rf"source file {path} changed since .*pack\.partial "
                                        r"was packed .*sha256_head_tail.*--force"):
        pack_dataset(spec, out, chunk_rows=25)
    pack_dataset(spec, out, chunk_rows=25, force=True)
    assert PackedDataset(out).energies[33, 0] == pytest.approx(-1.0 * 27.211386, rel=1e-6)


def test_a_finished_pack_is_reused_or_refused(small_ani, tmp_path, capsys):
    out = tmp_path / "pack"
    assert main(["data", "pack", str(small_ani), "--out", str(out), "--chunk-rows", "100"]) == 0
    err = capsys.readouterr().err
    assert "packed 100/240 rows" in err and "rows/s" in err and "ETA" in err
    assert main(["data", "pack", str(small_ani), "--out", str(out)]) == 0
    assert "already packed from these sources" in capsys.readouterr().err
    source = Path(yaml.safe_load(small_ani.read_text())["fidelities"]["dft"]["path"])
    with h5py.File(source, "r+") as f:
        f["mol00/cc.energy"][1] = -2.0
    assert main(["data", "pack", str(small_ani), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"source file {source} changed" in err and "--force" in err
    assert PackedDataset(out).source_changes()[0].startswith(f"{source}: ")
    assert main(["data", "pack", str(small_ani), "--out", str(out), "--force"]) == 0
    assert PackedDataset(out).energies[1, 2] == pytest.approx(-2.0 * 27.211386, rel=1e-6)
    assert not (tmp_path / "pack.old").exists() and not (tmp_path / "pack.partial").exists()


def test_folders_that_are_not_finished_packs_are_refused(small_ani, tmp_path):
    with pytest.raises(DataError, match="no such packed dataset folder"):
        PackedDataset(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"empty: not a finished packed dataset: meta\.json "
                                        "is missing"):
        PackedDataset(tmp_path / "empty")
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="is not a finished packed dataset .* --out"):
        pack_dataset(small_ani, other)
    assert (other / "notes.txt").exists()
    out = tmp_path / "pack"
    pack_dataset(small_ani, out)
    meta = json.loads((out / META).read_text())
    (out / META).write_text(json.dumps({**meta, "rows_complete": 100}))
    with pytest.raises(DataError, match=r"meta\.json: field 'rows_complete' is 100 of 240"):
        PackedDataset(out)
    (out / META).write_text(json.dumps(meta))
    np.save(out / "forces.npy", np.zeros((3, 3, 3), dtype=np.float32))
    with pytest.raises(DataError, match=r"forces\.npy: array 'forces' is float32 \(3, 3, 3\)"):
        PackedDataset(out)[0]


def test_packing_20k_conformers_holds_a_chunk_not_the_data(tmp_path):
    path = tmp_path / "big.h5"
    write_ani(path, groups=4, rows=5000, width=32)  # 20 000 conformers, 640 000 atoms
    spec = ani_spec(path, tmp_path)
    forces_bytes = 20_000 * 32 * 3 * 3 * 4  # (ΣN, F=3, 3) float32: 23 MB
    tracemalloc.start()
    try:
        pack_dataset(spec, tmp_path / "pack", chunk_rows=1000)
        _, pack_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        before, _ = tracemalloc.get_traced_memory()
        packed = PackedDataset(tmp_path / "pack")
        rng = np.random.default_rng(0)
        for i in rng.integers(0, len(packed), 2000):
            packed[int(i)]
        read_peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    assert (tmp_path / "pack" / "forces.npy").stat().st_size >= forces_bytes
    assert pack_peak < 0.3 * forces_bytes, pack_peak
    assert read_peak < 0.05 * forces_bytes, read_peak  # per-row tables only
    ref = load_dataset(spec)
    for i in (0, 4999, 5000, 19_999):
        assert_same_item(packed[i], ref[i])


def test_training_from_a_pack_folder_repeats_training_from_the_spec(h2co_spec, tmp_path):
    """``data:`` may name a pack folder: same split, same losses as the spec itself."""
    from mfgnn.config import config_from_dict
    from mfgnn.training.build import build_trainer
    from mfgnn.training.setup import setup_run

    pack_dataset(h2co_spec, tmp_path / "pack", chunk_rows=1000)
    histories = []
    for name, data in (("spec", str(h2co_spec)), ("pack", str(tmp_path / "pack"))):
        config = config_from_dict({
            "data": data, "labels": {"mp2": ["energy", "forces"], "f12": ["energy"]},
            "split": {"train": 48, "valid": 16, "test": 16, "seed": 2},
            "model": {"n_features": 8, "n_interactions": 1, "n_atom_layers": 1,
                      "n_sensitivities": 6, "tensor_order": 0},
            "train": {"max_epochs": 2, "batch_size": 16}})
        setup = setup_run(config)
        assert isinstance(setup.dataset, PackedDataset) == (name == "pack")
        trainer = build_trainer(setup, tmp_path / name, log=None)
        trainer.fit()
        histories.append([row["valid_loss"] for row in trainer.history])
    assert histories[0] == pytest.approx(histories[1], rel=1e-6)
