"""Head modes on H2CO MP2 -> CCSD(T)-F12: high-level force error of multi-fidelity models
(MP2 energies + forces, F12 energies) for each head parameterisation, against the
single-fidelity model trained to F12 energies alone and the raw MP2-vs-F12 force gap.

    python benchmarks/head_modes.py --out runs/head_modes [--train 1000] [--max-time 900]

Trains as ``mfgnn train`` does (``mfgnn.training.build.train``) and scores as ``mfgnn
evaluate`` does (``evaluate_run``) on the test split (F12 forces are never trained).
Prints one table; all runs share split, architecture and budget.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import yaml

from _common import H2CO_F12, H2CO_MP2, Table, add_split_arguments, model_config
from mfgnn.metrics import rms_gap
from mfgnn.training.build import train
from mfgnn.training.evaluation import evaluate_run


def write_spec(folder: Path) -> Path:
    spec = {"fidelities": {
        "mp2": {"path": str(H2CO_MP2), "energy_unit": "eV"},
        "f12": {"path": str(H2CO_F12), "energy_unit": "eV"}}}
    path = folder / "h2co.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="runs/head_modes")
    add_split_arguments(parser)
    parser.add_argument("--max-epochs", type=int, default=400)
    parser.add_argument("--max-time", type=float, default=900.0)
    parser.add_argument("--modes", default="independent,delta,tethered")
    parser.add_argument("--tensor-order", type=int, default=1)
    parser.add_argument("--features", type=int, default=64)
    parser.add_argument("--hierarchicality", type=float, default=0.01)
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    spec = write_spec(out)
    runs = {"SF-f12/E": ("independent", {"f12": ["energy"]}),
            "SF-f12/EF": ("independent", {"f12": ["energy", "forces"]})}
    for mode in args.modes.split(","):
        runs[f"MF-mp2/EF-f12/E[{mode}]"] = (mode, {"mp2": ["energy", "forces"],
                                                   "f12": ["energy"]})
    results = {}
    for name, (mode, labels) in runs.items():
        run = out / name.replace("/", "_")
        config = {"data": str(spec), "labels": labels,
                  "split": {"train": args.train, "valid": args.valid, "test": args.test,
                            "seed": 0},
                  "model": model_config(n_features=args.features,
                                        tensor_order=args.tensor_order, heads=mode,
                                        activation="shifted_softplus"),
                  "loss": {"hierarchicality_weight": args.hierarchicality},
                  "train": {"max_epochs": args.max_epochs, "batch_size": 32, "lr": 2e-3,
                            "patience": 40, "max_time": args.max_time, "seed": 0}}
        cfg_path = out / f"{run.name}.yaml"
        cfg_path.write_text(yaml.safe_dump(config))
        if not (run / "model.pt").is_file():
            train(cfg_path, run, resume=(run / "checkpoint.pt").is_file())
        results[name] = evaluate_run(run, json_path=str(run / "evaluate.json"))["f12"]
    split = json.loads((out / "SF-f12_E" / "split.json").read_text())
    gap = rms_gap(np.load(H2CO_MP2)["F"][split["test"]], np.load(H2CO_F12)["F"][split["test"]])
    sf = results["SF-f12/E"]["forces_rmse"]
    oracle = results["SF-f12/EF"]["forces_rmse"]
    table = Table(("experiment", "<30", ""), ("E RMSE meV", ">12", ".2f"),
                  ("F RMSE meV/Å", ">14", ".1f"), ("/SF-E", ">8", ".2f"), ("/SF-EF", ">8", ".2f"),
                  sep="")
    print(f"\nH2CO, train {args.train}, test {args.test}; CCSD(T)-F12 test errors")
    print(table.header())
    for name, m in results.items():
        f = m["forces_rmse"]
        print(table.row(name, m["energy_rmse"], f, f / sf, f / oracle))
    print(table.row("raw MP2-vs-F12 force gap", "", gap, gap / sf, gap / oracle))
    (out / "summary.json").write_text(json.dumps({"gap": gap, "results": results}, indent=2))


if __name__ == "__main__":
    main()
