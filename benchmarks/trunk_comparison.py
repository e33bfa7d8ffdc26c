"""Accuracy and cost of the trunk choices, run through ``mfgnn experiment``.

    python benchmarks/trunk_comparison.py --data specs/h2co.yaml --low mp2 --high f12 \
        --out runs/trunks [--seeds 1] [--max-time 90] [--trunks l0,l1,l2,l0_e3nn]

Trunks (everything else is the ``mfgnn experiment`` default model and budget):

- ``l0``: HIP-NN, scalar sensitivities only (tensor_order 0);
- ``l1``: the default, tensor sensitivities to ℓ = 1;
- ``l2``: HIP-NN-TS to ℓ = 2;
- ``l0_e3nn``: ℓ = 0 plus the e3nn equivariant block after the interaction blocks
  (lmax 2, 32 channels, one layer).

For each trunk it runs three experiments of the matrix on one shared split:
``SF-<high>/E``, ``SF-<high>/EF`` and ``MF-<low>/EF-<high>/E[delta]``, and prints one
markdown table: high-level energy and force RMSE on the test split (meV, meV/Å; mean ±
95 % CI over seeds), the
number of epochs the time budget allowed, and the median seconds per epoch read from each
run's ``metrics.csv``. Every run has the same wall-time budget, so a costlier trunk trains
fewer epochs: the table answers "which trunk is best for this much CPU time", and the
seconds-per-epoch column gives the cost. Re-running with the same ``--out`` reuses
finished runs.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
from pathlib import Path

import yaml

from _common import add_split_arguments
from mfgnn.experiment import ExperimentSettings, run_experiment
from mfgnn.experiment.plan import Experiment
from mfgnn.presets import EXPERIMENT_TRAIN, SMALL_MODEL

EQUIVARIANT = {"lmax": 2, "channels": 32, "layers": 1, "position": "after"}
TRUNKS = {
    "l0": ("HIP-NN, ℓ = 0", {"tensor_order": 0}),
    "l1": ("HIP-NN-TS, ℓ = 1 (default)", {"tensor_order": 1}),
    "l2": ("HIP-NN-TS, ℓ = 2", {"tensor_order": 2}),
    "l0_e3nn": ("HIP-NN ℓ = 0 + e3nn block (lmax 2, 32 ch)",
                {"tensor_order": 0, "equivariant": EQUIVARIANT}),
}


def _experiments(low: str, high: str) -> tuple[str, ...]:
    return (f"SF-{high}/E", f"SF-{high}/EF", f"MF-{low}/EF-{high}/E[delta]")


def run_trunk(name: str, args) -> Path:
    """Run (or reuse) the experiments of one trunk; returns its experiment folder."""
    out = Path(args.out) / name
    out.mkdir(parents=True, exist_ok=True)
    base = {"model": dict(SMALL_MODEL, **TRUNKS[name][1]),
            "train": dict(EXPERIMENT_TRAIN, max_time=args.max_time)}
    (out / "base.yaml").write_text(yaml.safe_dump(base, sort_keys=False))  # for the record
    settings = ExperimentSettings(
        data=args.data, low=args.low, high=args.high, train=args.train, valid=args.valid,
        test=args.test, out=out, seeds=args.seeds, base=base, heads=("delta",),
        experiments=_experiments(args.low, args.high))
    with open(os.devnull, "w") as quiet:
        run_experiment(settings, log=quiet if args.quiet else None)
    return out


def epoch_costs(run_dirs: list[Path]) -> tuple[float, float]:
    """Mean number of epochs and median seconds per epoch over the runs' metrics.csv."""
    epochs, seconds = [], []
    for run in run_dirs:
        with open(run / "metrics.csv", newline="") as handle:
            rows = list(csv.DictReader(handle))
        epochs.append(len(rows))
        seconds.extend(float(r["seconds"]) for r in rows[1:] or rows)
    return statistics.mean(epochs), statistics.median(seconds)


def _cell(metric: dict, digits: int) -> str:
    """mean ± 95 % CI over seeds (the mean alone for one seed)."""
    if len(metric["runs"]) < 2:
        return f"{metric['mean']:.{digits}f}"
    return f"{metric['mean']:.{digits}f} ± {metric['ci95']:.{digits}f}"


def table(args, folders: dict[str, Path]) -> str:
    lines = [f"| trunk | experiment | {args.high} E RMSE (meV) | {args.high} F RMSE (meV/Å) "
             "| epochs | s / epoch |", "|---|---|---|---|---|---|"]
    for name, folder in folders.items():
        results = json.loads((folder / "results.json").read_text())["experiments"]
        for exp in _experiments(args.low, args.high):
            high = results[exp]["high"]
            runs = sorted((folder / "runs" / Experiment(exp, {}).folder).glob("seed*"))
            n_epochs, per_epoch = epoch_costs(runs)
            lines.append(
                f"| {TRUNKS[name][0]} | {exp} | {_cell(high['energy_rmse'], 2)} "
                f"| {_cell(high['forces_rmse'], 1)} | {n_epochs:.0f} | {per_epoch:.2f} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="dataset spec with both fidelities")
    p.add_argument("--low", default="mp2")
    p.add_argument("--high", default="f12")
    add_split_arguments(p)
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--max-time", type=float, default=EXPERIMENT_TRAIN["max_time"],
                   help="seconds of training per run")
    p.add_argument("--trunks", default=",".join(TRUNKS),
                   help=f"comma separated, from {', '.join(TRUNKS)}")
    p.add_argument("--out", required=True)
    p.add_argument("--quiet", action="store_true", help="no per-run progress lines")
    args = p.parse_args(argv)
    names = [n.strip() for n in args.trunks.split(",") if n.strip()]
    unknown = [n for n in names if n not in TRUNKS]
    if unknown:
        p.error(f"unknown trunk(s) {', '.join(unknown)} (choose from {', '.join(TRUNKS)})")
    folders = {name: run_trunk(name, args) for name in names}
    print(f"\n{args.low} -> {args.high}, {args.train}/{args.valid}/{args.test}, "
          f"{args.seeds} seed(s), {args.max_time:.0f} s of training per run\n")
    print(table(args, folders))


if __name__ == "__main__":
    main()
