#!/usr/bin/env python
"""Several datasets in one run: one model on H2CO + HCOOH + CH3OH against three separate ones.

Trains one small HIP-NN-TS (``mfgnn.presets.SMALL_MODEL``, ``delta`` heads) on a
multi-dataset spec of the shared MP2 / CCSD(T) sets of three molecules (MP2 energies and
forces everywhere, CCSD(T) energies only) with per-dataset split sizes (``--train`` /
``--valid`` / ``--test`` rows of each molecule, seed 0) and 3 × ``--max-time`` seconds;
then one model per molecule on exactly the same train / valid / test rows (mapped from
the joint run's ``split.json``) with ``--max-time`` seconds each, so the total budget is
the same. Prints per molecule the CCSD(T) energy RMSE, the CCSD(T) force RMSE (no model
saw CCSD(T) forces) and the MP2 force RMSE on the test rows, joint vs separate, the
epochs each run trained, and the raw MP2-vs-CCSD(T) force gap of the test rows (the
error of using MP2 forces as CCSD(T) forces); writes ``OUT/multi_dataset.json``.
Re-running with the same ``--out`` reuses finished runs (those with a ``model.pt``).

    python benchmarks/multi_dataset.py --out runs/multi_dataset
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import _common
import yaml

from mfgnn.config import config_from_dict
from mfgnn.data import Split, load_dataset
from mfgnn.experiment.baselines import level_references, raw_force_gap
from mfgnn.presets import EXPERIMENT_TRAIN, SMALL_MODEL
from mfgnn.training.build import train
from mfgnn.training.evaluation import evaluate_run

#: molecule -> (MP2 file, CCSD(T) file) under shared_data("mp2_ccsdt"); the same rows.
MOLECULES = {"h2co": ("ch2o_mp2_avtz_3601.npz", "ch2o_cc_avtz_3601.npz"),
             "hcooh": ("meuwly_db_HCOOH_MP2.npz", "hcooh_cc_avtz_5401.npz"),
             "ch3oh": ("meuwly_db_CH3OH_MP2.npz", "ch3oh_cc_avtz_7201.npz")}
LOW, HIGH = "mp2", "ccsdt"
LABELS = {LOW: ["energy", "forces"], HIGH: ["energy"]}
MODEL = {**SMALL_MODEL, "heads": "delta"}
SPLITS = ("train", "valid", "test")


def fidelities(molecule: str) -> dict:
    """The ``fidelities:`` mapping of one molecule (absolute paths, eV and Å)."""
    folder = _common.shared_data("mp2_ccsdt").resolve()
    return {level: {"path": str(folder / name), "energy_unit": "eV"}
            for level, name in zip((LOW, HIGH), MOLECULES[molecule])}


def write_specs(out: Path) -> tuple[Path, dict[str, Path]]:
    """``OUT/multi_dataset.yaml`` (three datasets) and ``OUT/<molecule>.yaml`` (one each)."""
    out.mkdir(parents=True, exist_ok=True)
    joint = out / "multi_dataset.yaml"
    joint.write_text(yaml.safe_dump(
        {"datasets": {m: {"fidelities": fidelities(m)} for m in MOLECULES},
         "order": [LOW, HIGH]}, sort_keys=False))
    single = {}
    for m in MOLECULES:
        single[m] = out / f"{m}.yaml"
        single[m].write_text(yaml.safe_dump({"name": m, "fidelities": fidelities(m)},
                                            sort_keys=False))
    return joint, single


def run(spec: Path, split: dict, max_time: float, folder: Path) -> dict:
    """Train (unless ``folder`` holds a ``model.pt``) and evaluate on the test rows;
    returns ``{"epochs", "epoch_seconds", "metrics", "reused"}``."""
    reused = (folder / "model.pt").is_file()
    if not reused:
        config = config_from_dict({
            "data": str(spec.resolve()), "labels": LABELS, "split": split, "model": MODEL,
            "train": {**EXPERIMENT_TRAIN, "max_time": max_time}})
        # resume: an interrupted run continues from its checkpoint (a fresh one starts)
        train(config, folder, resume=True, log=None)
    cached = folder / "evaluation.json"
    if cached.is_file() and cached.stat().st_mtime >= (folder / "model.pt").stat().st_mtime:
        metrics = json.loads(cached.read_text())
    else:
        metrics = evaluate_run(folder, json_path=str(cached))
    with open(folder / "metrics.csv", newline="") as f:
        history = list(csv.DictReader(f))
    epoch_seconds = round(sum(float(r.get("seconds") or 0) for r in history), 1)
    return {"epochs": len(history), "epoch_seconds": epoch_seconds, "metrics": metrics,
            "reused": reused}


def local_splits(dataset, joint: Split, out: Path) -> dict[str, Path]:
    """Write each molecule's rows of the joint split as its own (local) split file."""
    paths = {}
    for m in MOLECULES:
        rows = dataset.rows_of(m)
        first, end = int(rows[0]), int(rows[-1]) + 1
        parts = [getattr(joint, s)[(getattr(joint, s) >= first) & (getattr(joint, s) < end)]
                 - first for s in SPLITS]
        paths[m] = Split(*parts, n=len(rows), seed=joint.seed).save(out / f"split_{m}.json")
    return paths


