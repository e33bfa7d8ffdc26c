"""mfgnn against the reference HIP-NN code (hippynn 0.1.3) on the wide-range H2O2 set
(RHF -> MP2/cc-pVDZ, energies spanning 82 eV, atom pairs down to 0.6 Å).

Both codes train the same plain HIP-NN (tensor order 0; mfgnn's default preset uses
tensor order 1, the comparison uses 0 for like-for-like: hippynn's ``Hipnn``), 48
features, 2 interaction blocks of 2 atom layers, 20 sensitivities, on the same rows of
one split (``mfgnn.data.make_split(2500, train, valid, test, seed=0)``), with the same
wall-clock budget per run, batch size, learning rate and thread count, for two recipes:

    SF-mp2/EF                    one head, MP2 energies + forces
    MF-hf/EF-mp2/E[independent]  two heads: HF energies + forces, MP2 energies only

and both are scored by this script on the same test rows against MP2 labels: energy
RMSE/MAE (meV), force RMSE/MAE (meV/Å, over components), all rows and rows within 5 eV
of the lowest MP2 energy of the test rows, next to the raw HF-vs-MP2 force gap.

    python benchmarks/vs_hippynn_widerange.py --out runs/vs_hippynn --max-time 90 --seeds 3

``--seeds N`` trains every run with seeds 0..N-1 (mfgnn: ``train.seed``; hippynn: its
torch seed and its database's shuffling seed) and prints means over seeds with the
per-seed values of the column that decides (MF force RMSE within 5 eV). ``--only mfgnn``
or ``--only hippynn`` trains one code (each run's scores are kept in OUT), so the two
codes can train side by side on two cores; a last call without ``--only`` prints the
table from the finished runs.

needs ``pip install hippynn==0.1.3`` for the reference side (without it only mfgnn runs).
hippynn trains through its own API in ``hippynn_training.py`` (graph nodes, ``Database``,
``setup_and_train``) with a ``PatienceController`` subclass that adds the time budget.
Extra mfgnn settings: ``--mfgnn-option model.scale_targets=true`` (repeatable; with
target scales, the presets until this comparison, mfgnn's MF forces within 5 eV were
1.09× hippynn's).
Writes OUT/vs_hippynn.json; mfgnn's runs go to OUT/mfgnn (``run_experiment``, resumed if
OUT is reused with the same settings), hippynn's to OUT/hippynn/<experiment>/.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import importlib.util
import json
import sys
import warnings
from pathlib import Path

import numpy as np
import yaml

from hippynn_training import HIPPYNN_HINT, hippynn, run_hippynn
from _common import REPO, Table, add_split_arguments, set_threads, shared_data
from mfgnn.data import Split, make_split
from mfgnn.experiment import ExperimentSettings, run_experiment
from mfgnn.experiment.plan import Experiment
from mfgnn.data.distances import auto_sensitivity_range, pair_distance_stats
from mfgnn.presets import EXPERIMENT_LFHE_LOW_ENERGY_WEIGHT, EXPERIMENT_TRAIN, SMALL_MODEL

FILE = "h2o2_hf_mp2.npz"
LOW, HIGH = "hf", "mp2"
EXPERIMENTS = {  # name: labels per level
    f"SF-{HIGH}/EF": {HIGH: ["energy", "forces"]},
    f"MF-{LOW}/EF-{HIGH}/E[independent]": {LOW: ["energy", "forces"], HIGH: ["energy"]},
}
NEAR_EV = 5.0  # "near the minimum": MP2 energy within this many eV of the test minimum
MAX_EPOCHS = 1_000_000  # time budget (or patience) ends training, never the epoch count
NOTES = [
    "tensor order 0 (plain HIP-NN) in both codes for like-for-like; mfgnn's default "
    "preset (SMALL_MODEL) uses tensor order 1",
    "activations: each code's default (mfgnn shifted softplus, hippynn softplus); "
    "--mfgnn-option model.activation=softplus makes them identical",
    "mfgnn trains with its own recipe (mfgnn.presets: EMA, gradient clipping, "
    f"{EXPERIMENT_TRAIN.get('scheduler', 'plateau')} schedule over the budget, "
    f"{'target scales, ' if SMALL_MODEL.get('scale_targets') else ''}ZBL prior, relative "
    "hierarchicality 0.01, the MF model's HF energies at weight "
    f"{EXPERIMENT_LFHE_LOW_ENERGY_WEIGHT:g}); hippynn as in its examples: Adam, "
    "RaiseBatchSizeOnPlateau (max batch = batch size, i.e. LR x0.5 on plateau), "
    "PatienceController, RMSE+MAE losses, hierarchicality weight 0",
    "hippynn's message-passing kernels are set by --hippynn-kernels (default "
    "_pytorch_raw: plain eager PyTorch, as mfgnn); hippynn's CPU default 'pytorch' "
    "torch.compiles them and recompiles for each new batch shape inside the budget",
    "time budget: both codes check it after each epoch (train + validation) and stop "
    "once it is spent, so a run may overshoot by less than one epoch",
]


# ---------------------------------------------------------------- scoring
def score(e_pred, e_ref, f_pred, f_ref, near) -> dict:
    """Energy (meV) and force (meV/Å, over components) RMSE/MAE on all rows and on the
    ``near`` rows; e: (n,), f: (n, atoms, 3), eV and eV/Å."""
    de = 1000.0 * (np.asarray(e_pred, float) - e_ref)
    df = 1000.0 * (np.asarray(f_pred, float) - f_ref)
    out = {}
    for tag, rows in (("", slice(None)), ("near_", near)):
        out[tag + "energy_rmse"] = float(np.sqrt(np.mean(de[rows] ** 2)))
        out[tag + "energy_mae"] = float(np.mean(np.abs(de[rows])))
        out[tag + "forces_rmse"] = float(np.sqrt(np.mean(df[rows] ** 2)))
        out[tag + "forces_mae"] = float(np.mean(np.abs(df[rows])))
    return out


# ---------------------------------------------------------------- mfgnn
def set_option(tree: dict, option: str) -> None:
    """Apply ``section.key[.sub]=value`` (value parsed with yaml.safe_load) to ``tree``."""
    key, sep, value = option.partition("=")
    parts = key.strip().split(".")
    if not sep or len(parts) < 2 or parts[0] not in ("model", "train", "loss"):
        raise SystemExit(f"--mfgnn-option {option!r}: expected model.KEY=VALUE, "
                         "train.KEY=VALUE or loss.KEY=VALUE")
    node = tree
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = yaml.safe_load(value)


def mfgnn_base(args) -> dict:
    model = {**SMALL_MODEL, "tensor_order": 0, "soft_min": args.soft_min,
             "soft_max": args.soft_max, "cutoff": args.cutoff}
    train = {**EXPERIMENT_TRAIN, "max_time": args.max_time, "max_epochs": MAX_EPOCHS,
             "batch_size": args.batch_size, "lr": args.lr}
    base = {"model": model, "train": train}
    for option in args.mfgnn_option:
        set_option(base, option)
    return base


def write_spec(data: Path, folder: Path) -> Path:
    """The dataset spec of data_recipes/shared_widerange.py, written into ``folder``."""
    spec = importlib.util.spec_from_file_location(
        "shared_widerange", REPO / "data_recipes" / "shared_widerange.py")
    recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe)
    return recipe.write_spec(data, folder, check=False)


def run_mfgnn(args, base: dict, split: Split, out: Path, refs: dict) -> dict:
    """Train (or reuse) mfgnn's runs; {experiment: [scores of seed 0, 1, ...]}."""
    out.mkdir(parents=True, exist_ok=True)
    stamp = {"base": base, "data": str(args.data),
             "sizes": [args.train, args.valid, args.test]}
    stamp_path = out / "bench_settings.json"
    if stamp_path.is_file() and json.loads(stamp_path.read_text()) != json.loads(json.dumps(stamp)):
        raise SystemExit(f"{out} holds mfgnn runs with other settings (run_experiment "
                         "would reuse them); use a fresh --out")
    stamp_path.write_text(json.dumps(stamp, indent=1))
    spec = write_spec(args.data, out)
    settings = ExperimentSettings(data=spec, low=LOW, high=HIGH, train=args.train,
                                  valid=args.valid, test=args.test, out=out,
                                  seeds=args.seeds,
                                  base=base, heads=("independent",),
                                  experiments=tuple(EXPERIMENTS))
    with open(out / "stdout.log", "w") as log, contextlib.redirect_stdout(log):
        run_experiment(settings)
    drawn = Split.load(out / "split.json")
    for name in ("train", "valid", "test"):
        assert np.array_equal(getattr(drawn, name), getattr(split, name)), \
            f"mfgnn's {name} rows differ from make_split's (stale {out / 'split.json'}?)"
    results = {}
    for name, labels in EXPERIMENTS.items():
        results[name] = []
        for seed in range(args.seeds):
            run = out / "runs" / Experiment(name, labels).folder / f"seed{seed}"
            pred = np.load(run / "predictions.npz")
            t = [str(f) for f in pred["fidelities"]].index(HIGH)
            forces = pred["forces"][:, t].reshape(refs["F"].shape)
            r = score(pred["energy"][:, t], refs["E"], forces, refs["F"], refs["near"])
            with open(run / "metrics.csv") as f:
                rows = list(csv.DictReader(f))
            r["epochs"] = len(rows)
            r["train_s"] = sum(float(row["seconds"]) for row in rows)
            results[name].append(r)
    summary = json.loads((out / "results.json").read_text())["experiments"]
    worst = max(  # the experiment's own scoring (mean over seeds), as a check of this one
        abs(np.mean([r[k] for r in results[name]]) - summary[name]["high"][k]["mean"])
        / max(abs(summary[name]["high"][k]["mean"]), 1e-12)
        for name in EXPERIMENTS
        for k in ("energy_rmse", "energy_mae", "forces_rmse", "forces_mae"))
    print(f"mfgnn results.json 'high' metrics (mean over seeds) vs this script's scoring: "
          f"largest relative difference {worst:.1e}")
    return results


