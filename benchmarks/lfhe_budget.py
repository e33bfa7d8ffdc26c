#!/usr/bin/env python
"""MF-low/EF-high/E against the oracle as the training budget grows, on the shared sets.

Where ``benchmarks/lfhe_targets.py`` finds the MF model's high-level forces more than
1.3× the oracle's at the 90 s default, this script measures the curve: for each set
(``--sets``, names of ``lfhe_targets.SETS``) and budget (``--budgets`` in seconds), it
trains the oracle SF-high/EF and MF-low/EF-high/E[heads] with the presets (epochs capped
by the budget only, the cosine schedule spread over it) and prints the high-level force
RMSE and MAE on the test split (meV/Å), MF / oracle, the raw gap and the epochs trained.
``--frozen`` adds the ``frozen`` paradigm of ``mfgnn experiment`` (a low-level model for
0.9 of the budget, then the high-level head alone on the frozen trunk) and its force RMSE
and ratio to the oracle. ``--energy-only`` adds SF-high/E (high-level energies alone, the
presets' energy-only rate) and prints, for each point, the issue's targets in RMSE, MAE
and P99 and by energy above the minimum, as ``lfhe_targets.py`` does at the default
budget; ``--markdown FILE`` then writes those ratios, one row per set and budget, as the
README's table. Re-running with the same ``--out`` reuses finished runs.

    python benchmarks/lfhe_budget.py --out runs/lfhe_budget --sets h2co-f12 --budgets 180,360
"""

from __future__ import annotations

import argparse
import copy
import csv
from pathlib import Path

import numpy as np

import _common
from hard_data import NEW, run_quietly
from lfhe_targets import (METRICS, SETS, experiments_of, force_rms, report, write_markdown,
                          write_spec)

from mfgnn.experiment import ExperimentSettings
from mfgnn.experiment.plan import Experiment

#: epochs are capped by the budget only
MAX_EPOCHS = 100_000


def point_folder(out: Path, name: str, budget: float) -> Path:
    """The experiment folder of set ``name`` at ``budget`` seconds."""
    return out / name / f"{budget:g}s"


def run_point(name: str, budget: float, seeds: int, out: Path,
              frozen: bool = False, energy_only: bool = False) -> tuple[dict, dict]:
    """Train the oracle and the MF model of set ``name`` for ``budget`` seconds each (and
    the ``frozen`` paradigm when ``frozen``, SF-high/E when ``energy_only``); the runs'
    results.json and {experiment: mean epochs trained} of the oracle and the MF model."""
    _, _, _, low, high, heads, (n_train, n_valid, n_test) = SETS[name]
    base = copy.deepcopy(NEW)
    base["train"]["max_epochs"] = MAX_EPOCHS
    folder = point_folder(out, name, budget)
    sf_e, oracle, mf = experiments_of(name)
    settings = ExperimentSettings(
        data=str(write_spec(name, out)), low=low, high=high, train=n_train, valid=n_valid,
        test=n_test, out=folder, seeds=seeds, base=base, max_time=budget, heads=(heads,),
        experiments=(sf_e, oracle, mf) if energy_only else (oracle, mf),
        paradigms=("mfl", "frozen") if frozen else ("mfl",))
    results = run_quietly(settings)
    epochs = {}
    for exp in (oracle, mf):
        counts = []
        for seed in range(seeds):
            with open(folder / "runs" / Experiment(exp, {}).folder / f"seed{seed}"
                      / "metrics.csv") as f:
                counts.append(len(list(csv.DictReader(f))))
        epochs[exp] = float(np.mean(counts))
    return results, epochs


def ratio_row(name: str, budget: float, results: dict) -> str:
    """One README row: MF / SF-high/E, MF / oracle, MF / raw gap and oracle / raw gap of
    the high-level force RMSE, MAE and P99 (targets: ≤ 0.5, ≤ 1.3, < 1, < 1)."""
    sf_e, oracle, mf = ({m: results["experiments"][e]["high"][m]["mean"] for m in METRICS}
                        for e in experiments_of(name))
    gap = {m: results["baseline"][m.replace("forces", "forces_gap")] for m in METRICS}

    def ratios(a: dict, b: dict) -> str:
        return " / ".join(f"{a[m] / b[m]:.2f}" for m in METRICS)

    return (f"| {name} | {budget:g} s | {ratios(mf, sf_e)} | {ratios(mf, oracle)} | "
            f"{ratios(mf, gap)} | {ratios(oracle, gap)} |")


MARKDOWN_HEADER = ("| set | budget | MF / SF-high/E | MF / oracle | MF / raw gap "
                   "| oracle / raw gap |\n|---|---|---|---|---|---|")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--sets", default="h2co-f12,hcooh-f12")
    p.add_argument("--budgets", default="90,180,360", help="seconds per run, comma separated")
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--frozen", action="store_true", help="add the frozen-trunk paradigm")
    p.add_argument("--energy-only", action="store_true",
                   help="add SF-high/E and print the targets in RMSE, MAE, P99 and by bin")
    p.add_argument("--markdown", type=Path, default=None,
                   help="with --energy-only: write the README table of ratios here")
    args = p.parse_args(argv)
    _common.set_threads(1)
    if args.markdown is not None and not args.energy_only:
        p.error("--markdown needs --energy-only (the table compares with SF-high/E)")
    lines, rows = [], []
    for name in [s.strip() for s in args.sets.split(",") if s.strip()]:
        _, oracle, mf = experiments_of(name)
        frozen = f"Frozen-{SETS[name][3]}/EF→{SETS[name][4]}/E"
        for budget in [float(b) for b in args.budgets.split(",") if b.strip()]:
            results, epochs = run_point(name, budget, args.seeds, args.out, args.frozen,
                                        args.energy_only)
            if args.energy_only:
                rms = force_rms(name, args.out, point_folder(args.out, name, budget))
                print(f"\n{budget:g} s:" + "\n".join(report(name, results, rms)), flush=True)
                rows.append(ratio_row(name, budget, results))
            o, m = (results["experiments"][e]["high"] for e in (oracle, mf))
            fz = ""
            if args.frozen:
                f_rmse = results["experiments"][frozen]["high"]["forces_rmse"]["mean"]
                fz = f"{f_rmse:>10.1f}{f_rmse / o['forces_rmse']['mean']:>8.2f}"
            lines.append(
                f"{name:<15}{budget:>7.0f}{o['forces_rmse']['mean']:>10.1f}"
                f"{m['forces_rmse']['mean']:>10.1f}"
                f"{m['forces_rmse']['mean'] / o['forces_rmse']['mean']:>9.2f}"
                f"{o['forces_mae']['mean']:>10.1f}{m['forces_mae']['mean']:>10.1f}"
                f"{results['baseline']['forces_gap_rmse']:>10.1f}"
                f"{epochs[oracle]:>9.0f}{epochs[mf]:>7.0f}" + fz)
            print(f"\nhigh-level force errors on the test split (meV/Å), mean over "
                  f"{args.seeds} seed(s)\n{'set':<15}{'budget':>7}{'oracle':>10}{'MF':>10}"
                  f"{'MF/orc':>9}{'orc MAE':>10}{'MF MAE':>10}{'raw gap':>10}"
                  f"{'epochs':>9}{'(MF)':>7}"
                  + (f"{'frozen':>10}{'Fz/orc':>8}" if args.frozen else "") + "\n"
                  + "\n".join(lines), flush=True)
    write_markdown(args.markdown, rows, MARKDOWN_HEADER)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
