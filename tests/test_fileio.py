"""Atomic writes: a failed write leaves the old file and no temporary file behind."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mfgnn.fileio import savez_atomic, write_atomic, write_json_atomic, write_text_atomic


def test_failed_write_keeps_previous_file(tmp_path):
    target = write_text_atomic(tmp_path / "spec.yaml", "fidelities: {}\n")

    def half_then_fail(fh):
        fh.write(b"fidelities:\n  broken")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        write_atomic(target, half_then_fail)
    assert target.read_text() == "fidelities: {}\n"
    assert [p.name for p in tmp_path.iterdir()] == ["spec.yaml"]


def test_json_and_npz(tmp_path):
    write_json_atomic(tmp_path / "a" / "s.json", {"x": [1, 2]})
    assert json.loads((tmp_path / "a" / "s.json").read_text()) == {"x": [1, 2]}
    # one policy for non-finite numbers: strict JSON has no NaN, so they become null
    write_json_atomic(tmp_path / "b.json", {"x": float("nan"), "y": [np.float64("inf"), 2.5]})
    text = (tmp_path / "b.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"x": None, "y": [None, 2.5]}
    savez_atomic(tmp_path / "d.npz", E=np.arange(3.0))
    assert np.load(tmp_path / "d.npz")["E"].tolist() == [0.0, 1.0, 2.0]
