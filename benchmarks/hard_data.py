#!/usr/bin/env python
"""Training recipes on data far from equilibrium: which change fixes what, by energy bin.

Runs ``mfgnn experiment`` on the shared wide-range H2O2 set (RHF → MP2/cc-pVDZ; energies
spanning 82 eV, atom pairs down to 0.6 Å) once per recipe, each a change of the small
preset model and the 90 s budget, and prints the MP2 force RMSE of the test split per
bin of energy above the minimum, next to the raw HF-vs-MP2 force gap:

* ``old``: the presets before the hard-data work (soft range 0.75–5.5 Å, plateau schedule
  with early stopping, raw eV targets, no pair prior);
* ``new``: the current presets (:mod:`mfgnn.presets`): sensitivity range chosen from the
  training pair distances, a cosine schedule over the whole budget, the ZBL pair prior;
* ``new-no-<part>``: ``new`` without one of its parts (``auto``, ``cosine``, ``zbl``),
  to see what each part does;
* ``new+scale``: ``new`` with target scales (``model.scale_targets``; the presets had
  them until the comparison with hippynn showed their cost);
* ``new+level-forces``: ``new`` with ``loss.level_force_weight: 0.1``.

Every recipe trains the oracle SF-mp2/EF and MF-hf/EF-mp2/E[independent] (plus
SF-mp2/E with ``--with-energy-only``) on one split (1000 / 200 / 1000) with ``--seeds``
seeds. Re-running with the same ``--out`` reuses finished runs.

    python benchmarks/hard_data.py --out runs/hard_data --recipes old,new --seeds 3
"""

from __future__ import annotations

import argparse
import copy
import io
import json
import sys
from pathlib import Path

import _common

from mfgnn.experiment import ExperimentSettings, base_config, run_experiment
from mfgnn.presets import EXPERIMENT_TRAIN, SMALL_MODEL

#: The presets before the hard-data work (one learning rate for every run).
OLD = {"model": {**SMALL_MODEL, "soft_min": 0.75, "soft_max": 5.5, "scale_targets": False,
                 "zbl": False},
       "train": {**EXPERIMENT_TRAIN, "batch_size": 32, "lr": 2.0e-3, "scheduler": "plateau",
                 "patience": 30, "refit_energy_heads": False}}
#: The current presets of ``mfgnn experiment``, every section spelt out.
NEW = base_config(None)
#: new-no-<part>: the setting that turns a part of the presets off.
PARTS = {"auto": ("model", {"soft_min": 0.75}),
         "cosine": ("train", {"scheduler": "plateau", "patience": 30}),
         "zbl": ("model", {"zbl": False}),
         "refit": ("train", {"refit_energy_heads": False})}
#: new+<extra>: a setting added to the presets.
EXTRAS = {"scale": ("model", {"scale_targets": True}),
          "level-forces": ("loss", {"level_force_weight": 0.1})}


def recipe(name: str) -> dict:
    """The base configuration of a recipe name."""
    if name == "old":
        return copy.deepcopy(OLD)
    base = copy.deepcopy(NEW)
    if name == "new":
        return base
    if name.startswith("new-no-") and name[len("new-no-"):] in PARTS:
        section, values = PARTS[name[len("new-no-"):]]
    elif name.startswith("new+") and name[len("new+"):] in EXTRAS:
        section, values = EXTRAS[name[len("new+"):]]
    else:
        raise SystemExit(f"unknown recipe {name!r}: old, new, new+{{{','.join(EXTRAS)}}} or "
                         f"new-no-{{{','.join(PARTS)}}}")
    base.setdefault(section, {}).update(values)
    return base


def write_spec(out: Path) -> Path:
    sys.path.insert(0, str(_common.REPO / "data_recipes"))
    from shared_widerange import write_spec as write

    return write(_common.shared_data("widerange"), out, check=False)


def run_quietly(settings: ExperimentSettings) -> dict:
    """``run_experiment`` with its printed report swallowed (progress still goes to
    stderr); the ``results.json`` it wrote."""
    quiet = io.StringIO()
    stdout, sys.stdout = sys.stdout, quiet  # run_experiment prints its results.md
    try:
        run_experiment(settings, log=sys.stderr)
    finally:
        sys.stdout = stdout
    return json.loads((Path(settings.out) / "results.json").read_text())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--recipes", default="old,new", help="comma separated (see the docstring)")
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--max-time", type=float, default=EXPERIMENT_TRAIN["max_time"])
    p.add_argument("--with-energy-only", action="store_true", help="also train SF-mp2/E")
    _common.add_split_arguments(p)
    args = p.parse_args(argv)
    _common.set_threads(1)
    spec = write_spec(args.out)
    names = ["SF-mp2/EF", "MF-hf/EF-mp2/E[independent]"]
    if args.with_energy_only:
        names.insert(0, "SF-mp2/E")
    table: dict[str, dict] = {}
    for name in [r.strip() for r in args.recipes.split(",") if r.strip()]:
        out = args.out / name
        settings = ExperimentSettings(
            data=str(spec), low="hf", high="mp2", train=args.train, valid=args.valid,
            test=args.test, out=out, seeds=args.seeds, base=recipe(name),
            max_time=args.max_time, heads=("independent",), experiments=tuple(names))
        table[name] = run_quietly(settings)
    print_table(table)
    return 0


def print_table(table: dict[str, dict]) -> None:
    first = next(iter(table.values()))
    gap = first["baseline"]["by_energy"]
    bins = list(gap)
    cols = ["all"] + bins
    print(f"MP2 force RMSE (meV/Å) on the test split by energy above the minimum; "
          f"{first['sizes']['seeds']} seed(s), mean")
    print(f"{'recipe':<18}{'experiment':<30}" + "".join(f"{c:>12}" for c in cols))
    for name, results in table.items():
        for exp, metrics in results["experiments"].items():
            high = metrics["high"]
            cells = [high["forces_rmse"]["mean"]] + [
                high.get("by_energy", {}).get(b, {}).get("forces_rmse", {}).get("mean",
                                                                                  float("nan"))
                for b in bins]
            print(f"{name:<18}{exp:<30}" + "".join(f"{c:>12.1f}" for c in cells))
    raw = [first["baseline"]["forces_gap_rmse"]] + [gap[b]["forces_rmse"] for b in bins]
    print(f"{'raw gap':<48}" + "".join(f"{c:>12.1f}" for c in raw))
    counts = [first["sizes"]["test"]] + [gap[b]["n_structures"] for b in bins]
    print(f"{'test structures':<48}" + "".join(f"{c:>12d}" for c in counts))


if __name__ == "__main__":
    raise SystemExit(main())
