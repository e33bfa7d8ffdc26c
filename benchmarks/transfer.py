#!/usr/bin/env python
"""Transfer learning against multi-fidelity training at the same budget (H2CO, MP2 →
CCSD(T)-F12).

Pre-train on MP2 energies and forces of the training rows (``--pretrain-time`` s), then
fine-tune on the CCSD(T)-F12 energies of the first N of them (``--finetune-time`` s) with
``mfgnn finetune`` variants:

* ``plain``: a new F12 head copied from the MP2 head, everything trained;
* ``freeze``: the first interaction block and the sensitivities frozen;
* ``lr_decay``: discriminative learning rates (η/5 per trunk step below the heads);
* ``replay``: 20 % of every batch replays the MP2 energies and forces.

Baselines trained for pre-training + fine-tuning time together: SF-f12/E (the N F12
energies only) and MF-mp2/EF-f12/E (MP2 E+F on every training row, F12 energies on the
N rows; delta heads). Every model is scored on the F12 forces of the same 1000 test
rows, which none of them saw.

    python benchmarks/transfer.py --out runs/transfer --sizes 200,1000
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import yaml

import _common

from mfgnn.config import config_from_dict
from mfgnn.data import Split, make_split
from mfgnn.fileio import savez_atomic, write_json_atomic
from mfgnn.presets import EXPERIMENT_TRAIN, SMALL_MODEL
from mfgnn.training.build import train
from mfgnn.training.evaluation import evaluate_run
from mfgnn.training.finetune_build import finetune

VARIANTS = {"plain": {"init_from": "mp2"},
            "freeze": {"init_from": "mp2", "freeze": ["blocks.0", "sensitivities"]},
            "lr_decay": {"init_from": "mp2", "lr_decay": 5},
            "replay": {"init_from": "mp2", "replay": {"data": "base", "fraction": 0.2}}}


def write_specs(out: Path, n: int, split: Split) -> tuple[Path, Path]:
    """The H2CO spec, and one whose F12 energies are NaN outside the first ``n``
    training rows (the data of the MF baseline and of the fine-tunes)."""
    mp2, f12 = (_common.shared_data("mp2_ccsdt", f) for f in
                ("ch2o_mp2_avtz_3601.npz", "ch2o_ccf12_avtz_3601.npz"))
    full = out / "h2co.yaml"
    full.write_text(yaml.safe_dump({"fidelities": {"mp2": {"path": str(mp2)},
                                                   "f12": {"path": str(f12)}}}))
    raw = dict(np.load(f12))
    keep = np.zeros(len(raw["E"]), dtype=bool)
    keep[split.train[:n]] = True
    keep[split.valid] = True
    keep[split.test] = True
    raw["E"] = np.where(keep, raw["E"], np.nan)
    savez_atomic(out / f"f12_{n}.npz", compressed=False, **raw)
    few = out / f"h2co_f12_{n}.yaml"
    few.write_text(yaml.safe_dump({"fidelities": {"mp2": {"path": str(mp2)},
                                                  "f12": {"path": str(out / f'f12_{n}.npz')}}}))
    return full, few


def run_config(spec: Path, split_file: Path, labels: dict, seconds: float, heads="delta",
               extra: dict | None = None) -> dict:
    return {"data": str(spec), "labels": labels, "split": {"file": str(split_file)},
            "model": {**SMALL_MODEL, "heads": heads},
            "train": {**EXPERIMENT_TRAIN, "max_time": seconds, "max_epochs": 100_000},
            **(extra or {})}


def score(run: Path) -> dict:
    metrics = evaluate_run(run)["f12"]
    return {k: metrics.get(k) for k in ("energy_rmse", "forces_rmse", "forces_mae")}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--sizes", default="200,1000", help="F12 energies for fine-tuning")
    p.add_argument("--pretrain-time", type=float, default=60.0)
    p.add_argument("--finetune-time", type=float, default=30.0)
    _common.add_split_arguments(p)
    args = p.parse_args(argv)
    _common.set_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    split_path = args.out / "split.json"
    if not split_path.is_file():
        make_split(3601, args.train, args.valid, args.test, seed=0).save(split_path)
    split = Split.load(split_path)
    total = args.pretrain_time + args.finetune_time
    full, _ = write_specs(args.out, args.train, split)
    base = args.out / "pretrain"
    if not (base / "model.pt").is_file():
        train(config_from_dict(run_config(full, split_path, {"mp2": ["energy", "forces"]},
                                          args.pretrain_time)), base, log=None)
    table: dict[str, dict] = {}
    for n in [int(x) for x in args.sizes.split(",")]:
        _, few = write_specs(args.out, n, split)
        # the fine-tunes and SF-f12/E train on the N rows with F12 energies only
        first_n = args.out / f"split_{n}.json"
        Split(split.train[:n], split.valid, split.test, n=split.n, seed=split.seed).save(first_n)
        runs = {}
        for name, ft in VARIANTS.items():
            run = args.out / f"n{n}" / f"TL-{name}"
            if not (run / "model.pt").is_file():
                finetune(base, config_from_dict(run_config(
                    few, first_n, {"f12": ["energy"]}, args.finetune_time,
                    extra={"finetune": ft})), run, log=None)
            runs[f"TL-mp2/EF→f12/E [{name}]"] = run
        for name, labels in (("SF-f12/E", {"f12": ["energy"]}),
                             ("MF-mp2/EF-f12/E [delta]", {"mp2": ["energy", "forces"],
                                                          "f12": ["energy"]})):
            run = args.out / f"n{n}" / name.split()[0].replace("/", "_")
            rows = first_n if name.startswith("SF") else split_path
            if not (run / "model.pt").is_file():
                train(config_from_dict(run_config(few, rows, labels, total)), run, log=None)
            runs[name] = run
        table[str(n)] = {name: score(run) for name, run in runs.items()}
    write_json_atomic(args.out / "transfer.json", table)
    print(f"F12 force RMSE (meV/Å) on {args.test} test rows; pre-training {args.pretrain_time:.0f} s"
          f" + fine-tuning {args.finetune_time:.0f} s = {total:.0f} s per model, 1 seed")
    sizes = list(table)
    print(f"{'experiment':<34}" + "".join(f"{'N = ' + n:>12}" for n in sizes))
    for name in table[sizes[0]]:
        print(f"{name:<34}" + "".join(f"{table[n][name]['forces_rmse']:>12.1f}" for n in sizes))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
