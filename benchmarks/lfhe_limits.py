#!/usr/bin/env python
"""What limits MF-low/EF-high/E against the oracle: the low level's own difficulty, the
cost of sharing one trunk, and the correction learned from high-level energies.

For each set (``--sets``, the names of ``benchmarks/lfhe_targets.py``) runs ``mfgnn
experiment`` with the current presets (90 s per run, ``--seeds`` seeds) for the oracle
SF-high/EF, SF-low/EF, MF-low/EF-high/E[heads] and the ``frozen`` paradigm
(Frozen-low/EF→high/E: the low model, then the high head alone on the high energies,
trunk frozen), and splits each two-level model's high-level force error on the test rows
into two parts, per force component:

    e_high = F̂_high − F_high = e_low + e_corr,
    e_low  = F̂_low − F_low                          (its low-level error),
    e_corr = (F̂_high − F̂_low) − (F_high − F_low)    (the error of the learned correction).

It prints, RMSE in meV/Å, mean over seeds:

* ``oracle`` (SF-high/EF on high labels) and ``SF-low`` (SF-low/EF on low labels): how
  hard each level is to learn in the same budget from the same rows;
* ``MF low``, ``MF corr``, ``MF high``: the three terms above for the MF model
  (``MF high``² = ``MF low``² + ``MF corr``² + 2 cov); ``Fz low``, ``Fz corr``,
  ``Fz high`` the same for the frozen-trunk model;
* ``floor`` = SF-low / oracle: MF / oracle if the correction were exact and sharing the
  trunk cost nothing; ``share`` = MF low / SF-low: the cost of sharing it;
  ``corr/gap``: the correction's error against the raw gap RMS(F_low − F_high);
  ``MF/orc`` and ``Fz/orc``: the high-level error of each against the oracle's.

MF / oracle ≤ 1.3 needs ``floor`` × ``share`` well below 1.3 and a correction error small
against the oracle. Re-running with the same ``--out`` (shared with
``benchmarks/lfhe_targets.py``) reuses finished runs.

    python benchmarks/lfhe_limits.py --out runs/targets --sets toluene,ethanol --seeds 3
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

import _common
from lfhe_targets import SETS, experiments_of, run_set, set_arguments, set_names, write_spec

from mfgnn.data import Split, load_dataset
from mfgnn.experiment.baselines import level_references
from mfgnn.experiment.plan import Experiment
from mfgnn.metrics import error_summary, labelled_errors


def rms(pred: np.ndarray, ref: np.ndarray) -> float:
    """RMSE (meV/Å) of ``pred`` against ``ref`` over the labelled rows."""
    return error_summary(labelled_errors(pred, ref), "f").get("f_rmse", float("nan"))


def error_parts(pred_low: np.ndarray, pred_high: np.ndarray, f_low: np.ndarray,
                f_high: np.ndarray) -> dict[str, float]:
    """RMS (meV/Å) of e_low, e_corr and e_high (module docstring) from one model's
    predicted forces at both levels and the labels (eV/Å, same shape)."""
    return {"low": rms(pred_low, f_low), "corr": rms(pred_high - pred_low, f_high - f_low),
            "high": rms(pred_high, f_high)}


def split_errors(name: str, out: Path, seeds: int, experiment: str,
                 labels: tuple[np.ndarray, np.ndarray]) -> dict[str, list[float]]:
    """Per seed: the e_low, e_corr and e_high RMS (meV/Å) of two-level ``experiment`` on
    the test rows, whose low- and high-level force labels are ``labels``."""
    low, high = SETS[name][3], SETS[name][4]
    folder = Experiment(experiment, {}).folder
    parts: dict[str, list[float]] = {"low": [], "corr": [], "high": []}
    for seed in range(seeds):
        data = np.load(out / name / "runs" / folder / f"seed{seed}" / "predictions.npz")
        fids = [str(f) for f in data["fidelities"]]
        seed_parts = error_parts(data["forces"][:, fids.index(low)],
                                 data["forces"][:, fids.index(high)], *labels)
        for key, value in seed_parts.items():
            parts[key].append(value)
    return parts


def test_labels(name: str, out: Path) -> tuple[np.ndarray, np.ndarray]:
    """The low- and high-level force labels of set ``name``'s test rows (eV/Å)."""
    low, high = SETS[name][3], SETS[name][4]
    rows = Split.load(out / name / "split.json").test
    refs = level_references(load_dataset(write_spec(name, out)), rows)
    return refs.of(low)[1], refs.of(high)[1]


HEADER = (f"{'set':<14}{'oracle':>8}{'SF-low':>8}{'MF low':>8}{'MF corr':>8}{'MF high':>8}"
          f"{'Fz low':>8}{'Fz corr':>8}{'Fz high':>8}{'raw gap':>8}{'floor':>7}{'share':>7}"
          f"{'corr/gap':>9}{'MF/orc':>8}{'Fz/orc':>8}")


def report_line(name: str, results: dict, sf_low: str, parts: dict[str, list[float]],
                frozen: dict[str, list[float]]) -> str:
    """One printed row of the table (see the module docstring)."""
    low, high = SETS[name][3], SETS[name][4]
    exps = results["experiments"]
    oracle = exps[f"SF-{high}/EF"]["high"]["forces_rmse"]["mean"]
    sf = exps[sf_low]["low"]["forces_rmse"]["mean"]
    m_low, m_corr, m_high = (float(np.mean(parts[k])) for k in ("low", "corr", "high"))
    f_low, f_corr, f_high = (float(np.mean(frozen[k])) for k in ("low", "corr", "high"))
    gap = results["baseline"]["forces_gap_rmse"]
    return (f"{name:<14}" + "".join(f"{v:>8.1f}" for v in (oracle, sf, m_low, m_corr, m_high,
                                                         f_low, f_corr, f_high, gap))
            + f"{sf / oracle:>7.2f}{m_low / sf:>7.2f}{m_corr / gap:>9.2f}{m_high / oracle:>8.2f}"
            + f"{f_high / oracle:>8.2f}   ({low} → {high})")


def main(argv=None) -> int:
    args = set_arguments(__doc__.splitlines()[0]).parse_args(argv)
    _common.set_threads(1)
    print("high-level force RMSE of the test rows (meV/Å), mean over seeds")
    print(HEADER, flush=True)
    for name in set_names(args.sets):
        low, high = SETS[name][3], SETS[name][4]
        sf_low = f"SF-{low}/EF"
        results = run_set(name, args.out, args.seeds, args.max_time, extra=(sf_low,),
                          paradigms=("mfl", "frozen"))
        labels = test_labels(name, args.out)
        mf = split_errors(name, args.out, args.seeds, experiments_of(name)[2], labels)
        frozen = split_errors(name, args.out, args.seeds, f"Frozen-{low}/EF→{high}/E", labels)
        print(report_line(name, results, sf_low, mf, frozen), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
