"""A small multi-fidelity CH3OH model trained on the real data, once per test session.

MP2 energies + forces (``meuwly_db_CH3OH_MP2.npz``) and CCSD(T) energies
(``ch3oh_cc_avtz_7201.npz``), both in eV, same geometries row by row. The model is
small (24 features, 1 interaction, tensor order 1) and trained for about 25 s; it is
good enough for smooth, physically sensible dynamics, which is what the ASE tests need.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
import yaml
from ase import Atoms

#: Seconds of training (the trainer stops after the epoch that passes this).
TRAIN_SECONDS = 20.0

_CACHE: dict[str, Path] = {}


def ch3oh_spec(shared_data: Path) -> dict:
    """Dataset spec: fidelity ``mp2`` then ``ccsdt`` (lowest level first)."""
    folder = Path(shared_data) / "mp2_ccsdt"
    return {"name": "ch3oh", "fidelities": {
        "mp2": {"path": str(folder / "meuwly_db_CH3OH_MP2.npz"), "energy_unit": "eV"},
        "ccsdt": {"path": str(folder / "ch3oh_cc_avtz_7201.npz"), "energy_unit": "eV"},
    }}


def train_ch3oh(out_dir: Path, shared_data: Path, seconds: float = TRAIN_SECONDS) -> Path:
    """Train the small model into ``out_dir/run``; returns the run folder."""
    from mfgnn.config import config_from_dict
    from mfgnn.training.build import train

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    spec_path = out_dir / "ch3oh.yaml"
    spec_path.write_text(yaml.safe_dump(ch3oh_spec(shared_data), sort_keys=False))
    config = config_from_dict({
        "data": str(spec_path),
        "labels": {"mp2": ["energy", "forces"], "ccsdt": ["energy"]},
        "split": {"train": 800, "valid": 100, "test": 100, "seed": 0},
        "model": {"n_features": 24, "n_interactions": 1, "n_atom_layers": 2,
                  "tensor_order": 1, "n_tensor_channels": 8},
        "train": {"max_epochs": 200, "batch_size": 32, "lr": 3.0e-3, "seed": 0,
                  "max_time": seconds, "device": "cpu"},
    })
    run_dir = out_dir / "run"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny batches: one thread is faster on a shared CPU
    try:
        train(config, run_dir, log=None)
    finally:
        torch.set_num_threads(threads)
    return run_dir


def session_model(tmp_path_factory, shared_data: Path) -> Path:
    """Run folder of the session's CH3OH model (trained on first use, then reused)."""
    if "ch3oh" not in _CACHE:
        start = time.monotonic()
        _CACHE["ch3oh"] = train_ch3oh(tmp_path_factory.mktemp("ch3oh_model"), shared_data)
        _CACHE["seconds"] = time.monotonic() - start  # type: ignore[assignment]
    return _CACHE["ch3oh"]


def ch3oh_atoms(shared_data: Path, row: int = 0) -> Atoms:
    """Row ``row`` of the CCSD(T) file as an ASE molecule (Z order C, H, H, H, H, O)."""
    data = np.load(Path(shared_data) / "mp2_ccsdt" / "ch3oh_cc_avtz_7201.npz")
    return Atoms(numbers=data["Z"][row], positions=data["R"][row], pbc=False)


def hydroxyl_dihedral(atoms: Atoms) -> tuple[int, int, int, int]:
    """(H_methyl, C, O, H_hydroxyl) of methanol, the hydroxyl H found by distance to O."""
    z = atoms.numbers
    c = int(np.flatnonzero(z == 6)[0])
    o = int(np.flatnonzero(z == 8)[0])
    hydrogens = np.flatnonzero(z == 1)
    d_o = np.linalg.norm(atoms.positions[hydrogens] - atoms.positions[o], axis=1)
    h_o = int(hydrogens[np.argmin(d_o)])
    h_c = int([h for h in hydrogens if h != h_o][0])
    return h_c, c, o, h_o
