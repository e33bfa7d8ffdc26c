#!/usr/bin/env python
"""What limits LF-HE where the level gap is rough: one factor at a time on the wide-range set.

On the shared wide-range H2O2 set (RHF → MP2/cc-pVDZ), trains MF-hf/EF-mp2/E (low-level
energies and forces, high-level energies) with the current presets and varies one factor
at a time from the base point (1000 training structures, 90 s, independent heads, the
small preset model, no level-force prior):

* ``budget``: 90, 300 and 600 s per run, epochs uncapped (the oracle SF-mp2/EF at each
  budget too);
* ``size``: 500 and 1300 (all the set leaves besides 200 + 1000) training structures
  (and the oracle);
* ``heads``: ``delta`` and ``tethered`` heads;
* ``prior``: ``loss.level_force_weight`` 0.1 and 1 (the high head's forces pulled towards
  the low head's on rows with low-level forces);
* ``capacity``: ``n_features`` 32 and 128.

Prints the MP2 force RMSE of the test split (meV/Å), all rows and per bin of energy above
the minimum, next to the raw HF-vs-MP2 force gap, with the epochs each run trained.
Re-running with the same ``--out`` reuses finished runs.

    python benchmarks/lfhe_curve.py --out runs/lfhe_curve [--factors budget,size] [--seeds 1]
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import _common
from hard_data import NEW, run_quietly, write_spec

from mfgnn.experiment import ExperimentSettings

MF = "MF-hf/EF-mp2/E[{heads}]"
ORACLE = "SF-mp2/EF"


def points(factors: list[str]) -> list[tuple[str, dict]]:
    """(label, overrides) of every point: ``train``, ``max_time``, ``heads``, ``model``,
    ``loss`` and whether the oracle runs too."""
    base = {"train": 1000, "max_time": 90.0, "max_epochs": None, "heads": "independent",
            "model": {}, "loss": {}, "oracle": False}
    out = [("base", {**base, "oracle": True})]
    table = {
        # the time is the budget: no cap on epochs (the presets stop at 300)
        "budget": [(f"{t:.0f} s uncapped", {"max_time": t, "max_epochs": 100_000,
                                             "oracle": True}) for t in (300.0, 600.0)],
        "size": [(f"train {n}", {"train": n, "oracle": True}) for n in (500, 1300)],
        "heads": [(f"{h} heads", {"heads": h}) for h in ("delta", "tethered")],
        "prior": [(f"level-force w {w:g}", {"loss": {"level_force_weight": w}})
                  for w in (0.1, 1.0)],
        "capacity": [(f"n_features {f}", {"model": {"n_features": f}}) for f in (32, 128)],
    }
    for factor in factors:
        if factor not in table:
            raise SystemExit(f"unknown factor {factor!r}: {', '.join(table)}")
        out += [(label, {**base, **values}) for label, values in table[factor]]
    return out


def run_point(spec: Path, out: Path, point: dict, args) -> dict:
    config = copy.deepcopy(NEW)
    config["model"].update(point["model"])
    config["loss"] = dict(point["loss"])
    names = [MF.format(heads=point["heads"])] + ([ORACLE] if point["oracle"] else [])
    settings = ExperimentSettings(
        data=str(spec), low="hf", high="mp2", train=point["train"], valid=args.valid,
        test=args.test, out=out, seeds=args.seeds, base=config, max_time=point["max_time"],
        max_epochs=point["max_epochs"],
        heads=(point["heads"],), experiments=tuple(names))
    return run_quietly(settings)


def epochs_of(folder: Path) -> str:
    """Epochs trained by each seed's run of an experiment (``runs/<name>/seed<k>``)."""
    counts = [str(max(0, len(m.read_text().splitlines()) - 1))
              for m in sorted(folder.glob("seed*/metrics.csv"))]
    return "/".join(counts) or "?"


def folder_name(experiment: str) -> str:
    """The run folder name ``mfgnn experiment`` gives an experiment."""
    return experiment.replace("/", "_").replace("[", "_").replace("]", "")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--factors", default="budget,size,heads,prior,capacity")
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--valid", type=int, default=200)
    p.add_argument("--test", type=int, default=1000)
    args = p.parse_args(argv)
    _common.set_threads(1)
    spec = write_spec(args.out)
    rows = []
    for label, point in points([f.strip() for f in args.factors.split(",") if f.strip()]):
        folder = args.out / label.replace(" ", "_")
        results = run_point(spec, folder, point, args)
        rows.append((label, folder, results))
        print_table(rows)
    return 0


def print_table(rows) -> None:
    first = rows[0][2]
    gap = first["baseline"]["by_energy"]
    bins = list(gap)
    print(f"\nMP2 force RMSE (meV/Å), test split, by energy above the minimum; "
          f"{first['sizes']['seeds']} seed(s), mean")
    print(f"{'point':<22}{'experiment':<30}{'epochs':>10}"
          + "".join(f"{c:>11}" for c in ["all"] + bins))
    for label, folder, results in rows:
        for exp, metrics in results["experiments"].items():
            high = metrics["high"]
            cells = [high["forces_rmse"]["mean"]] + [
                high.get("by_energy", {}).get(b, {}).get("forces_rmse", {}).get(
                    "mean", float("nan")) for b in bins]
            epochs = epochs_of(folder / "runs" / folder_name(exp))
            print(f"{label:<22}{exp:<30}{epochs:>10}" + "".join(f"{c:>11.1f}" for c in cells))
    raw = [first["baseline"]["forces_gap_rmse"]] + [gap[b]["forces_rmse"] for b in bins]
    print(f"{'raw gap':<62}" + "".join(f"{c:>11.1f}" for c in raw))
    counts = [first["sizes"]["test"]] + [gap[b]["n_structures"] for b in bins]
    print(f"{'test structures':<62}" + "".join(f"{c:>11d}" for c in counts), flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
