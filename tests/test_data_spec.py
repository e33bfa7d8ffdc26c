"""Dataset spec parsing: dataclasses, relative paths, unknown keys with suggestions."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import yaml

from mfgnn.data import DatasetSpec, load_dataset, read_spec
from mfgnn.data import loading
from mfgnn.errors import ConfigError


def write_yaml(path: Path, obj: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(obj, sort_keys=False))
    return path


def test_yaml_spec_relative_to_its_folder(shared_data, tmp_path):
    d = shared_data / "mp2_ccsdt"
    spec_dir = tmp_path / "specs" / "deep"
    rel = lambda name: os.path.relpath(d / name, spec_dir)  # noqa: E731
    path = write_yaml(spec_dir / "h2co.yaml", {"fidelities": {
        "mp2": {"path": rel("ch2o_mp2_avtz_3601.npz"), "format": "npz", "energy_unit": "eV",
                "length_unit": "Angstrom",
                "keys": {"positions": "R", "numbers": "Z", "energy": "E", "forces": "F"}},
        "ccsdt": {"path": rel("ch2o_cc_avtz_3601.npz"), "energy_unit": "eV"},
    }})
    spec = read_spec(path)
    assert isinstance(spec, DatasetSpec) and spec.names == ("mp2", "ccsdt")
    assert spec.fidelities[1].format == "npz"  # guessed from the suffix
    assert spec.fidelities[0].path == (d / "ch2o_mp2_avtz_3601.npz").resolve()
    for form in (path, str(path), spec):
        assert len(load_dataset(form)) == 3601
    # saved again elsewhere, paths are rewritten relative to the new file
    saved = spec.save(tmp_path / "other" / "copy.yaml")
    again = read_spec(saved)
    assert [f.path for f in again.fidelities] == [f.path for f in spec.fidelities]
    assert not Path(yaml.safe_load(saved.read_text())["fidelities"]["mp2"]["path"]).is_absolute()


@pytest.mark.parametrize("obj, message", [
    ({"fidelites": {}}, r"unknown key 'fidelites'; did you mean 'fidelities'\?"),
    ({"fidelities": {"a": {"path": "x.npz", "energy_units": "eV"}}},
     r"fidelity 'a': unknown key 'energy_units'; did you mean 'energy_unit'\?"),
    ({"fidelities": {"a": {"path": "x.npz", "keys": {"force": "F"}}}},
     r"keys: unknown key 'force'; did you mean 'forces'\?"),
    ({"fidelities": {"a": {"path": "x.npz", "energy_unit": "Hartree"}}},
     r"unknown energy_unit 'Hartree'; did you mean 'hartree'\?"),
    ({"fidelities": {"a": {"path": "x.npz", "length_unit": "angstrom"}}},
     r"unknown length_unit 'angstrom'; did you mean 'Angstrom'\?"),
    ({"fidelities": {"a": {"path": "x.npz", "format": "npzz"}}},
     r"unknown format 'npzz'; did you mean 'npz'\?"),
    ({"fidelities": {"a": {"path": "x.dat"}}}, r"cannot guess the format of 'x\.dat'"),
    ({"fidelities": {"a": {"format": "npz"}}}, r"'path' .* is required"),
    ({"fidelities": {"a": {"path": "x.h5"}}}, r"ani-h5 needs energy_key"),
    ({"fidelities": {}}, r"'fidelities' must be a non-empty mapping"),
    ({"fidelities": {"a": {"path": "x.npz", "energy_key": "E", "keys": {"energy": "E2"}}}},
     r"energy_key='E' conflicts with keys.energy='E2'"),
    ({"fidelities": {"a": {"path": "x.npz", "keys": {"energy": None}}}},
     r"keys.energy cannot be null"),
])
def test_bad_specs_raise_config_error(obj, message):
    with pytest.raises(ConfigError, match=message):
        load_dataset(obj)


def test_missing_spec_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="dataset spec not found"):
        load_dataset(tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("fidelities: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_dataset(tmp_path / "bad.yaml")


def test_missing_data_file_is_a_data_error(tmp_path):
    from mfgnn.errors import DataError

    with pytest.raises(DataError, match=r"data file not found: .*missing\.npz"):
        load_dataset({"fidelities": {"a": {"path": str(tmp_path / "missing.npz")}}})


def test_fidelities_of_one_file_are_read_together(shared_data, monkeypatch):
    calls = []
    real = loading.READERS["ani-h5"]
    monkeypatch.setitem(loading.READERS, "ani-h5", lambda specs: calls.append(len(specs)) or real(specs))
    path = str(shared_data / "ani1x_sample" / "ani1_n5.hdf5")
    ds = load_dataset({"fidelities": {
        "dft": {"path": path, "energy_key": "wb97x_dz.energy"},
        "tz": {"path": path, "energy_key": "wb97x_tz.energy"},
        "cc": {"path": path, "energy_key": "ccsd(t)_cbs.energy", "forces_key": None},
    }})
    assert calls == [3]
    assert ds.fidelities == ("dft", "tz", "cc")
    assert np.isfinite(ds.energies).sum(axis=0).tolist() == [8, 8, 6]


def test_ani_default_unit_is_hartree_and_npz_default_is_ev(tmp_path):
    spec = read_spec({"fidelities": {"a": {"path": "x.h5", "energy_key": "e"},
                                     "b": {"path": "y.npz"}}})
    assert [f.energy_unit for f in spec.fidelities] == ["hartree", "eV"]
    assert [f.energy_unit_declared for f in spec.fidelities] == [False, False]
    assert spec.fidelities[1].path == (Path.cwd() / "y.npz").resolve()