def pick(metrics: dict, fidelity: str, key: str, molecule: str | None = None):
    """``metrics[fidelity][key]`` (of ``molecule``'s ``by_dataset`` entry when given)."""
    entry = metrics.get(fidelity, {})
    if molecule is not None:
        entry = entry.get("by_dataset", {}).get(molecule, {})
    return entry.get(key)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--max-time", type=float, default=EXPERIMENT_TRAIN["max_time"],
                   help="training seconds per molecule (the joint run gets 3 times this; "
                        "a run stops after the epoch in which it is reached)")
    _common.add_split_arguments(p)
    _common.add_threads_argument(p, default=1)
    args = p.parse_args(argv)
    threads = _common.set_threads(args.threads)
    out = args.out
    joint_spec, single_specs = write_specs(out)
    sizes = {"train": args.train, "valid": args.valid, "test": args.test}
    split = {s: {m: n for m in MOLECULES} for s, n in sizes.items()} | {"seed": 0}

    joint = run(joint_spec, split, len(MOLECULES) * args.max_time, out / "joint")
    dataset = load_dataset(joint_spec)
    joint_split = Split.load(out / "joint" / "split.json")
    got = joint_split.by_dataset(dataset.dataset_index, dataset.names)
    wrong = {m: c for m, c in got.items() if c != sizes}
    if wrong:
        raise SystemExit(f"{out / 'joint'} holds a run with other split sizes ({wrong}); "
                         "use another --out")
    split_files = local_splits(dataset, joint_split, out)
    separate = {m: run(single_specs[m], {"file": str(split_files[m].resolve())},
                       args.max_time, out / m) for m in MOLECULES}

    rows = {}
    for m in MOLECULES:
        test = dataset.rows_of(m)
        test = joint_split.test[(joint_split.test >= test[0]) & (joint_split.test <= test[-1])]
        gap = raw_force_gap(level_references(dataset, test), LOW, HIGH)
        rows[m] = {
            "ccsdt_energy_rmse": {"joint": pick(joint["metrics"], HIGH, "energy_rmse", m),
                                  "separate": pick(separate[m]["metrics"], HIGH, "energy_rmse")},
            "ccsdt_forces_rmse": {"joint": pick(joint["metrics"], HIGH, "forces_rmse", m),
                                  "separate": pick(separate[m]["metrics"], HIGH, "forces_rmse")},
            "mp2_forces_rmse": {"joint": pick(joint["metrics"], LOW, "forces_rmse", m),
                                "separate": pick(separate[m]["metrics"], LOW, "forces_rmse")},
            "epochs": {"joint": joint["epochs"], "separate": separate[m]["epochs"]},
            "raw_forces_gap_rmse": gap, "n_test": int(len(test))}
    result = {"settings": {"max_time_per_molecule": args.max_time, "sizes": sizes,
                           "threads": threads, "model": MODEL, "labels": LABELS},
              "split": got, "molecules": rows,
              "joint": joint, "separate": separate}
    (out / "multi_dataset.json").write_text(json.dumps(result, indent=1))
    print_table(rows, args)
    return 0


def print_table(rows: dict, args) -> None:
    print(f"{_common.describe_machine()}; per molecule {args.train}/{args.valid}/{args.test} "
          f"rows, {args.max_time:g} s each (joint: {len(MOLECULES) * args.max_time:g} s)")
    print("test RMSE, joint (J) vs separate (S) models; energies meV, forces meV/Å; "
          "CCSD(T) forces were never trained")
    table = _common.Table(("molecule", "<8", ""),
                          ("CC E J", ">8", ".2f"), ("CC E S", ">8", ".2f"),
                          ("CC F J", ">8", ".1f"), ("CC F S", ">8", ".1f"),
                          ("MP2 F J", ">8", ".1f"), ("MP2 F S", ">8", ".1f"),
                          ("ep J", ">5", "d"), ("ep S", ">5", "d"),
                          ("raw gap F", ">10", ".1f"))
    print(table.header())
    print(table.rule())
    for m, r in rows.items():
        print(table.row(m, r["ccsdt_energy_rmse"]["joint"], r["ccsdt_energy_rmse"]["separate"],
                        r["ccsdt_forces_rmse"]["joint"], r["ccsdt_forces_rmse"]["separate"],
                        r["mp2_forces_rmse"]["joint"], r["mp2_forces_rmse"]["separate"],
                        r["epochs"]["joint"], r["epochs"]["separate"],
                        r["raw_forces_gap_rmse"]))
    print("raw gap F: RMS(F_MP2 - F_CCSD(T)) on the test rows, the error of using MP2 "
          "forces as CCSD(T) forces")


if __name__ == "__main__":
    raise SystemExit(main())
