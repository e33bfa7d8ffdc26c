"""``mfgnn data summary``: the figures the issue requires, JSON output, errors."""

from __future__ import annotations

import json

import pytest
import yaml

from mfgnn.data import format_summary, run_summary, summarize
from mfgnn.errors import ConfigError, DataError


def test_ani_sample_dft_and_ccsdt(shared_data, tmp_path, capsys):
    path = shared_data / "ani1x_sample" / "ani1_n5.hdf5"
    spec = tmp_path / "ani.yaml"
    spec.write_text(yaml.safe_dump({"fidelities": {
        "wb97x_dz": {"path": str(path), "format": "ani-h5", "energy_unit": "hartree",
                     "energy_key": "wb97x_dz.energy"},
        "ccsd(t)_cbs": {"path": str(path), "format": "ani-h5", "energy_unit": "hartree",
                        "energy_key": "ccsd(t)_cbs.energy"},
    }}, sort_keys=False))
    out = tmp_path / "out" / "summary.json"
    assert run_summary(str(spec), str(out)) == 0
    d = json.loads(out.read_text())
    dft, cc = d["fidelities"]
    assert d["n_structures"] == 8
    assert (dft["n_structures"], dft["n_energy"], dft["n_forces"]) == (8, 8, 8)
    assert (cc["n_structures"], cc["n_energy"], cc["n_forces"], cc["has_forces"]) == (8, 6, 0, False)
    assert dft["element_symbols"] == ["H", "C", "N", "O"] == cc["element_symbols"]
    assert set(dft["self_energies_eV"]) == {"H", "C", "N", "O"}
    assert dft["self_energies_eV"] != cc["self_energies_eV"]
    assert dft["residual_rmse_eV"] > 0
    text = capsys.readouterr().out
    assert "8 structures" in text and "ccsd(t)_cbs" in text and "wrote" in text
    line = next(ln for ln in text.splitlines() if ln.startswith("ccsd(t)_cbs "))
    assert line.split()[1:4] == ["8", "6", "-"]


def test_ch3oh_mp2_ccsdt(shared_data):
    d = shared_data / "mp2_ccsdt"
    s = summarize({"fidelities": {
        "mp2": {"path": str(d / "meuwly_db_CH3OH_MP2.npz"), "energy_unit": "eV"},
        "ccsdt": {"path": str(d / "ch3oh_cc_avtz_7201.npz"), "energy_unit": "eV"}}})
    assert s["n_structures"] == 7201
    assert s["atoms_per_structure"] == {"min": 6, "max": 6, "mean": 6.0}
    for f in s["fidelities"]:
        assert (f["n_structures"], f["n_energy"], f["n_forces"]) == (7201, 7201, 7201)
        assert f["self_energy_rank"] == 1  # one composition: minimum-norm solution
    assert "rank-deficient" in format_summary(s)
    assert any("padding" in p for p in s["provenance"])


def test_h2co_with_hcooh_fails_with_both_names(shared_data, tmp_path):
    d = shared_data / "mp2_ccsdt"
    spec = tmp_path / "bad.yaml"
    spec.write_text(yaml.safe_dump({"fidelities": {
        "mp2": {"path": str(d / "ch2o_mp2_avtz_3601.npz"), "energy_unit": "eV"},
        "ccsdt": {"path": str(d / "hcooh_cc_avtz_5401.npz"), "energy_unit": "eV"}}}))
    out = tmp_path / "s.json"
    with pytest.raises(DataError) as err:
        run_summary(str(spec), str(out))
    assert "ch2o_mp2_avtz_3601.npz" in str(err.value) and "hcooh_cc_avtz_5401.npz" in str(err.value)
    assert not out.exists()  # nothing half-written


def test_unknown_spec_key(tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text("fidelities:\n  a:\n    path: x.npz\n    unit: eV\n")
    with pytest.raises(ConfigError, match="unknown key 'unit'"):
        run_summary(str(spec), None)
