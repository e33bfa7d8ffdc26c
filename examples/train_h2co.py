"""Train a multi-fidelity potential from Python: MP2 energies + forces and CCSD(T)-F12
energies on H2CO, then predict CCSD(T)-F12 forces the model never saw.

    python examples/train_h2co.py [--epochs 30] [--out runs/example]

Uses the shared data beside the repository (``../shared/data``) and the same pieces as
``mfgnn train``: dataset, split, self-energies, model, loss, trainer.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from mfgnn.config import config_from_dict
from mfgnn.data import load_dataset
from mfgnn.io import load_model
from mfgnn.training.setup import setup_run
from mfgnn.training.trainer import Trainer

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "mp2_ccsdt"


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
        "model": {"n_features": 48, "n_interactions": 2, "n_atom_layers": 2,
                  "tensor_order": 1, "heads": "delta"},
        "train": {"max_epochs": args.epochs, "batch_size": 32, "lr": 2e-3},
    })
    setup = setup_run(config)                    # data, split, self-energies
    trainer = Trainer(setup, args.out)           # model, loss, optimiser, checkpoints
    test_metrics = trainer.fit()
    print("test:", {f: {k: round(v, 2) for k, v in m.items()} for f, m in test_metrics.items()})

    model = load_model(Path(args.out) / "model.pt", dtype=torch.float64)
    dataset = load_dataset(spec, cutoff=model.config.cutoff)
    data = dataset[int(setup.split.test[0])]
    out = model(data, forces=["f12"])
    print("F12 energy (eV):", float(out["energy"][0, 1]), "label:", float(data.energy[0, 1]))
    print("F12 forces (eV/Å):\n", out["forces"][:, 1].detach().numpy().round(3))
    print("labels:\n", data.forces[:, 1].numpy().round(3))


if __name__ == "__main__":
    main()
