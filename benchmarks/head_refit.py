#!/usr/bin/env python
"""What the closed-form refit of energy-only heads (``train.refit_energy_heads``) does to
the high-level forces of the runs of ``benchmarks/lfhe_targets.py``.

The refit is the last step of training, on the saved (best) weights, so applying it to a
finished run's ``model.pt`` gives the model that a run with the option on would have
saved (same trunk, same rows, same rule; :mod:`mfgnn.training.head_refit`). For each set
(``--sets``) of an ``lfhe_targets.py`` output folder (``--out``) this script refits the
SF-high/E and MF-low/EF-high/E models of every seed, scores the high level on the test
split and on the validation split (whose high-level forces no such model trained on),
and prints force RMSE / MAE / P99 (meV/Å) before → after, with the oracle and the raw
gap of the same runs. Results are cached in ``<out>/<set>/head_refit.json``.

    python benchmarks/lfhe_targets.py --out runs/targets --seeds 3
    python benchmarks/head_refit.py --out runs/targets
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import yaml

import _common
from lfhe_targets import SETS, experiments_of, markdown_row, write_markdown

from mfgnn.data import Split, load_dataset
from mfgnn.experiment.baselines import level_references
from mfgnn.experiment.metrics import Predictions, mean_ci95, score
from mfgnn.experiment.plan import Experiment
from mfgnn.experiment.predict import predict
from mfgnn.model_file import load_model
from mfgnn.training.batches import BatchSource
from mfgnn.training.head_refit import energy_only_levels, refit_energy_heads

METRICS = ("forces_rmse", "forces_mae", "forces_p99")


def scores_of(model, dataset, rows, refs, high: str) -> dict:
    """High-level errors of ``model`` on ``rows`` (labels ``refs``): test metrics and
    energy bins."""
    energy, forces = predict(model, dataset, rows)
    t = list(model.fidelities).index(high)
    return score(Predictions(energy[:, t], forces[:, t]), *refs.of(high), refs.groups,
                 refs.n_atoms)


def refit_run(run: Path, dataset, split: Split, refs: dict, high: str) -> dict:
    """Scores of one run's saved model and of its refit, on the validation and test
    rows (labels ``refs`` by split name), and the refit's report."""
    config = yaml.safe_load((run / "config.yaml").read_text())
    model = load_model(run / "model.pt")
    columns = [dataset.fidelities.index(f) for f in model.fidelities]
    batches = {name: BatchSource(dataset, getattr(split, name), columns, 256)
               for name in ("train", "valid")}

    def scores():
        return {name: scores_of(model, dataset, getattr(split, name), refs[name], high)
                for name in refs}

    out = {"before": scores()}
    reports = refit_energy_heads(model, lambda: batches["train"].batches(),
                                 lambda: batches["valid"].batches(),
                                 energy_only_levels(config["labels"]),
                                 bool(config.get("loss", {}).get("per_atom_energy", False)))
    out["after"] = scores()
    out["reports"] = [r.to_dict() for r in reports]
    return out


def refit_set(name: str, out: Path) -> dict:
    """{experiment: [per-seed refit_run results]} of the SF-E and MF runs of a set (one
    split and one dataset for all of them)."""
    cache = out / name / "head_refit.json"
    if cache.is_file():
        return json.loads(cache.read_text())
    high = SETS[name][4]
    sf_e, _, mf = experiments_of(name)
    folders = {exp: sorted((out / name / "runs" / Experiment(exp, {}).folder).glob("seed*"))
               for exp in (sf_e, mf)}
    first = folders[sf_e][0]
    data = yaml.safe_load((first / "config.yaml").read_text())["data"]
    dataset = load_dataset(data, cutoff=load_model(first / "model.pt").config.cutoff)
    split = Split.load(out / name / "split.json")
    refs = {part: level_references(dataset, getattr(split, part)) for part in ("valid", "test")}
    result = {exp: [refit_run(seed, dataset, split, refs, high) for seed in seeds]
              for exp, seeds in folders.items()}
    cache.write_text(json.dumps(result, indent=1))
    return result


def mean_of(per_seed: list, when: str, split: str, metric: str) -> float:
    return float(np.mean([r[when][split][metric] for r in per_seed]))


def report(name: str, refit: dict, results: dict) -> list[str]:
    sf_e, oracle, mf = experiments_of(name)
    exps, base = results["experiments"], results["baseline"]
    lines = [f"\n{name}: high-level forces on the test split (meV/Å), mean over seeds; "
             f"validation RMSE in brackets"]
    for metric in METRICS:
        cells = []
        for exp in (sf_e, mf):
            b, a = (mean_of(refit[exp], w, "test", metric) for w in ("before", "after"))
            vb, va = (mean_of(refit[exp], w, "valid", metric) for w in ("before", "after"))
            cells.append(f"{b:8.1f} → {a:8.1f}" + (f" [{vb:6.1f} → {va:6.1f}]"
                                                   if metric == "forces_rmse" else " " * 18))
        o = exps[oracle]["high"][metric]["mean"]
        m_after = mean_of(refit[mf], "after", "test", metric)
        m_before = mean_of(refit[mf], "before", "test", metric)
        gap = base[metric.replace("forces", "forces_gap")]
        lines.append(f"{metric:<12} SF-E {cells[0]}   MF {cells[1]}   oracle {o:8.1f}   gap "
                     f"{gap:7.1f}   MF/orc {m_before / o:.2f} → {m_after / o:.2f}")
    for exp in (sf_e, mf):
        lams = [r["reports"][0]["lam"] if r["reports"] else None for r in refit[exp]]
        lines.append(f"  {exp}: λ per seed {lams}")
    bins = base.get("by_energy", {})
    if len(bins) > 1:
        for b in bins:
            vals = [np.mean([r[w]["test"]["by_energy"][b]["forces_rmse"] for r in refit[mf]])
                    for w in ("before", "after")]
            lines.append(f"  MF {b:>10}: {vals[0]:8.1f} → {vals[1]:8.1f}")
    return lines


def refitted_results(results: dict, refit: dict) -> dict:
    """``results`` with the SF-E and MF test metrics of the refitted models (mean ± CI
    over seeds, as ``mfgnn experiment`` aggregates them)."""
    out = json.loads(json.dumps(results))
    for exp, per_seed in refit.items():
        high = out["experiments"][exp]["high"]
        for metric in METRICS:
            high[metric] = mean_ci95([r["after"]["test"][metric] for r in per_seed])
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True, help="an lfhe_targets.py output folder")
    p.add_argument("--sets", default=",".join(SETS))
    p.add_argument("--markdown", type=Path, default=None,
                   help="write the headline table rows with the refitted models here")
    args = p.parse_args(argv)
    _common.set_threads(1)
    rows = []
    for name in [s.strip() for s in args.sets.split(",") if s.strip()]:
        if not (args.out / name / "results.json").is_file():
            print(f"{name}: no results.json under {args.out}; run lfhe_targets.py first")
            continue
        results = json.loads((args.out / name / "results.json").read_text())
        refit = refit_set(name, args.out)
        print("\n".join(report(name, refit, results)), flush=True)
        rows.append(markdown_row(name, refitted_results(results, refit)))
    write_markdown(args.markdown, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
