"""npz loader on the real MP2/CCSD(T) and rMD17 files, plus bad-input handling."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from ase.units import kcal, mol

from mfgnn.data import load_dataset
from mfgnn.data import npz as npz_module
from mfgnn.errors import DataError


def npz_spec(*paths, **extra) -> dict:
    names = ["low", "high", "third"]
    return {"fidelities": {names[k]: {"path": str(p), "energy_unit": "eV", **extra}
                           for k, p in enumerate(paths)}}


def test_h2co_mp2_ccsdt_loads_fast_with_padding_removed(shared_data):
    d = shared_data / "mp2_ccsdt"
    t0 = time.perf_counter()
    ds = load_dataset(npz_spec(d / "ch2o_mp2_avtz_3601.npz", d / "ch2o_cc_avtz_3601.npz"))
    assert time.perf_counter() - t0 < 2.0
    raw_low, raw_high = np.load(d / "ch2o_mp2_avtz_3601.npz"), np.load(d / "ch2o_cc_avtz_3601.npz")
    assert raw_low["Z"].shape == (3601, 5)  # 4 atoms + one padding column
    assert len(ds) == 3601 and ds.fidelities == ("low", "high")
    assert ds.elements == (1, 6, 8)
    assert (ds.n_atoms == 4).all()
    assert ds.energies.dtype == np.float64 and ds.energies.shape == (3601, 2)
    np.testing.assert_array_equal(ds.energies[:, 0], raw_low["E"])
    np.testing.assert_array_equal(ds.energies[:, 1], raw_high["E"])
    item = ds[123]
    assert item.z.tolist() == raw_low["Z"][123][:4].tolist() == [6, 8, 1, 1]
    np.testing.assert_allclose(item.pos.numpy(), raw_low["R"][123][:4], atol=1e-6)
    np.testing.assert_allclose(item.forces[:, 1].numpy(), raw_high["F"][123][:4], rtol=1e-6)
    assert ds.has_force_rows.all() and ds.has_forces == {"low": True, "high": True}
    assert any("padding" in p and "5 columns -> 4 atoms" in p for p in ds.provenance)


def test_ch3oh_padded_mp2_pairs_with_unpadded_ccsdt(shared_data):
    d = shared_data / "mp2_ccsdt"
    ds = load_dataset(npz_spec(d / "meuwly_db_CH3OH_MP2.npz", d / "ch3oh_cc_avtz_7201.npz"))
    assert len(ds) == 7201 and (ds.n_atoms == 6).all()
    assert ds.element_counts()[0].tolist() == [4, 1, 1]  # H4 C O
    assert any("7 columns -> 6 atoms" in p for p in ds.provenance)
    assert any("match" in p and "row by row" in p for p in ds.provenance)


def test_h2co_with_hcooh_fails_naming_both_files(shared_data):
    d = shared_data / "mp2_ccsdt"
    with pytest.raises(DataError) as err:
        load_dataset(npz_spec(d / "ch2o_mp2_avtz_3601.npz", d / "hcooh_cc_avtz_5401.npz"))
    msg = str(err.value)
    assert "ch2o_mp2_avtz_3601.npz" in msg and "hcooh_cc_avtz_5401.npz" in msg
    assert "3601" in msg and "5401" in msg


def test_rmd17_two_fidelities_from_one_file_read_once(shared_data, monkeypatch):
    path = shared_data / "rmd17" / "rmd17_aspirin_train_01.npz"
    opened = []
    real_open = npz_module._open_npz
    monkeypatch.setattr(npz_module, "_open_npz", lambda p: opened.append(p) or real_open(p))
    ds = load_dataset({"fidelities": {
        "pbe": {"path": str(path), "energy_unit": "kcal/mol"},
        "md17": {"path": str(path), "energy_unit": "kcal/mol",
                 "keys": {"energy": "old_energies", "forces": "old_forces"}},
    }})
    assert len(opened) == 1
    raw = np.load(path)
    assert len(ds) == 1000 and (ds.n_atoms == 21).all()
    factor = kcal / mol
    np.testing.assert_array_equal(ds.energies[:, 0], raw["energies"] * factor)
    np.testing.assert_array_equal(ds.energies[:, 1], raw["old_energies"] * factor)
    f = ds[5].forces
    np.testing.assert_allclose(f[:, 0].numpy(), raw["forces"][5] * factor, rtol=1e-6)
    np.testing.assert_allclose(f[:, 1].numpy(), raw["old_forces"][5] * factor, rtol=1e-6)
    assert any("kcal/mol -> eV" in p for p in ds.provenance)


def test_molecules_of_different_sizes_in_one_file(tmp_path):
    Z = np.array([[8, 1, 1, 0, 0], [6, 1, 1, 1, 1], [1, 0, 0, 0, 0]])
    rng = np.random.default_rng(0)
    R = np.zeros((3, 5, 3))
    for r, n in enumerate((3, 5, 1)):
        R[r, :n] = np.arange(n)[:, None] * np.array([1.1, 0.0, 0.0]) + rng.normal(0, 0.05, (n, 3))
    np.savez(tmp_path / "mixed.npz", R=R, Z=Z, E=np.array([-1.0, -2.0, -0.5]), F=np.ones((3, 5, 3)))
    ds = load_dataset(npz_spec(tmp_path / "mixed.npz"))
    assert ds.n_atoms.tolist() == [3, 5, 1]
    assert ds[1].z.tolist() == [6, 1, 1, 1, 1]
    assert ds[2].forces.shape == (1, 1, 3)  # a single atom loads fine
    assert ds.element_counts().tolist() == [[2, 0, 1], [4, 1, 0], [1, 0, 0]]


def test_shared_atomic_numbers_and_missing_forces_key(tmp_path):
    R = np.random.default_rng(1).normal(size=(4, 3, 3)) * 2
    np.savez(tmp_path / "a.npz", R=R, Z=np.array([8, 1, 1]), E=np.array([-1.0, np.nan, -1.2, -1.1]))
    ds = load_dataset(npz_spec(tmp_path / "a.npz"))
    assert ds.has_forces == {"low": False} and not ds.has_force_rows.any()
    assert np.isnan(ds.energies[1, 0]) and torch.isnan(ds[0].forces).all()


def test_forces_null_and_nan_forces_row(tmp_path):
    R = np.random.default_rng(2).normal(size=(3, 3, 3)) * 2
    F = np.ones((3, 3, 3))
    F[1, 2, 0] = np.nan
    np.savez(tmp_path / "a.npz", R=R, Z=np.array([8, 1, 1]), E=np.zeros(3) - 1, F=F)
    ds = load_dataset(npz_spec(tmp_path / "a.npz"))
    assert ds.has_force_rows[:, 0].tolist() == [True, False, True]
    assert torch.isnan(ds[1].forces).all() and not torch.isnan(ds[0].forces).any()
    off = load_dataset(npz_spec(tmp_path / "a.npz", keys={"forces": None}))
    assert off.has_forces == {"low": False}


# --------------------------------------------------------------------------- bad input


@pytest.fixture
def h2co_pair(shared_data, tmp_path):
    """A copy of the real H2CO MP2 file and a writer for modified copies."""
    src = shared_data / "mp2_ccsdt" / "ch2o_mp2_avtz_3601.npz"
    arrays = dict(np.load(src))

    def write(name: str, **changes) -> str:
        out = {**arrays, **changes}
        np.savez(tmp_path / name, **out)
        return str(tmp_path / name)

    return src, arrays, write


def test_geometry_mismatch_names_files_and_first_bad_row(h2co_pair):
    src, arrays, write = h2co_pair
    R = arrays["R"].copy()
    R[17, 2, 1] += 1e-3
    R[40, 0, 0] += 1.0
    bad = write("moved.npz", R=R)
    with pytest.raises(DataError) as err:
        load_dataset(npz_spec(src, bad))
    msg = str(err.value)
    assert str(src.resolve()) in msg and "moved.npz" in msg and "row 17" in msg and "atom 2" in msg
    R2 = arrays["R"].copy()
    R2[17, 2, 1] += 5e-8  # below the ~1e-6 Å tolerance
    assert len(load_dataset(npz_spec(src, write("tiny.npz", R=R2)))) == 3601


def test_different_row_counts(h2co_pair):
    src, arrays, write = h2co_pair
    short = write("short.npz", **{k: v[:100] for k, v in arrays.items()})
    with pytest.raises(DataError, match=r"3601 structures but .*short\.npz has 100"):
        load_dataset(npz_spec(src, short))


def test_atomic_numbers_differ(h2co_pair):
    src, arrays, write = h2co_pair
    Z = arrays["Z"].copy()
    Z[5, 1] = 7
    with pytest.raises(DataError, match=r"row 5, atom 1 has atomic number 8 .* and 7"):
        load_dataset(npz_spec(src, write("z.npz", Z=Z)))


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_nan_or_inf_coordinates(h2co_pair, value):
    _, arrays, write = h2co_pair
    R = arrays["R"].copy()
    R[9, 3, 2] = value
    with pytest.raises(DataError, match=r"bad\.npz: row 9, atom 3: coordinate .*field 'R'"):
        load_dataset(npz_spec(write("bad.npz", R=R)))


def test_inf_energy_and_inf_forces(h2co_pair):
    _, arrays, write = h2co_pair
    E = arrays["E"].copy()
    E[33] = -np.inf
    with pytest.raises(DataError, match=r"row 33: energy is -inf \(field 'E'\)"):
        load_dataset(npz_spec(write("e.npz", E=E)))
    F = arrays["F"].copy()
    F[44, 1, 0] = np.inf
    with pytest.raises(DataError, match=r"row 44, atom 1: force .*field 'F'"):
        load_dataset(npz_spec(write("f.npz", F=F)))


def test_missing_key_lists_available_keys(h2co_pair):
    src, _, _ = h2co_pair
    with pytest.raises(DataError) as err:
        load_dataset(npz_spec(src, keys={"energy": "E_mp2"}))
    msg = str(err.value)
    assert "'E_mp2'" in msg and str(src.resolve()) in msg
    for key in ("R", "Z", "E", "F", "N", "Q", "D"):
        assert f"{key}" in msg.split("available keys:")[1]


def test_unrecognised_convention_asks_for_keys(tmp_path):
    np.savez(tmp_path / "odd.npz", xyz=np.zeros((2, 2, 3)), charges=np.array([1, 1]))
    with pytest.raises(DataError, match=r"available keys: xyz, charges"):
        load_dataset(npz_spec(tmp_path / "odd.npz"))


def test_empty_and_truncated_files(h2co_pair, tmp_path):
    src, arrays, write = h2co_pair
    (tmp_path / "empty.npz").write_bytes(b"")
    with pytest.raises(DataError, match="empty"):
        load_dataset(npz_spec(tmp_path / "empty.npz"))
    no_rows = write("norows.npz", **{k: v[:0] for k, v in arrays.items()})
    with pytest.raises(DataError, match="no structures"):
        load_dataset(npz_spec(no_rows))
    data = src.read_bytes()
    for cut in (len(data) // 2, len(data) - 10):
        (tmp_path / "cut.npz").write_bytes(data[:cut])
        with pytest.raises(DataError, match=r"cut\.npz.*(truncated|corrupt)"):
            load_dataset(npz_spec(tmp_path / "cut.npz"))
    # a compressed archive whose members are damaged, central directory intact
    np.savez_compressed(tmp_path / "z.npz", **arrays)
    raw = bytearray((tmp_path / "z.npz").read_bytes())
    raw[200:400] = bytes(200)
    (tmp_path / "z.npz").write_bytes(bytes(raw))
    with pytest.raises(DataError, match=r"z\.npz"):
        load_dataset(npz_spec(tmp_path / "z.npz"))


def test_two_atoms_at_same_position(h2co_pair):
    _, arrays, write = h2co_pair
    R = arrays["R"].copy()
    R[250, 3] = R[250, 1]
    with pytest.raises(DataError, match=r"row 250: atoms 1 and 3 are at the same position"):
        load_dataset(npz_spec(write("dup.npz", R=R)))


def test_bad_shapes(h2co_pair):
    _, arrays, write = h2co_pair
    with pytest.raises(DataError, match=r"'E' has shape \(3600,\)"):
        load_dataset(npz_spec(write("e.npz", E=arrays["E"][:-1])))
    with pytest.raises(DataError, match=r"'Z' has shape \(3\,\)"):
        load_dataset(npz_spec(write("z.npz", Z=np.array([6, 8, 1]))))
