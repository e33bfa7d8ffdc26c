"""Random splits with a seed: sizes, disjointness, JSON round trip, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mfgnn.data import Split, load_dataset, make_split
from mfgnn.errors import DataError


def test_counts_fractions_and_rest():
    s = make_split(100, 60, 20, seed=1)
    assert s.sizes() == {"train": 60, "valid": 20, "test": 20}
    s = make_split(100, 60, 20, 5, seed=1)
    assert s.sizes() == {"train": 60, "valid": 20, "test": 5}
    s = make_split(10, 0.8, 0.1, 0.1, seed=1)
    assert s.sizes() == {"train": 8, "valid": 1, "test": 1}
    s = make_split(1001, 0.5, 0.25)
    assert s.sizes() == {"train": 500, "valid": 250, "test": 251}
    assert np.array_equal(make_split(50, 10, 5, seed=7).train, make_split(50, 10, 5, seed=7).train)
    assert not np.array_equal(make_split(50, 10, 5, seed=7).train, make_split(50, 10, 5, seed=8).train)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(3, 500), a=st.floats(0.05, 0.6), b=st.floats(0.05, 0.3), seed=st.integers(0, 99))
def test_no_row_in_two_splits(n, a, b, seed):
    try:
        s = make_split(n, a, b, seed=seed)
    except DataError:
        return  # a split would be empty for this tiny n
    rows = np.concatenate([s.train, s.valid, s.test])
    assert len(rows) == len(set(rows.tolist())) == n
    assert rows.min() >= 0 and rows.max() < n


def test_no_geometry_in_two_splits_on_real_data(shared_data):
    d = shared_data / "mp2_ccsdt"
    ds = load_dataset({"fidelities": {"mp2": {"path": str(d / "ch2o_mp2_avtz_3601.npz")}}})
    s = make_split(len(ds), 2000, 500, seed=3)
    R = np.load(d / "ch2o_mp2_avtz_3601.npz")["R"]  # row k of the file is row k of ds
    assert np.array_equal(ds[17].pos.numpy(), R[17, :4].astype(np.float32))
    key = lambda i: R[i].round(5).tobytes()  # noqa: E731
    seen = {name: {key(i) for i in getattr(s, name)} for name in ("train", "valid", "test")}
    assert not (seen["train"] & seen["valid"]) and not (seen["train"] & seen["test"])
    assert not (seen["valid"] & seen["test"])
    assert sum(len(v) for v in seen.values()) == 3601


def test_save_and_load(tmp_path):
    s = make_split(30, 20, 5, seed=11)
    path = s.save(tmp_path / "split.json")
    assert not list(tmp_path.glob(".*tmp"))  # written atomically, nothing left behind
    back = Split.load(path)
    for name in ("train", "valid", "test"):
        assert np.array_equal(getattr(back, name), getattr(s, name))
    assert back.n == 30 and back.seed == 11
    assert json.loads(path.read_text())["train"] == s.train.tolist()


@pytest.mark.parametrize("args, message", [
    ((10, 8, 3), "exceed the 10 rows"),
    ((10, 5, 3, 3), "exceed the 10 rows"),
    ((7, 0.8, 0.1, 0.1), "split 'test' would be empty"),
    ((5, 0.9, 0.05), "split 'valid' would be empty"),
    ((10, -1, 2), "must be >= 0"),
    ((10, 1.5, 0.1), r"fraction must be in \[0, 1\]"),
    ((10, True, 2), "count .* or a fraction"),
])
def test_errors(args, message):
    with pytest.raises(DataError, match=message):
        make_split(*args)


def test_load_rejects_bad_files(tmp_path):
    (tmp_path / "a.json").write_text('{"train": [1, 2], "valid": [2], "test": []}')
    with pytest.raises(DataError, match="two splits"):
        Split.load(tmp_path / "a.json")
    (tmp_path / "b.json").write_text("{not json")
    with pytest.raises(DataError, match="not a valid split JSON"):
        Split.load(tmp_path / "b.json")
    with pytest.raises(DataError, match="not found"):
        Split.load(tmp_path / "c.json")
