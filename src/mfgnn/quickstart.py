"""``mfgnn demo``: the package's main job on its bundled data.

Trains two potentials on the bundled H2CO subset (MP2 energies and forces, CCSD(T)-F12
energies and forces; see ``mfgnn/demo/README.md``):

* ``MF-mp2/EF-f12/E``: multi-fidelity, MP2 energies + forces and CCSD(T)-F12 energies;
* ``SF-f12/E``: single-fidelity, CCSD(T)-F12 energies only;

and scores both on CCSD(T)-F12 forces of the test split, which neither model saw. The
multi-fidelity model's high-level forces should come out several times better, and
better than simply using the MP2 forces (the "raw gap").
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from .config import config_from_dict
from .data import Split, demo_spec_path, load_dataset
from .io import atomic_json_dump
from .run import evaluate_run, train

#: The architecture and budget of the demo (small enough for a laptop CPU).
DEMO_MODEL = {"n_features": 48, "n_interactions": 2, "n_atom_layers": 2,
              "n_sensitivities": 16, "cutoff": 6.5, "tensor_order": 1,
              "activation": "shifted_softplus",
              "heads": "delta", "head_penalty": 1.0e-3}
DEMO_TRAIN = {"max_epochs": 150, "batch_size": 32, "lr": 2.0e-3, "patience": 30,
              "scheduler_patience": 8, "seed": 0, "max_time": 150.0}
DEMO_SPLIT = {"train": 1000, "valid": 200, "test": 200, "seed": 0}

EXPERIMENTS = {
    "MF-mp2/EF-f12/E": {"mp2": ["energy", "forces"], "f12": ["energy"]},
    "SF-f12/E": {"f12": ["energy"]},
}


def raw_force_gap(spec, indices, low: str, high: str) -> float:
    """RMS of F_low − F_high over force components of ``indices`` (meV/Å): the error of
    using the low level's forces as high-level forces."""
    dataset = load_dataset(spec)
    lo, hi = dataset.fidelities.index(low), dataset.fidelities.index(high)
    sq, n = 0.0, 0
    for i in indices:
        f = dataset[int(i)].forces.double()
        d = f[:, lo] - f[:, hi]
        ok = d.isfinite()
        sq += float(d[ok].square().sum())
        n += int(ok.sum())
    return 1000.0 * (sq / n) ** 0.5


def run_demo(out_dir: str | Path = "runs/demo", max_epochs: int | None = None,
             max_time: float | None = None, resume: bool = False, log=None) -> int:
    """Train both demo models into ``out_dir`` and print the comparison."""
    log = sys.stderr if log is None else log
    out_dir = Path(out_dir)
    spec = str(demo_spec_path())
    train_cfg = dict(DEMO_TRAIN)
    if max_epochs is not None:
        train_cfg["max_epochs"] = max_epochs
    if max_time is not None:
        train_cfg["max_time"] = max_time
    results = {}
    for name, labels in EXPERIMENTS.items():
        run = out_dir / name.replace("/", "_")
        print(f"== {name}: training on {labels}", file=log, flush=True)
        if not (run / "model.pt").is_file() or not resume:
            config = config_from_dict({"data": spec, "labels": labels, "split": DEMO_SPLIT,
                                       "model": DEMO_MODEL, "train": train_cfg})
            train(config, run, resume=resume, log=log)
        results[name] = evaluate_run(run)
    split = Split.load(out_dir / "SF-f12_E" / "split.json")
    gap = raw_force_gap(spec, split.test, "mp2", "f12")
    summary = {"units": {"energy": "meV", "forces": "meV/A"},
               "raw_mp2_vs_f12_forces_rmse": gap,
               "experiments": {k: v.get("f12", {}) for k, v in results.items()}}
    atomic_json_dump(summary, out_dir / "demo_results.json")
    print(format_demo(summary))
    return 0


def format_demo(summary: dict) -> str:
    """The demo's result table."""
    gap = summary["raw_mp2_vs_f12_forces_rmse"]
    lines = ["", "CCSD(T)-F12 errors on the test split (no model saw F12 forces):",
             f"{'experiment':<20}{'E RMSE meV':>12}{'F RMSE meV/Å':>15}{'F / gap':>10}"]
    for name, m in summary["experiments"].items():
        f = m.get("forces_rmse", float("nan"))
        lines.append(f"{name:<20}{m.get('energy_rmse', float('nan')):>12.2f}{f:>15.1f}"
                     f"{f / gap:>10.2f}")
    lines.append(f"{'MP2 forces as F12':<20}{'':>12}{gap:>15.1f}{1.0:>10.2f}")
    mf = summary["experiments"].get("MF-mp2/EF-f12/E", {}).get("forces_rmse", np.nan)
    sf = summary["experiments"].get("SF-f12/E", {}).get("forces_rmse", np.nan)
    lines.append(f"\nMF / SF force RMSE ratio: {mf / sf:.2f}")
    return "\n".join(lines)
