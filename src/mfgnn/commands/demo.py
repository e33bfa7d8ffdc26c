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

import argparse
import sys
from pathlib import Path

HELP = "multi- vs single-fidelity training on the bundled H2CO data"

#: The demo's two experiments: name -> labels.
EXPERIMENTS = {
    "MF-mp2/EF-f12/E": {"mp2": ["energy", "forces"], "f12": ["energy"]},
    "SF-f12/E": {"f12": ["energy"]},
}
DEMO_SPLIT = {"train": 1000, "valid": 200, "test": 200, "seed": 0}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="runs/demo", help="folder for the two runs")
    p.add_argument("--max-epochs", type=int, default=None)
    p.add_argument("--max-time", type=float, default=None,
                   help="seconds of training per model")
    p.add_argument("--resume", action="store_true", help="continue unfinished demo runs")


def run(args: argparse.Namespace) -> int:
    return run_demo(args.out, max_epochs=args.max_epochs, max_time=args.max_time,
                    resume=args.resume)


def run_demo(out_dir: str | Path = "runs/demo", max_epochs: int | None = None,
             max_time: float | None = None, resume: bool = False, log=None) -> int:
    """Train both demo models into ``out_dir`` and print the comparison."""
    from ..config import config_from_dict
    from ..data import Split, demo_spec_path, load_dataset
    from ..experiment.baselines import level_references, raw_force_gap
    from ..fileio import write_json_atomic
    from ..presets import DEMO_TRAIN, SMALL_MODEL
    from ..training.build import train
    from ..training.evaluation import evaluate_run

    log = sys.stderr if log is None else log
    out_dir = Path(out_dir)
    spec = str(demo_spec_path())
    train_cfg = dict(DEMO_TRAIN)
    if max_epochs is not None:
        train_cfg["max_epochs"] = max_epochs
    if max_time is not None:
        train_cfg["max_time"] = max_time
    model = {**SMALL_MODEL, "heads": "delta", "head_penalty": 1.0e-3}
    results = {}
    for name, labels in EXPERIMENTS.items():
        run_dir = out_dir / name.replace("/", "_")
        print(f"== {name}: training on {labels}", file=log, flush=True)
        if not (run_dir / "model.pt").is_file() or not resume:
            config = config_from_dict({"data": spec, "labels": labels, "split": DEMO_SPLIT,
                                       "model": model, "train": train_cfg})
            train(config, run_dir, resume=resume, log=log)
        results[name] = evaluate_run(run_dir)
    split = Split.load(out_dir / "SF-f12_E" / "split.json")
    gap = raw_force_gap(level_references(load_dataset(spec), split.test), "mp2", "f12")
    summary = {"units": {"energy": "meV", "forces": "meV/A"},
               "raw_mp2_vs_f12_forces_rmse": gap,
               "experiments": {k: v.get("f12", {}) for k, v in results.items()}}
    write_json_atomic(out_dir / "demo_results.json", summary)
    print(format_demo(summary))
    return 0


def format_demo(summary: dict) -> str:
    """The demo's result table."""
    nan = float("nan")
    gap = summary["raw_mp2_vs_f12_forces_rmse"]
    lines = ["", "CCSD(T)-F12 errors on the test split (no model saw F12 forces):",
             f"{'experiment':<20}{'E RMSE meV':>12}{'F RMSE meV/Å':>15}{'F / gap':>10}"]
    for name, m in summary["experiments"].items():
        f = m.get("forces_rmse", nan)
        lines.append(f"{name:<20}{m.get('energy_rmse', nan):>12.2f}{f:>15.1f}"
                     f"{f / gap:>10.2f}")
    lines.append(f"{'MP2 forces as F12':<20}{'':>12}{gap:>15.1f}{1.0:>10.2f}")
    mf = summary["experiments"].get("MF-mp2/EF-f12/E", {}).get("forces_rmse", nan)
    sf = summary["experiments"].get("SF-f12/E", {}).get("forces_rmse", nan)
    lines.append(f"\nMF / SF force RMSE ratio: {mf / sf:.2f}")
    return "\n".join(lines)
