"""Train a multi-fidelity potential from Python: MP2 energies + forces and CCSD(T)-F12
energies on H2CO, then predict CCSD(T)-F12 forces the model never saw.

    python examples/train_h2co.py [--epochs 30] [--out runs/example]

Uses the shared data beside the repository (``../shared/data``, or
``$MFGNN_SHARED_DATA``) and the same pieces as ``mfgnn train``: ``setup_run`` (dataset,
split, self-energies) and ``build_trainer`` (model, loss, optimiser, checkpoints).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch

from mfgnn.config import config_from_dict
from mfgnn.metrics import format_metrics
from mfgnn.model_file import load_model
from mfgnn.presets import SMALL_MODEL
from mfgnn.training.build import build_trainer
from mfgnn.training.setup import setup_run

SHARED = os.environ.get("MFGNN_SHARED_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data"
DATA = Path(SHARED) / "mp2_ccsdt"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--out", default="runs/example")
    args = parser.parse_args()

    spec = {"fidelities": {
        "mp2": {"path": str(DATA / "ch2o_mp2_avtz_3601.npz"), "energy_unit": "eV"},
        "f12": {"path": str(DATA / "ch2o_ccf12_avtz_3601.npz"), "energy_unit": "eV"},
    }}
    config = config_from_dict({
        "data": spec,
        "labels": {"mp2": ["energy", "forces"], "f12": ["energy"]},
        "split": {"train": 1000, "valid": 200, "test": 500, "seed": 0},
        "model": dict(SMALL_MODEL, heads="delta"),  # 48 features, 2 blocks, tensor order 1
        "train": {"max_epochs": args.epochs, "batch_size": 32, "lr": 2e-3},
    })
    setup = setup_run(config, Path(args.out))     # data, split, self-energies
    trainer = build_trainer(setup, args.out)      # model, loss, optimiser, checkpoints
    test_metrics = trainer.fit()
    print("test split:")
    print(format_metrics(test_metrics))

    model = load_model(Path(args.out) / "model.pt", dtype=torch.float64)
    data = setup.dataset[int(setup.split.test[0])]  # built with the model's cutoff
    out = model(data, forces=["f12"])
    print("F12 energy (eV):", float(out["energy"][0, 1]), "label:", float(data.energy[0, 1]))
    print("F12 forces (eV/Å):\n", out["forces"][:, 1].detach().numpy().round(3))
    print("labels:\n", data.forces[:, 1].numpy().round(3))


if __name__ == "__main__":
    main()
