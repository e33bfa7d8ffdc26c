"""extxyz loader: per-fidelity keys in info (energy) and arrays (forces)."""

from __future__ import annotations

import ase.io
import numpy as np
import pytest
from ase import Atoms
from ase.units import Hartree

from mfgnn.data import load_dataset
from mfgnn.errors import DataError


def _frames(shared_data, n=5):
    """Real H2CO MP2 and CCSD(T) labels written as extxyz frames."""
    d = shared_data / "mp2_ccsdt"
    low, high = np.load(d / "ch2o_mp2_avtz_3601.npz"), np.load(d / "ch2o_cc_avtz_3601.npz")
    frames = []
    for r in range(n):
        a = Atoms(numbers=low["Z"][r][:4], positions=low["R"][r][:4])
        a.info["mp2_energy"] = low["E"][r] / Hartree  # stored in hartree
        a.arrays["mp2_forces"] = low["F"][r][:4] / Hartree
        if r != 2:  # frame 2 has no CCSD(T) label
            a.info["energy"] = high["E"][r]
            a.arrays["forces"] = high["F"][r][:4]
        frames.append(a)
    return frames, low, high


def test_extxyz_two_fidelities(shared_data, tmp_path):
    frames, low, high = _frames(shared_data)
    path = tmp_path / "h2co.extxyz"
    ase.io.write(path, frames, format="extxyz")
    ds = load_dataset({"fidelities": {
        "mp2": {"path": str(path), "energy_unit": "hartree",
                "keys": {"energy": "mp2_energy", "forces": "mp2_forces"}},
        "ccsdt": {"path": str(path), "energy_unit": "eV"},
    }})
    assert len(ds) == 5 and ds.fidelities == ("mp2", "ccsdt")
    np.testing.assert_allclose(ds.energies[:, 0], low["E"][:5], rtol=1e-12)
    np.testing.assert_allclose(ds.energies[[0, 1, 3, 4], 1], high["E"][[0, 1, 3, 4]], rtol=1e-12)
    assert np.isnan(ds.energies[2, 1])
    assert ds.has_force_rows.tolist() == [[True, True], [True, True], [True, False],
                                          [True, True], [True, True]]
    np.testing.assert_allclose(ds[1].forces[:, 0].numpy(), low["F"][1][:4], rtol=1e-5)
    np.testing.assert_allclose(ds[1].forces[:, 1].numpy(), high["F"][1][:4], rtol=1e-5)
    assert ds[0].z.tolist() == [6, 8, 1, 1]


def test_extxyz_bad_input(shared_data, tmp_path):
    frames, _, _ = _frames(shared_data, n=3)
    path = tmp_path / "a.xyz"
    ase.io.write(path, frames, format="extxyz")
    with pytest.raises(DataError, match=r"energy key 'dft_energy' .* info keys present: mp2_energy"):
        load_dataset({"fidelities": {"dft": {"path": str(path), "energy_key": "dft_energy"}}})
    with pytest.raises(DataError, match=r"forces key 'dft_forces'.*arrays present"):
        load_dataset({"fidelities": {"mp2": {"path": str(path), "energy_unit": "hartree",
                                             "keys": {"energy": "mp2_energy",
                                                      "forces": "dft_forces"}}}})
    (tmp_path / "empty.xyz").write_text("")
    with pytest.raises(DataError, match="empty"):
        load_dataset({"fidelities": {"x": {"path": str(tmp_path / "empty.xyz")}}})
    text = path.read_text().splitlines()
    (tmp_path / "cut.xyz").write_text("\n".join(text[: len(text) - 2]) + "\n")
    with pytest.raises(DataError, match=r"cut\.xyz"):
        load_dataset({"fidelities": {"x": {"path": str(tmp_path / "cut.xyz"),
                                           "energy_key": "mp2_energy"}}})
    frames[1].positions[2] = frames[1].positions[0]
    ase.io.write(tmp_path / "dup.xyz", frames, format="extxyz")
    with pytest.raises(DataError, match=r"frame 1: atoms 0 and 2 are at the same position"):
        load_dataset({"fidelities": {"x": {"path": str(tmp_path / "dup.xyz"),
                                           "energy_key": "mp2_energy",
                                           "energy_unit": "hartree"}}})
