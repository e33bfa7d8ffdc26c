"""Unit conversions are exact and recorded; implausible declared units warn."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from ase.units import Bohr, Hartree, kcal, mol

from mfgnn.data import load_dataset
from mfgnn.data.plausibility import energy_scale_problem
from mfgnn.units import energy_factor, force_factor, length_factor


def test_factors_match_ase_exactly():
    assert energy_factor("hartree") == Hartree
    assert energy_factor("kcal/mol") == kcal / mol
    assert energy_factor("eV") == 1.0
    assert length_factor("bohr") == Bohr
    assert force_factor("hartree", "bohr") == Hartree / Bohr


def test_hartree_bohr_npz_converted_and_recorded(shared_data, tmp_path):
    raw = np.load(shared_data / "mp2_ccsdt" / "ch2o_mp2_avtz_3601.npz")
    np.savez(tmp_path / "au.npz", R=raw["R"][:50] / Bohr, Z=raw["Z"][:50],
             E=raw["E"][:50] / Hartree, F=raw["F"][:50] * Bohr / Hartree)
    ds = load_dataset({"fidelities": {"mp2": {"path": str(tmp_path / "au.npz"),
                                              "energy_unit": "hartree", "length_unit": "bohr"}}})
    np.testing.assert_array_equal(ds.energies[:, 0], raw["E"][:50] / Hartree * Hartree)
    np.testing.assert_allclose(ds.energies[:, 0], raw["E"][:50], rtol=1e-15)
    np.testing.assert_allclose(ds[3].pos.numpy(), raw["R"][3, :4], rtol=1e-6)
    np.testing.assert_allclose(ds[3].forces[:, 0].numpy(), raw["F"][3, :4], rtol=1e-5)
    text = "\n".join(ds.provenance)
    assert "hartree -> eV" in text and "bohr -> Angstrom" in text and "eV/Angstrom" in text


def test_wrong_units_warn_and_right_units_do_not(shared_data):
    d = shared_data / "mp2_ccsdt"
    h2co = str(d / "ch2o_mp2_avtz_3601.npz")
    aspirin = str(shared_data / "rmd17" / "rmd17_aspirin_train_01.npz")
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        load_dataset({"fidelities": {"a": {"path": h2co, "energy_unit": "eV"}}})
        load_dataset({"fidelities": {"a": {"path": aspirin, "energy_unit": "kcal/mol"}}})
    # relative-to-free-atoms eV values declared as hartree
    with pytest.warns(UserWarning, match=r"ch2o_mp2_avtz_3601\.npz: fidelity 'a' with "
                      r"energy_unit 'hartree': median \|E\| per atom is 110\.2 eV"):
        load_dataset({"fidelities": {"a": {"path": h2co, "energy_unit": "hartree"}}})
    # kcal/mol totals declared as eV or hartree
    with pytest.warns(UserWarning, match=r"'pbe' with energy_unit 'eV': median \|E\| per atom "
                      r"is 1\.935e\+04 eV"):
        load_dataset({"fidelities": {"pbe": {"path": aspirin, "energy_unit": "eV"}}})
    with pytest.warns(UserWarning, match=r"per atom is 5\.264e\+05 eV \(> 100000 eV\)"):
        load_dataset({"fidelities": {"pbe": {"path": aspirin, "energy_unit": "hartree"}}})


def test_scale_rules():
    counts = np.array([[2, 1, 1]] * 3)
    els = (1, 6, 8)
    assert energy_scale_problem(np.array([-3.0, -3.1, np.nan]), counts, els) is None
    assert energy_scale_problem(np.zeros(3), counts, els) is None
    assert "< 0.001" in energy_scale_problem(np.array([1e-4, -1e-4, 2e-4]), counts, els)
    total = -113.9 * Hartree  # H2CO total energy, eV
    assert energy_scale_problem(np.array([total] * 3), counts, els) is None
    assert energy_scale_problem(np.array([total / 10] * 3), counts, els) is not None
