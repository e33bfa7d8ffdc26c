"""Shared fixtures: the real multi-level data beside the repository (../shared/data)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("MFGNN_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))

#: Short mode for long checks: on in CI (CI=true) or with MFGNN_SMOKE=1.
SMOKE = (os.environ.get("MFGNN_SMOKE", "") not in ("", "0", "false")
         or os.environ.get("CI", "") not in ("", "0", "false"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Folder of the real datasets. Missing data fails in CI and skips elsewhere."""
    if not SHARED_DATA.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"shared data folder not found: {SHARED_DATA}")
        pytest.skip(f"shared data folder not found: {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture()
def float64_single_thread():
    """float64 checks with one intra-op thread (tiny tensors; no OpenMP spinning on busy
    cores); restores both afterwards."""
    import torch

    old_dtype, old_threads = torch.get_default_dtype(), torch.get_num_threads()
    torch.set_default_dtype(torch.float64)
    torch.set_num_threads(1)
    yield
    torch.set_default_dtype(old_dtype)
    torch.set_num_threads(old_threads)


@pytest.fixture(scope="module")
def molecules(shared_data):
    """Two CH2O geometries (4 atoms) and two aspirin geometries (21 atoms), float64, as
    (atomic numbers, positions in Å) pairs."""
    import numpy as np
    import torch

    ch2o = np.load(shared_data / "mp2_ccsdt" / "ch2o_mp2_avtz_3601.npz")
    asp = np.load(shared_data / "rmd17" / "rmd17_aspirin_train_01.npz")
    out = []
    for k in (0, 1800):
        keep = ch2o["Z"][k] > 0
        out.append((torch.as_tensor(ch2o["Z"][k][keep]).long(),
                    torch.as_tensor(ch2o["R"][k][keep])))
    for k in (0, 500):
        out.append((torch.as_tensor(asp["nuclear_charges"].astype(np.int64)),
                    torch.as_tensor(asp["coords"][k])))
    return out


@pytest.fixture()
def one_thread():
    """Tiny models on a shared 2-core machine: one intra-op thread, restored after."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture()
def h2co_spec(tmp_path, shared_data) -> Path:
    """A dataset spec of the shared H2CO data at MP2 (``mp2``) and CCSD(T)-F12 (``f12``),
    both with energies and forces (eV, eV/Å)."""
    folder = shared_data / "mp2_ccsdt"
    path = tmp_path / "h2co.yaml"
    path.write_text("fidelities:\n"
                    f"  mp2: {{path: {folder / 'ch2o_mp2_avtz_3601.npz'}, energy_unit: eV}}\n"
                    f"  f12: {{path: {folder / 'ch2o_ccf12_avtz_3601.npz'}, energy_unit: eV}}\n")
    return path


def experiment_args(spec, tmp_path, *extra: str) -> list[str]:
    """``mfgnn experiment`` arguments for a smoke run on ``spec`` (MP2 → F12) with a tiny
    model, 48 / 16 / 24 rows, one epoch per run, delta heads; ``extra`` is appended."""
    base = tmp_path / "base.yaml"
    base.write_text("model: {n_features: 8, n_interactions: 1, n_atom_layers: 1,"
                    " n_sensitivities: 6, tensor_order: 0}\n"
                    "train: {batch_size: 16, lr: 3.0e-3}\n")
    return ["experiment", "--data", str(spec), "--low", "mp2", "--high", "f12",
            "--train", "48", "--valid", "16", "--test", "24", "--max-epochs", "1",
            "--heads", "delta", "--config", str(base), "--out", str(tmp_path / "exp"), *extra]