def hippynn_seed(args, name: str, labels: dict, data, split: Split, base: dict,
                 seed: int, out: Path, refs: dict) -> dict:
    """One hippynn run's test scores, trained now or read from its ``scores.json``."""
    folder = out / "hippynn" / Experiment(name, labels).folder / f"seed{seed}"
    kept = folder / "scores.json"
    if kept.is_file():
        return json.loads(kept.read_text())
    folder.mkdir(parents=True, exist_ok=True)
    print(f"hippynn: training {name}, seed {seed} ({args.max_time:g} s) ...", flush=True)
    with hippynn.tools.active_directory(str(folder)), \
            open(folder / "stdout.log", "w") as log, contextlib.redirect_stdout(log):
        h = run_hippynn(args, labels, data, split, base["train"], seed, LOW, HIGH,
                        MAX_EPOCHS)
    r = score(h["energy"], refs["E"], h["forces"], refs["F"], refs["near"])
    r.update(epochs=h["epochs"], train_s=h["train_s"])
    kept.write_text(json.dumps(r, indent=1))
    return r


COLUMNS = ("energy_rmse", "energy_mae", "forces_rmse", "forces_mae", "near_forces_rmse")


def print_table(results: dict, n_test: int, n_near: int, gap: dict) -> None:
    """Means over seeds per experiment and code, mfgnn/hippynn ratios, the raw gap."""
    table = Table(("experiment", "<30", ""), ("code", "<14", ""), ("E RMSE", ">9", ".1f"),
                  ("E MAE", ">9", ".1f"), ("F RMSE", ">9", ".1f"), ("F MAE", ">9", ".1f"),
                  (f"F RMSE<{NEAR_EV:g}eV", ">12", ".1f"), ("epochs", ">7", ".0f"),
                  ("train s", ">8", ".1f"), ("F<5eV per seed", "<24", ""))
    print(f"\nMP2 test errors on {n_test} rows (meV, meV/Å over components), mean over "
          f"seeds; {n_near} rows within {NEAR_EV:g} eV of the lowest MP2 energy")
    print(table.header())
    print(table.rule())
    for name, by_code in results.items():
        means = {}
        for code, runs in list(by_code.items()):
            means[code] = {c: float(np.mean([r[c] for r in runs]))
                           for c in (*COLUMNS, "epochs", "train_s")}
            seeds = " ".join(f"{r['near_forces_rmse']:.0f}" for r in runs)
            print(table.row(name, code, *(means[code][c] for c in COLUMNS),
                            means[code]["epochs"], means[code]["train_s"], seeds))
        if "hippynn" in means and "mfgnn" in means:
            m, h = means["mfgnn"], means["hippynn"]
            ratio = {c: m[c] / h[c] if h[c] else float("nan") for c in COLUMNS}
            by_code["ratio_mfgnn_over_hippynn"] = ratio
            print(table.row("", "mfgnn/hippynn", *(f"{ratio[c]:.2f}" for c in COLUMNS)))
    print(f"raw gap (HF forces as MP2 forces): F RMSE {gap['forces_rmse']:.1f}, "
          f"F MAE {gap['forces_mae']:.1f} meV/Å on all test rows; "
          f"F RMSE {gap['near_forces_rmse']:.1f}, F MAE {gap['near_forces_mae']:.1f} "
          f"meV/Å within {NEAR_EV:g} eV")


