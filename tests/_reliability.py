"""Shared helpers of the reliability tests (``test_reliability_*.py``): the H2CO data of
``mp2_ccsdt`` (MP2 and CCSD(T)-F12, same geometries row by row), spec and config files of
a tiny model, CLI calls with their error checks, and one tiny trained run per session.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import yaml

from mfgnn.cli import main
from mfgnn.config import config_from_dict
from mfgnn.training.build import train

TINY_MODEL = {"n_features": 16, "n_interactions": 1, "n_atom_layers": 1,
              "n_sensitivities": 8, "tensor_order": 1, "heads": "delta"}
REPO = Path(__file__).resolve().parents[1]

_CACHE: dict[str, Path] = {}


# --------------------------------------------------------------------------- data, specs


def h2co_files(shared_data: Path) -> tuple[Path, Path]:
    d = shared_data / "mp2_ccsdt"
    return d / "ch2o_mp2_avtz_3601.npz", d / "ch2o_ccf12_avtz_3601.npz"


def write_spec(path: Path, **fidelities) -> Path:
    """A dataset spec file; each fidelity is a path or a dict (energy_unit eV by default)."""
    out = {}
    for name, value in fidelities.items():
        entry = {"path": str(value)} if isinstance(value, (str, Path)) else dict(value)
        entry.setdefault("energy_unit", "eV")
        out[name] = entry
    path.write_text(yaml.safe_dump({"fidelities": out}, sort_keys=False))
    return path


def h2co_spec(folder: Path, shared_data: Path) -> Path:
    """``folder/h2co.yaml``: fidelity ``mp2`` then ``f12``, both in eV (the order of the
    fidelities matters: lowest level first)."""
    low, high = h2co_files(shared_data)
    return write_spec(folder / "h2co.yaml", mp2=low, f12=high)


def lone_h2co_rows(shared_data: Path, rows=range(24)):
    """Real H2CO geometries and MP2 labels (energies relative to free atoms, eV)."""
    raw = np.load(h2co_files(shared_data)[0])
    rows = list(rows)
    keep = raw["Z"][0] > 0
    return (raw["Z"][0][keep], raw["R"][rows][:, keep], raw["E"][rows], raw["F"][rows][:, keep])


# --------------------------------------------------------------------------- run configs


def run_config(spec, labels=None, split=None, epochs=1, **train_opts) -> dict:
    return {
        "data": str(spec),
        "labels": labels or {"mp2": ["energy", "forces"], "f12": ["energy"]},
        "split": split or {"train": 48, "valid": 16, "test": 16, "seed": 1},
        "model": dict(TINY_MODEL),
        "train": {"max_epochs": epochs, "batch_size": 16, "lr": 3e-3, "seed": 0,
                  "device": "cpu", **train_opts},
    }


def run_values(spec: Path, epochs: int, rows=(48, 16, 16), **train) -> dict:
    """``run_config`` with the sizes of the train, valid and test splits as ``rows``."""
    split = {"train": rows[0], "valid": rows[1], "test": rows[2], "seed": 1}
    return run_config(spec, split=split, epochs=epochs, **train)


def write_config(path: Path, values: dict) -> Path:
    path.write_text(yaml.safe_dump(values, sort_keys=False))
    return path


def trained_h2co_run(tmp_path_factory, shared_data: Path) -> Path:
    """A tiny H2CO model (mp2 energy+forces, f12 energy), one epoch: a trained run folder
    (trained on first use, then reused for the whole session)."""
    if "h2co" not in _CACHE:
        folder = tmp_path_factory.mktemp("trained")
        spec = h2co_spec(folder, shared_data)
        before = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            train(config_from_dict(run_config(spec)), folder / "run", log=None)
        finally:
            torch.set_num_threads(before)
        _CACHE["h2co"] = folder / "run"
    return _CACHE["h2co"]


# --------------------------------------------------------------------------- CLI, run files


def cli(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_clean_error(code: int, err: str, *fragments: str) -> None:
    """Non-zero exit, one 'mfgnn: error:' message containing ``fragments``, no traceback."""
    assert code == 2, err
    assert "Traceback" not in err
    line = err.strip().splitlines()[-1]  # progress lines, if any, come before
    assert line.startswith("mfgnn: error: "), err
    for fragment in fragments:
        assert fragment in line, (fragment, err)


def error_line(err: str) -> str:
    """The CLI's error message: the last line of stderr (progress lines come before it),
    with no traceback anywhere."""
    assert "Traceback" not in err, err
    return err.strip().splitlines()[-1]


def load_checkpoint(run: Path) -> dict:
    return torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=False)
