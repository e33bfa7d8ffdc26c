"""Head modes on H2CO MP2 -> CCSD(T)-F12: high-level force error of multi-fidelity models
(MP2 energies + forces, F12 energies) for each head parameterisation, against the
single-fidelity model trained to F12 energies alone and the raw MP2-vs-F12 force gap.

    python benchmarks/head_modes.py --out runs/head_modes [--train 1000] [--max-time 900]

Trains with ``mfgnn train`` and scores with ``mfgnn evaluate`` on the test split (F12
forces are never trained). Prints one table; all runs share split, architecture and budget.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "shared" / "data" / "mp2_ccsdt"


def write_spec(folder: Path) -> Path:
    spec = {"fidelities": {
        "mp2": {"path": str(DATA / "ch2o_mp2_avtz_3601.npz"), "energy_unit": "eV"},
        "f12": {"path": str(DATA / "ch2o_ccf12_avtz_3601.npz"), "energy_unit": "eV"}}}
    path = folder / "h2co.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="runs/head_modes")
    parser.add_argument("--train", type=int, default=1000)
    parser.add_argument("--valid", type=int, default=200)
    parser.add_argument("--test", type=int, default=1000)
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
                  "model": {"n_features": args.features, "n_interactions": 2,
                            "n_atom_layers": 3, "n_sensitivities": 20,
                            "tensor_order": args.tensor_order, "heads": mode,
                            "activation": "shifted_softplus"},
                  "loss": {"hierarchicality_weight": args.hierarchicality},
                  "train": {"max_epochs": args.max_epochs, "batch_size": 32, "lr": 2e-3,
                            "patience": 40, "max_time": args.max_time, "seed": 0}}
        cfg_path = out / f"{run.name}.yaml"
        cfg_path.write_text(yaml.safe_dump(config))
        if not (run / "model.pt").is_file():
            cmd = [sys.executable, "-m", "mfgnn.cli", "train", str(cfg_path), "--out", str(run)]
            if (run / "checkpoint.pt").is_file():
                cmd.append("--resume")
            subprocess.run(cmd, check=True)
        metrics_path = run / "evaluate.json"
        subprocess.run([sys.executable, "-m", "mfgnn.cli", "evaluate", str(run),
                        "--json", str(metrics_path)], check=True, stdout=subprocess.DEVNULL)
        results[name] = json.loads(metrics_path.read_text())["f12"]
    split = json.loads((out / "SF-f12_E" / "split.json").read_text())
    r = np.load(DATA / "ch2o_mp2_avtz_3601.npz")["F"][split["test"]]
    h = np.load(DATA / "ch2o_ccf12_avtz_3601.npz")["F"][split["test"]]
    gap = 1000.0 * float(np.sqrt(np.mean((r - h) ** 2)))
    sf = results["SF-f12/E"]["forces_rmse"]
    oracle = results["SF-f12/EF"]["forces_rmse"]
    print(f"\nH2CO, train {args.train}, test {args.test}; CCSD(T)-F12 test errors")
    print(f"{'experiment':<30}{'E RMSE meV':>12}{'F RMSE meV/Å':>14}{'/SF-E':>8}{'/SF-EF':>8}")
    for name, m in results.items():
        f = m["forces_rmse"]
        print(f"{name:<30}{m['energy_rmse']:>12.2f}{f:>14.1f}{f / sf:>8.2f}{f / oracle:>8.2f}")
    print(f"{'raw MP2-vs-F12 force gap':<30}{'':>12}{gap:>14.1f}{gap / sf:>8.2f}{gap / oracle:>8.2f}")
    (out / "summary.json").write_text(json.dumps({"gap": gap, "results": results}, indent=2))


if __name__ == "__main__":
    main()
