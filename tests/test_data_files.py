"""One check for a missing, empty or non-regular data file, with one wording per format."""

from __future__ import annotations

import re

import pytest

from mfgnn.data import load_dataset
from mfgnn.data.files import check_readable_file
from mfgnn.errors import DataError

#: spec format, file suffix, the kind named in messages, extra spec fields
FORMATS = [
    ("npz", ".npz", "npz", {}),
    ("ani-h5", ".h5", "ANI HDF5", {"energy_key": "wb97x_dz.energy"}),
    ("extxyz", ".xyz", "extxyz", {}),
]


def load(path, fmt: str, extra: dict):
    return load_dataset({"fidelities": {"x": {"path": str(path), "format": fmt, **extra}}})


@pytest.mark.parametrize("fmt,suffix,what,extra", FORMATS, ids=[f[0] for f in FORMATS])
def test_missing_file_names_file_and_format(tmp_path, fmt, suffix, what, extra):
    path = (tmp_path / f"missing{suffix}").resolve()
    with pytest.raises(DataError) as err:
        load(path, fmt, extra)
    assert str(err.value) == f"{what} data file not found: {path}"


@pytest.mark.parametrize("fmt,suffix,what,extra", FORMATS, ids=[f[0] for f in FORMATS])
def test_empty_file_names_file_and_format(tmp_path, fmt, suffix, what, extra):
    path = (tmp_path / f"empty{suffix}").resolve()
    path.write_bytes(b"")
    with pytest.raises(DataError) as err:
        load(path, fmt, extra)
    assert str(err.value) == f"{path}: the {what} file is empty"


@pytest.mark.parametrize("fmt,suffix,what,extra", FORMATS, ids=[f[0] for f in FORMATS])
def test_folder_is_not_a_data_file(tmp_path, fmt, suffix, what, extra):
    path = (tmp_path / f"folder{suffix}").resolve()
    path.mkdir()
    with pytest.raises(DataError, match=re.escape(
            f"{path}: not a regular file (expected the {what} data file)")):
        load(path, fmt, extra)


def test_check_readable_file_returns_the_path(tmp_path):
    path = tmp_path / "ok.bin"
    path.write_bytes(b"x")
    assert check_readable_file(str(path), "test") == path
    with pytest.raises(DataError, match="test data file not found"):
        check_readable_file(tmp_path / "nope.bin", "test")
