#!/usr/bin/env python
"""How the learned correction's force error depends on the number of high-level energies.

For each set (``--sets``, names of ``benchmarks/lfhe_targets.py``) this script takes the
``frozen``-paradigm model that ``benchmarks/lfhe_budget.py --frozen`` trained at
``--budget`` seconds (seed 0, under ``--out``). That model is a low-level model, and its
high-level head is linear in the frozen trunk's features. With those features fixed, the
script sets the high-level correction to zero. It then refits the high head in closed form
(:func:`mfgnn.training.head_refit.refit_energy_heads`, λ chosen on the validation energies)
on the first n of a seeded permutation of the training rows, for each n of ``--counts``.

It prints, on the test rows and in meV/Å, the error of the correction's forces and the
high-level force RMSE:

    e_corr = (F̂_high − F̂_low) − (F_high − F_low)

If e_corr still falls as n doubles, more high-level energies would help. If it stays flat,
the form of the correction is the limit: a linear read-out of these features.

    python benchmarks/lfhe_energy_count.py --out runs/lfhe_budget --sets benzene,azobenzene \\
        --budget 360 --counts 88,175,350,700
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import numpy as np

import _common
from lfhe_limits import error_parts
from lfhe_targets import SETS, write_spec

from mfgnn.data import Split, load_dataset
from mfgnn.data.collate import StructureStore, loader_order
from mfgnn.experiment.baselines import level_references
from mfgnn.experiment.plan import Experiment
from mfgnn.experiment.predict import predict
from mfgnn.model_file import load_model
from mfgnn.training.finetune import effective_head_rows, set_effective_head_rows
from mfgnn.training.head_refit import refit_energy_heads


def batch_maker(dataset, rows, columns):
    """A callable returning batches of 64 structures of ``rows`` (model columns)."""
    store = StructureStore(dataset, np.asarray(rows), columns)
    return lambda: [store.batch(p) for p in loader_order(len(store), 64)]


def zero_correction(model, t: int) -> None:
    """Give level t the effective head weights of level t − 1 (the correction's weights
    zero, whatever the head mode); biases are left to the refit's per-element offsets."""
    rows = effective_head_rows(model.heads)
    for weights, _ in rows:
        weights[t] = weights[t - 1]
    set_effective_head_rows(model.heads, rows)


def count_curve(name: str, out: Path, budget: float, counts: list[int]) -> list[str]:
    """One printed line per n of ``counts`` for set ``name``."""
    low, high = SETS[name][3], SETS[name][4]
    folder = out / name / f"{budget:g}s"
    dataset = load_dataset(write_spec(name, out))
    split = Split.load(folder / "split.json")
    refs = level_references(dataset, split.test)
    f_low, f_high = refs.of(low)[1], refs.of(high)[1]
    run = Experiment(f"Frozen-{low}/EF→{high}/E", {}).folder
    trained = load_model(folder / "runs" / run / "seed0" / "model.pt")
    columns = [dataset.fidelities.index(f) for f in trained.fidelities]
    t, s = trained.fidelities.index(high), trained.fidelities.index(low)
    order = np.asarray(split.train)[np.random.default_rng(0).permutation(len(split.train))]
    valid = batch_maker(dataset, split.valid, columns)
    lines = []
    for n in counts:
        model = copy.deepcopy(trained)
        zero_correction(model, t)
        report = refit_energy_heads(model, batch_maker(dataset, order[:n], columns), valid,
                                    [high])
        _, forces = predict(model, dataset, split.test)
        parts = error_parts(forces[:, s], forces[:, t], f_low, f_high)
        valid_e = report[0].valid_rmse_after if report else float("nan")
        lines.append(f"{name:<14}{n:>6}{valid_e:>12.1f}{parts['corr']:>10.1f}"
                     f"{parts['high']:>10.1f}")
    return lines


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True, help="the --out of lfhe_budget.py")
    p.add_argument("--sets", default="benzene,toluene")
    p.add_argument("--budget", type=float, default=360.0)
    p.add_argument("--counts", default="88,175,350,700")
    args = p.parse_args(argv)
    _common.set_threads(1)
    counts = [int(c) for c in args.counts.split(",") if c.strip()]
    print(f"frozen model of {args.budget:g} s, high head refitted from a zero correction on "
          f"n training energies; test rows, meV/Å (validation energy RMSE in meV)")
    print(f"{'set':<14}{'n':>6}{'valid E':>12}{'e_corr':>10}{'F high':>10}", flush=True)
    for name in [s.strip() for s in args.sets.split(",") if s.strip()]:
        print("\n".join(count_curve(name, args.out, args.budget, counts)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
