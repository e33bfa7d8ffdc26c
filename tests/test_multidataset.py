"""Several datasets in one spec: rows concatenated, missing levels NaN, one fidelity
order, the old single-dataset form unchanged, self-energies over all datasets, summary.

Real shared files, cut to a few rows (small npz copies in a temporary folder) for speed.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch_geometric.loader import DataLoader

from mfgnn.cli import main
from mfgnn.data import (DatasetSpec, fit_self_energies, format_summary, load_dataset,
                        parse_spec, read_spec, summarize)
from mfgnn.data.ani_h5 import AniH5Frames
from mfgnn.errors import ConfigError

#: rows kept of each shared file (every STEP-th row)
ROWS = {"h2co": 40, "hcooh": 30, "ch3oh": 30}
STEP = 53
SOURCES = {
    "h2co_mp2": "ch2o_mp2_avtz_3601.npz", "h2co_cc": "ch2o_cc_avtz_3601.npz",
    "hcooh_mp2": "meuwly_db_HCOOH_MP2.npz",
    "ch3oh_mp2": "meuwly_db_CH3OH_MP2.npz", "ch3oh_cc": "ch3oh_cc_avtz_7201.npz",
}


def write_small_files(folder: Path, shared: Path) -> dict[str, Path]:
    """Small npz copies (rows 0, STEP, 2 STEP, ...) of the shared files: name -> path."""
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for key, name in SOURCES.items():
        raw = np.load(shared / "mp2_ccsdt" / name)
        n = len(raw["E"])
        rows = np.arange(0, n, STEP)[:ROWS[key.split("_")[0]]]
        out[key] = folder / f"{key}.npz"
        np.savez(out[key], **{k: raw[k][rows] if raw[k].shape[:1] == (n,) else raw[k]
                             for k in raw.files})
    return out


def multi_spec(files: dict[str, Path], **extra) -> dict:
    """h2co {mp2, ccsdt}, hcooh {mp2}, ch3oh {ccsdt}."""
    def level(key):
        return {"path": str(files[key]), "energy_unit": "eV"}

    return {"name": "three", "datasets": {
        "h2co": {"fidelities": {"mp2": level("h2co_mp2"), "ccsdt": level("h2co_cc")}},
        "hcooh": {"fidelities": {"mp2": level("hcooh_mp2")}},
        "ch3oh": {"fidelities": {"ccsdt": level("ch3oh_cc")}},
    }, **extra}


@pytest.fixture(scope="module")
def files(shared_data, tmp_path_factory) -> dict[str, Path]:
    return write_small_files(tmp_path_factory.mktemp("small"), shared_data)


def _file(path: Path) -> dict[str, np.ndarray]:
    return dict(np.load(path))


def test_rows_are_concatenated_and_missing_levels_are_nan(files):
    ds = load_dataset(multi_spec(files))
    h, f, m = _file(files["h2co_mp2"]), _file(files["hcooh_mp2"]), _file(files["ch3oh_cc"])
    hc = _file(files["h2co_cc"])
    a, b = ROWS["h2co"], ROWS["h2co"] + ROWS["hcooh"]
    assert len(ds) == sum(ROWS.values())
    assert ds.fidelities == ("mp2", "ccsdt") and ds.names == ("h2co", "hcooh", "ch3oh")
    assert ds.dataset_index.dtype == np.int64
    assert ds.dataset_index.tolist() == [0] * a + [1] * ROWS["hcooh"] + [2] * ROWS["ch3oh"]
    assert ds.elements == (1, 6, 8) and ds.has_forces == {"mp2": True, "ccsdt": True}
    # values equal the files' rows (eV); a level a dataset lacks is NaN there
    assert np.array_equal(ds.energies[:a, 0], h["E"])
    assert np.array_equal(ds.energies[:a, 1], hc["E"])
    assert np.array_equal(ds.energies[a:b, 0], f["E"]) and np.isnan(ds.energies[a:b, 1]).all()
    assert np.isnan(ds.energies[b:, 0]).all() and np.array_equal(ds.energies[b:, 1], m["E"])
    assert ds.has_force_rows[:a].all()
    assert ds.has_force_rows[a:b, 0].all() and not ds.has_force_rows[a:b, 1].any()
    assert not ds.has_force_rows[b:, 0].any() and ds.has_force_rows[b:, 1].all()
    assert ds.n_atoms.tolist() == [4] * a + [5] * ROWS["hcooh"] + [6] * ROWS["ch3oh"]
    # items: geometry, labels and the dataset of the row
    item = ds[a + 5]
    assert item.dataset.tolist() == [1] and item.idx.tolist() == [a + 5]
    keep = f["Z"][5] > 0
    assert item.z.tolist() == f["Z"][5][keep].tolist()
    assert torch.equal(item.pos, torch.from_numpy(f["R"][5][keep].astype(np.float32)))
    assert torch.equal(item.forces[:, 0], torch.from_numpy(f["F"][5][keep].astype(np.float32)))
    assert torch.isnan(item.forces[:, 1]).all() and torch.isnan(item.energy[0, 1])
    assert item.energy[0, 0].item() == f["E"][5]
    item = ds[b + 3]
    assert item.dataset.tolist() == [2] and item.z.tolist() == m["Z"][3].tolist()
    assert torch.isnan(item.forces[:, 0]).all()
    assert torch.equal(item.forces[:, 1], torch.from_numpy(m["F"][3].astype(np.float32)))
    z, pos = ds.geometry(-1)
    assert z.tolist() == m["Z"][-1].tolist() and np.array_equal(pos, m["R"][-1])
    # counts of some rows (before the full table is cached), then the full table
    rows = [b + 3, 2, a + 1]
    some = ds.element_counts_of(rows)
    assert some.tolist() == [[4, 1, 1], [2, 1, 1], [2, 1, 2]]
    assert np.array_equal(ds.element_counts()[rows], some)
    # force RMS per fidelity over rows of two datasets
    rms = ds.force_rms([0, a])
    mp2 = np.concatenate([h["F"][0][:4].ravel(), f["F"][0].ravel()])
    assert rms[0] == pytest.approx(np.sqrt(np.mean(mp2**2)), rel=1e-6)
    assert rms[1] == pytest.approx(np.sqrt(np.mean(hc["F"][0][:4] ** 2)), rel=1e-6)
    # subsets keep the datasets of their rows; batches carry them
    sub = ds.subset([b, 0, a]).subset([0, 2])
    assert sub.dataset_index.tolist() == [2, 1] and sub.names == ds.names
    batch = next(iter(DataLoader([ds[i] for i in (0, a, b, b + 1)], batch_size=4)))
    assert batch.dataset.tolist() == [0, 1, 2, 2] and batch.energy.shape == (4, 2)
    assert "datasets=" in repr(ds)


def test_dataset_in_hartree_without_forces_from_extxyz(files, tmp_path):
    from ase import Atoms
    from ase.io import write
    from ase.units import Hartree

    m = _file(files["ch3oh_cc"])
    images = []
    for k in range(5):
        atoms = Atoms(numbers=m["Z"][k], positions=m["R"][k])
        atoms.info["energy"] = m["E"][k] / Hartree
        images.append(atoms)
    write(tmp_path / "mine.extxyz", images, format="extxyz")
    spec = multi_spec(files)
    spec["datasets"] = {"h2co": spec["datasets"]["h2co"], "mine": {"fidelities": {
        "ccsdt": {"path": str(tmp_path / "mine.extxyz"), "energy_unit": "hartree",
                  "forces": None}}}}
    ds = load_dataset(spec)
    rows = ds.rows_of("mine")
    assert ds.names == ("h2co", "mine") and ds.fidelities == ("mp2", "ccsdt")
    assert np.allclose(ds.energies[rows, 1], m["E"][:5], rtol=0, atol=1e-9)
    assert np.isnan(ds.energies[rows, 0]).all() and not ds.has_force_rows[rows].any()
    assert ds.has_forces["ccsdt"]  # h2co declares ccsdt forces
    assert torch.isnan(ds[int(rows[0])].forces).all()


def test_ani_hdf5_dataset_stays_lazy(shared_data, files):
    ani = str(shared_data / "ani1x_sample" / "ani1_n5.hdf5")
    alone = load_dataset({"fidelities": {
        "dft": {"path": ani, "energy_key": "wb97x_dz.energy"},
        "cc": {"path": ani, "energy_key": "ccsd(t)_cbs.energy", "forces_key": None}}})
    ds = load_dataset({"datasets": {
        "h2co": {"fidelities": {"dft": {"path": str(files["h2co_mp2"])}}},
        "ani": {"fidelities": {
            "dft": {"path": ani, "energy_key": "wb97x_dz.energy"},
            "cc": {"path": ani, "energy_key": "ccsd(t)_cbs.energy", "forces_key": None}}}}})
    assert ds.fidelities == ("dft", "cc") and isinstance(ds._blocks[1].frames, AniH5Frames)
    rows = ds.rows_of("ani")
    assert np.array_equal(ds.energies[rows], alone.energies, equal_nan=True)
    assert 7 in ds.elements  # nitrogen only in the ANI sample
    for k, i in enumerate(rows):
        a, b = ds[int(i)], alone[k]
        assert torch.equal(a.z, b.z) and torch.equal(a.pos, b.pos)
        assert torch.equal(a.forces.nan_to_num(123.0), b.forces.nan_to_num(123.0))
    ds.close()  # handles reopen on demand
    assert torch.equal(ds[int(rows[-1])].pos, alone[len(rows) - 1].pos)
    assert np.array_equal(ds.element_counts_of(rows), alone.element_counts())


@pytest.mark.parametrize("datasets, names", [
    ({"a": ["mp2", "ccsdt"], "b": ["ccsdt", "mp2"]}, ("'a'", "'b'")),          # conflict
    ({"a": ["mp2"], "b": ["ccsdt"]}, ("'a'", "'b'")),                           # ambiguous
    ({"a": ["mp2", "ccsdt"], "b": ["hf", "ccsdt"]}, ("'a'", "'b'")),           # ambiguous
    ({"a": ["x", "y"], "b": ["y", "z"], "c": ["z", "x"]}, ("'a'", "'b'", "'c'")),  # cycle
])
def test_inconsistent_orders_are_refused_naming_the_datasets(datasets, names):
    spec = {"datasets": {d: {"fidelities": {f: {"path": f"{d}_{f}.npz"} for f in fids}}
                         for d, fids in datasets.items()}}
    with pytest.raises(ConfigError, match="order") as err:
        parse_spec(spec)
    assert all(n in str(err.value) for n in names), str(err.value)


def test_explicit_order_is_accepted_and_used(files):
    spec = multi_spec(files)
    h2co = spec["datasets"]["h2co"]["fidelities"]
    spec["datasets"]["h2co"]["fidelities"] = {"ccsdt": h2co["ccsdt"], "mp2": h2co["mp2"]}
    spec["datasets"]["extra"] = {"fidelities": {"mp2": h2co["mp2"], "ccsdt": h2co["ccsdt"]}}
    with pytest.raises(ConfigError, match="'h2co' and 'extra'"):
        parse_spec(spec)
    ds = load_dataset({**spec, "order": ["ccsdt", "mp2"]})
    assert ds.fidelities == ("ccsdt", "mp2")
    assert np.array_equal(ds.energies[:ROWS["h2co"], 0], _file(files["h2co_cc"])["E"])
    assert read_spec({**spec, "order": ["ccsdt", "mp2"]}).names == ("ccsdt", "mp2")
    for order, message in ((["ccsdt", "mp3"], r"'mp3' is in no dataset; did you mean 'mp2'"),
                           (["ccsdt"], r"'mp2' .* is missing"),
                           (["ccsdt", "mp2", "mp2"], "listed twice"),
                           ("mp2", "must be a list")):
        with pytest.raises(ConfigError, match=message):
            parse_spec({**spec, "order": order})


def test_old_single_dataset_spec_is_unchanged(files, tmp_path):
    levels = {"mp2": {"path": str(files["h2co_mp2"])}, "ccsdt": {"path": str(files["h2co_cc"])}}
    path = tmp_path / "h2co_pair.yaml"
    path.write_text(yaml.safe_dump({"fidelities": levels}, sort_keys=False))
    ds = load_dataset(path)
    assert ds.names == ("h2co_pair",) and ds.fidelities == ("mp2", "ccsdt")
    assert load_dataset({"name": "mine", "fidelities": levels}).names == ("mine",)
    assert load_dataset({"fidelities": levels}).names == ("data",)
    assert np.array_equal(ds.energies[:, 0], _file(files["h2co_mp2"])["E"])
    assert np.array_equal(ds.energies[:, 1], _file(files["h2co_cc"])["E"])
    assert ds.has_force_rows.all() and not ds.dataset_index.any()
    assert ds[3].dataset.tolist() == [0] and ds[3].idx.tolist() == [3]
    spec = read_spec(path)
    assert spec.dataset_names == ("h2co_pair",)
    assert [f.name for f in spec.fidelities] == ["mp2", "ccsdt"]
    saved = yaml.safe_load(spec.save(tmp_path / "h2co_pair_copy.yaml").read_text())
    assert "fidelities" in saved and "datasets" not in saved  # still the old form


def test_multi_dataset_spec_saves_and_reads_back(files, tmp_path):
    spec = read_spec(multi_spec(files, order=["mp2", "ccsdt"]))
    assert isinstance(spec, DatasetSpec)
    assert spec.dataset_names == ("h2co", "hcooh", "ch3oh") and spec.names == ("mp2", "ccsdt")
    assert [f.name for f in spec.fidelities] == ["mp2", "ccsdt", "mp2", "ccsdt"]
    assert spec.dataset("hcooh").names == ("mp2",)
    with pytest.raises(ConfigError, match="did you mean 'hcooh'"):
        spec.dataset("hcoh")
    again = read_spec(spec.save(tmp_path / "deep" / "spec.yaml"))
    assert again.dataset_names == spec.dataset_names and again.order == ("mp2", "ccsdt")
    assert [f.path for f in again.fidelities] == [f.path for f in spec.fidelities]


@pytest.mark.parametrize("obj, message", [
    ({"datasets": {}}, "'datasets' must be a non-empty mapping"),
    ({"datasets": {"a": {"fidelites": {}}}}, r"dataset 'a': unknown key 'fidelites'; did you mean"),
    ({"datasets": {"a": {"fidelities": {}}}}, r"dataset 'a': 'fidelities' must be a non-empty"),
    ({"datasets": {"a": {"fidelities": {"x": {"path": "x.npz", "energy_units": "eV"}}}}},
     r"dataset 'a': fidelity 'x': unknown key 'energy_units'"),
    ({"datasets": {"a": {"fidelities": {"x": {"path": "x.npz"}}}},
      "fidelities": {"x": {"path": "x.npz"}}}, "not both"),
    ({"dataset": {}}, r"unknown key 'dataset'; did you mean 'datasets'"),
    ({}, "'fidelities' must be a non-empty mapping"),
])
def test_bad_multi_dataset_specs(obj, message):
    with pytest.raises(ConfigError, match=message):
        parse_spec(obj)


def test_self_energies_are_fitted_on_all_datasets_with_full_rank(files):
    spec = multi_spec(files)
    spec["datasets"]["ch3oh"]["fidelities"] = {
        "mp2": {"path": str(files["ch3oh_mp2"]), "energy_unit": "eV"},
        "ccsdt": {"path": str(files["ch3oh_cc"]), "energy_unit": "eV"}}
    ds = load_dataset(spec)
    fit = fit_self_energies(ds)
    # H2CO, HCOOH and CH3OH together: full rank for H, C, O at MP2
    assert fit.rank == {"mp2": 3, "ccsdt": 2}
    assert fit.n_rows == {"mp2": len(ds), "ccsdt": ROWS["h2co"] + ROWS["ch3oh"]}
    counts = np.concatenate([np.tile(c, (ROWS[d], 1)) for d, c in
                             (("h2co", [2, 1, 1]), ("hcooh", [2, 1, 2]), ("ch3oh", [4, 1, 1]))])
    energy = np.concatenate([_file(files[k])["E"] for k in ("h2co_mp2", "hcooh_mp2", "ch3oh_mp2")])
    expected, *_ = np.linalg.lstsq(counts.astype(float), energy, rcond=None)
    assert np.allclose(fit.values[0], expected, rtol=0, atol=1e-8)
    rmse = np.sqrt(np.mean((energy - counts @ expected) ** 2))
    assert fit.residual_rmse["mp2"] == pytest.approx(rmse, rel=1e-9)
    # fitted on training rows only: rows of every dataset in them
    train = np.arange(0, len(ds), 3)
    part = fit_self_energies(ds, train)
    assert part.n_rows["mp2"] == len(train) and part.rank["mp2"] == 3
    # the summary reports rank and residual per fidelity
    s = summarize(spec)
    by_name = {f["name"]: f for f in s["fidelities"]}
    assert by_name["mp2"]["self_energy_rank"] == 3 and by_name["ccsdt"]["self_energy_rank"] == 2
    assert by_name["mp2"]["residual_rmse_eV"] == pytest.approx(rmse, rel=1e-9)
    assert by_name["ccsdt"]["datasets"] == ["h2co", "ch3oh"]
    text = format_summary(s)
    assert "rank 3 of 3" in text and "rank 2 of 3" in text and "rank-deficient" in text


def test_data_summary_reports_each_dataset(files, tmp_path, capsys):
    path = tmp_path / "three.yaml"
    path.write_text(yaml.safe_dump(multi_spec(files), sort_keys=False))
    out = tmp_path / "summary.json"
    assert main(["data", "summary", str(path), "--json", str(out)]) == 0
    text = capsys.readouterr().out
    lines = text.splitlines()
    for name, fids, n in (("h2co", "mp2 ccsdt", 40), ("hcooh", "mp2", 30), ("ch3oh", "ccsdt", 30)):
        line = next(ln for ln in lines if ln.startswith(name + " "))
        assert str(n) in line.split() and fids in line and "H C O" in line
    assert "100 structures in 3 datasets" in text
    d = json.loads(out.read_text())
    sets = {s["name"]: s for s in d["datasets"]}
    assert list(sets) == ["h2co", "hcooh", "ch3oh"]
    assert sets["hcooh"]["fidelities"] == ["mp2"] and sets["hcooh"]["n_structures"] == 30
    assert sets["ch3oh"]["n_forces"] == {"ccsdt": 30}
    assert sets["ch3oh"]["element_symbols"] == ["H", "C", "O"]
    mp2 = d["fidelities"][0]
    assert (mp2["name"], mp2["n_structures"], mp2["n_energy"], mp2["n_forces"]) == \
        ("mp2", 100, 70, 70)
    assert mp2["self_energy_rank"] == 2 and mp2["residual_rmse_eV"] > 0