# ---------------------------------------------------------------- main
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=shared_data("widerange"),
                        help=f"folder with {FILE} (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=Path("runs/vs_hippynn"))
    parser.add_argument("--max-time", type=float, default=90.0,
                        help="seconds of training per run, both codes (default 90)")
    add_split_arguments(parser)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=EXPERIMENT_TRAIN["lr"],
                        help="Adam learning rate, both codes (default: mfgnn's experiment "
                             "preset, %(default)g; hippynn's examples use 1e-3, at which "
                             "both codes were worse on this set)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--seeds", type=int, default=1, help="seeds per run (default 1)")
    parser.add_argument("--only", choices=("mfgnn", "hippynn"), default=None,
                        help="train one code only (its scores are kept in OUT)")
    parser.add_argument("--soft-min", type=float, default=None,
                        help="inner sensitivity distance, both codes (default: what mfgnn's "
                             "soft_min: auto chooses from the training pair distances)")
    parser.add_argument("--soft-max", type=float, default=5.5)
    parser.add_argument("--cutoff", type=float, default=6.5)
    parser.add_argument("--hippynn-kernels", default="_pytorch_raw",
                        help="hippynn message-passing kernels (default: _pytorch_raw, plain "
                             "eager PyTorch as mfgnn; hippynn's own CPU default 'pytorch' "
                             "torch.compiles them, recompiling per batch shape inside the "
                             "budget)")
    parser.add_argument("--mfgnn-option", action="append", default=[], metavar="SEC.KEY=VALUE",
                        help="extra mfgnn model/train/loss option, e.g. "
                             "model.scale_targets=true (repeatable)")
    args = parser.parse_args()
    args.data = args.data.resolve()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    threads = set_threads(args.threads)
    warnings.filterwarnings("ignore", module="hippynn")
    warnings.filterwarnings("ignore", message=".*verbose no longer supported.*")

    data = dict(np.load(args.data / FILE))
    n = len(data["E_mp2"])
    split = make_split(n, args.train, args.valid, args.test, seed=0)
    if args.soft_min is None:  # mfgnn's automatic choice, given to both codes
        z = data["Z"] if data["Z"].ndim == 2 else np.broadcast_to(data["Z"], data["R"].shape[:2])
        stats = pair_distance_stats([(z[i], data["R"][i]) for i in split.train],
                                    cutoff=args.cutoff)
        args.soft_min = auto_sensitivity_range(stats, args.cutoff)[0]
        print(f"soft_min {args.soft_min} Å for both codes (mfgnn's soft_min: auto on the "
              "training rows)")
    test = split.test
    e_ref, f_ref = data["E_mp2"][test], data["F_mp2"][test]
    near = e_ref - e_ref.min() < NEAR_EV
    refs = {"E": e_ref, "F": f_ref, "near": near}
    gap = score(data["E_hf"][test], e_ref, data["F_hf"][test], f_ref, near)
    base = mfgnn_base(args)
    print(f"wide-range H2O2 ({n} rows; train {len(split.train)} / valid "
          f"{len(split.valid)} / test {len(test)}, make_split seed 0), {threads} thread(s), "
          f"{args.max_time:g} s per run, batch {args.batch_size}, lr {args.lr:g}")
    for note in NOTES:
        print(f"note: {note}")

    have_hippynn = hippynn is not None
    if not have_hippynn:
        print(f"hippynn is not installed: `{HIPPYNN_HINT}` adds the reference side; "
              "running mfgnn only")

    results: dict = {name: {} for name in EXPERIMENTS}
    if args.only != "hippynn":
        for name, runs in run_mfgnn(args, base, split, out / "mfgnn", refs).items():
            results[name]["mfgnn"] = runs
    if have_hippynn and args.only != "mfgnn":
        for name, labels in EXPERIMENTS.items():
            results[name]["hippynn"] = [
                hippynn_seed(args, name, labels, data, split, base, seed, out, refs)
                for seed in range(args.seeds)]
    if args.only:
        print(f"trained {args.only}; run again without --only for the table")
        return 0
    print_table(results, len(test), int(near.sum()), gap)
    report = {"data": str(args.data / FILE), "units": {"energy": "meV", "forces": "meV/A"},
              "sizes": split.sizes(), "near_ev": NEAR_EV, "n_near": int(near.sum()),
              "settings": {k: (str(v) if isinstance(v, Path) else v)
                           for k, v in vars(args).items()},
              "threads": threads, "mfgnn_base": base, "notes": NOTES,
              "hippynn": hippynn.__version__ if have_hippynn else None,
              "raw_gap_hf_as_mp2": gap, "results": results}
    (out / "vs_hippynn.json").write_text(json.dumps(report, indent=1))
    print(f"wrote {out / 'vs_hippynn.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
