"""data_recipes scripts run on the shared files; the bundled demo; verified downloads."""

from __future__ import annotations

import importlib.util
import tarfile
from pathlib import Path

import h5py
import numpy as np
import pytest

from mfgnn.data import demo_spec_path, load_dataset
from mfgnn.data.download import download, file_digests
from mfgnn.errors import DataError

RECIPES = Path(__file__).resolve().parents[1] / "data_recipes"


def recipe(name: str):
    spec = importlib.util.spec_from_file_location(f"recipe_{name}", RECIPES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_shared_mp2_ccsdt_specs(shared_data, tmp_path):
    mod = recipe("shared_mp2_ccsdt")
    assert mod.main(["--out", str(tmp_path), "--data", str(shared_data / "mp2_ccsdt"),
                     "--no-check"]) == 0
    expected = {"h2co": (3601, 4, ("mp2", "ccsdt", "f12")),
                "hcooh": (5401, 5, ("mp2", "ccsdt", "f12")),
                "ch3oh": (7201, 6, ("mp2", "ccsdt"))}
    for mol, (n, atoms, fids) in expected.items():
        ds = load_dataset(tmp_path / f"{mol}.yaml")
        assert len(ds) == n and (ds.n_atoms == atoms).all() and ds.fidelities == fids
        assert ds.has_force_rows.all()
    assert "../" in (tmp_path / "h2co.yaml").read_text()  # relative paths


def test_shared_widerange_spec(shared_data, tmp_path):
    mod = recipe("shared_widerange")
    assert mod.main(["--out", str(tmp_path), "--data", str(shared_data / "widerange"),
                     "--no-check"]) == 0
    ds = load_dataset(tmp_path / "h2o2_widerange.yaml")
    raw = np.load(shared_data / "widerange" / "h2o2_hf_mp2.npz")
    assert len(ds) == 2500 and ds.fidelities == ("hf", "mp2") and ds.has_force_rows.all()
    assert np.array_equal(ds.energies[:, 1], raw["E_mp2"])
    assert np.allclose(ds[7].forces[:, 0].numpy(), raw["F_hf"][7], atol=1e-5)
    span = ds.energies[:, 1].max() - ds.energies[:, 1].min()
    assert 80 < span < 85  # eV: the wide range the set is for


def test_rmd17_specs(shared_data, tmp_path):
    mod = recipe("rmd17")
    assert mod.main(["--out", str(tmp_path), "--data", str(shared_data / "rmd17"),
                     "--molecules", "ethanol"]) == 0
    specs = sorted(p.name for p in tmp_path.glob("*.yaml"))
    assert specs == ["rmd17_ethanol_test_01.yaml", "rmd17_ethanol_train_01.yaml"]
    ds = load_dataset(tmp_path / "rmd17_ethanol_train_01.yaml")
    raw = np.load(shared_data / "rmd17" / "rmd17_ethanol_train_01.npz")
    assert ds.fidelities == ("pbe", "md17") and len(ds) == 1000
    from ase.units import kcal, mol
    np.testing.assert_array_equal(ds.energies[:, 1], raw["old_energies"] * (kcal / mol))


def test_ani1x_local_sample_and_ccx_subset(shared_data, tmp_path, capsys):
    mod = recipe("ani1x")
    sample = shared_data / "ani1x_sample" / "ani1_n5.hdf5"
    assert mod.main(["--out", str(tmp_path / "all"), "--local", str(sample)]) == 0
    ds = load_dataset(tmp_path / "all" / "ani1x.yaml")
    assert ds.fidelities == ("wb97x_dz", "ccsd(t)_cbs") and len(ds) == 8
    assert np.isfinite(ds.energies).sum(axis=0).tolist() == [8, 6]
    assert ds.has_forces == {"wb97x_dz": True, "ccsd(t)_cbs": False}
    assert mod.main(["--out", str(tmp_path / "ccx"), "--local", str(sample),
                     "--require", "ccsd(t)_cbs"]) == 0
    sub = load_dataset(tmp_path / "ccx" / "ani1x.yaml")
    assert len(sub) == 6 and np.isfinite(sub.energies).all()
    np.testing.assert_array_equal(sub.energies[:, 1], ds.energies[np.isfinite(ds.energies[:, 1]), 1])
    assert "6 conformers" in capsys.readouterr().out
    with pytest.raises(DataError, match="md5"):
        mod.main(["--out", str(tmp_path / "x"), "--local", str(sample), "--md5", "0" * 32])
    with pytest.raises(SystemExit, match="no level"):
        mod.main(["--out", str(tmp_path / "y"), "--local", str(sample), "--levels", "b3lyp"])


def test_comp6_from_release_archive(shared_data, tmp_path):
    """A COMP6v2-layout archive built from the real ANI sample conformers."""
    sample = shared_data / "ani1x_sample" / "ani1_n5.hdf5"
    h5 = tmp_path / "COMP6v2_wB97X-631Gd.h5"
    with h5py.File(sample, "r") as f, h5py.File(h5, "w") as g:
        for name in f:
            n_atoms = f[name]["atomic_numbers"].shape[0]
            grp = g.require_group(f"{n_atoms:03d}")
            rows = f[name]["coordinates"].shape[0]
            for key, src in (("species", np.tile(f[name]["atomic_numbers"][()], (rows, 1))),
                             ("coordinates", f[name]["coordinates"][()]),
                             ("energies", f[name]["wb97x_dz.energy"][()]),
                             ("forces", f[name]["wb97x_dz.forces"][()])):
                if key in grp:
                    src = np.concatenate([grp[key][()], src])
                    del grp[key]
                grp[key] = src
    archive = tmp_path / "COMP6v2_wB97X-631Gd.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(h5, arcname="comp6v2_final_h5/COMP6v2_wB97X-631Gd.h5")
    mod = recipe("comp6")
    out = tmp_path / "out"
    assert mod.main(["--out", str(out), "--local", str(archive)]) == 0
    assert (out / "COMP6v2_wB97X-631Gd.h5").is_file()
    ds = load_dataset(out / "comp6v2.yaml")
    assert len(ds) == 8 and ds.fidelities == ("wb97x_631gd",) and ds.has_force_rows.all()
    assert sorted(ds.n_atoms.tolist()) == [13, 13, 14, 14, 14, 14, 19, 19]


def test_download_verifies_checksum_and_leaves_nothing_on_failure(shared_data, tmp_path):
    src = shared_data / "ani1x_sample" / "ani1_n5.hdf5"
    digests = file_digests(src)
    url = src.resolve().as_uri()
    with pytest.raises(DataError, match="does not match"):
        download(url, tmp_path / "bad.h5", md5="0" * 32, quiet=True)
    assert list(tmp_path.iterdir()) == []
    got = download(url, tmp_path / "ok.h5", md5=digests["md5"], size=src.stat().st_size, quiet=True)
    assert file_digests(got) == digests


def test_bundled_demo_matches_recipe(shared_data, tmp_path):
    mod = recipe("make_demo")
    assert mod.main(["--data", str(shared_data / "mp2_ccsdt"), "--out", str(tmp_path)]) == 0
    bundled = demo_spec_path().parent
    total = 0
    for name in ("h2co_mp2.npz", "h2co_f12.npz"):
        a, b = np.load(bundled / name), np.load(tmp_path / name)
        assert sorted(a.files) == ["E", "F", "R", "Z", "source_rows"]
        for key in a.files:
            assert np.array_equal(a[key], b[key])
        assert a["R"].dtype == a["E"].dtype == a["F"].dtype == np.float64
        assert a["R"].shape == (1400, 4, 3) and a["Z"].tolist() == [6, 8, 1, 1]
    for p in bundled.iterdir():
        total += p.stat().st_size if p.is_file() and not p.name.endswith(".py") else 0
    assert total <= 1_000_000
    assert "MIT License" in (bundled / "LICENSE").read_text()
    readme = (bundled / "README.md").read_text()
    assert "10.1021/acs.jctc.1c00249" in readme and "2021, 17" in readme
    ds = load_dataset(demo_spec_path())
    assert ds.fidelities == ("mp2", "f12") and len(ds) == 1400
    rows = np.load(bundled / "h2co_mp2.npz")["source_rows"]
    raw = np.load(shared_data / "mp2_ccsdt" / "ch2o_ccf12_avtz_3601.npz")
    np.testing.assert_array_equal(ds.energies[:, 1], raw["E"][rows])
