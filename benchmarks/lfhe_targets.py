#!/usr/bin/env python
"""The headline claim on every shared set: MF-low/EF-high/E against SF-high/E, the oracle
SF-high/EF and the raw low-vs-high gap, with the issue's targets checked.

For each set (``--sets``), runs ``mfgnn experiment`` with the current presets (the 90 s
default budget, ``--seeds`` seeds) for SF-high/E, SF-high/EF and MF-low/EF-high/E[heads]
and prints the high-level force RMSE, MAE and 99th percentile on the test split (mean over
seeds), the raw gap (low-level forces used as high-level ones) and the targets:

* MF ≤ 0.5 × SF-high/E, MF ≤ 1.3 × the oracle, MF below the raw gap;
* the oracle below the raw gap wherever the gap exceeds 2 % of the high-level force RMS;

in RMSE, MAE and P99 (``yes``/``no`` per target), and on wide-range data the same per
bin of energy above the minimum. Re-running with the same ``--out`` reuses finished runs.

    python benchmarks/lfhe_targets.py --out runs/targets --sets h2co-f12,widerange --seeds 3

``--markdown FILE`` also writes one row per set (RMSE ± 95 % CI, MAE and P99 of the three
models, the raw gap and the ratios) as the README's table.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


import _common
from hard_data import NEW, run_quietly

from mfgnn.data import Split, load_dataset
from mfgnn.experiment import ExperimentSettings

#: the rMD17 molecules: the four of the README's first tables, then the other six
RMD17 = ("ethanol", "aspirin", "malonaldehyde", "toluene",
         "azobenzene", "benzene", "naphthalene", "paracetamol", "salicylic", "uracil")
#: set → (data recipe, its data folder, spec file, low, high, MF head mode, sizes)
SETS = {
    "h2co-f12": ("shared_mp2_ccsdt", "mp2_ccsdt", "h2co.yaml", "mp2", "f12", "independent",
                 (1000, 200, 1000)),
    "hcooh-f12": ("shared_mp2_ccsdt", "mp2_ccsdt", "hcooh.yaml", "mp2", "f12", "delta",
                  (1000, 200, 1000)),
    "h2co-ccsdt": ("shared_mp2_ccsdt", "mp2_ccsdt", "h2co.yaml", "mp2", "ccsdt", "delta",
                   (1000, 200, 1000)),
    "hcooh-ccsdt": ("shared_mp2_ccsdt", "mp2_ccsdt", "hcooh.yaml", "mp2", "ccsdt", "delta",
                    (1000, 200, 1000)),
    "ch3oh-ccsdt": ("shared_mp2_ccsdt", "mp2_ccsdt", "ch3oh.yaml", "mp2", "ccsdt", "delta",
                    (1000, 200, 1000)),
    "widerange": ("shared_widerange", "widerange", "h2o2_widerange.yaml", "hf", "mp2",
                  "independent", (1000, 200, 1000)),
    **{mol: ("rmd17", "rmd17", f"rmd17_{mol}_train_01.yaml", "pbe", "md17", "delta",
             (700, 100, 200)) for mol in RMD17},
}
METRICS = ("forces_rmse", "forces_mae", "forces_p99")


def write_spec(name: str, out: Path) -> Path:
    """The spec of set ``name`` in ``out/specs``, written by its data recipe."""
    recipe, folder, filename = SETS[name][:3]
    spec_dir = out / "specs"
    if not (spec_dir / filename).is_file():
        sys.path.insert(0, str(_common.REPO / "data_recipes"))
        module = __import__(recipe)
        data = _common.shared_data(folder)
        if recipe == "shared_widerange":
            module.write_spec(data, spec_dir, check=False)
        else:
            module.write_specs(data, spec_dir, check=False)
    return spec_dir / filename


def experiments_of(name: str) -> tuple[str, str, str]:
    """(SF-high/E, oracle SF-high/EF, MF-low/EF-high/E[heads]) of a set."""
    _, _, _, low, high, heads, _ = SETS[name]
    return f"SF-{high}/E", f"SF-{high}/EF", f"MF-{low}/EF-{high}/E[{heads}]"


def run_set(name: str, out: Path, seeds: int, max_time: float, extra: tuple[str, ...] = (),
            paradigms: tuple[str, ...] = ("mfl",)) -> dict:
    """Train (or reuse) the three experiments of set ``name`` (and the matrix experiments
    ``extra``, the staged ``paradigms``) in ``out/<name>``; the results.json."""
    _, _, _, low, high, heads, (n_train, n_valid, n_test) = SETS[name]
    spec = write_spec(name, out)
    settings = ExperimentSettings(
        data=str(spec), low=low, high=high, train=n_train, valid=n_valid, test=n_test,
        out=out / name, seeds=seeds, base=NEW, max_time=max_time, heads=(heads,),
        experiments=experiments_of(name) + tuple(extra), paradigms=paradigms)
    return run_quietly(settings)


def force_rms(name: str, out: Path, folder: Path | None = None) -> float:
    """RMS of the high-level force labels of the test rows (meV/Å) of the experiment
    folder ``folder`` (default ``out/<name>``)."""
    dataset = load_dataset(write_spec(name, out))
    rows = Split.load((folder or out / name) / "split.json").test
    return 1000.0 * float(dataset.force_rms(rows)[dataset.fidelities.index(SETS[name][4])])


def check(mf: float, sf_e: float, oracle: float, gap: float) -> list[str]:
    return ["yes" if ok else "no" for ok in (mf <= 0.5 * sf_e, mf <= 1.3 * oracle, mf < gap)]


def target_row(label: str, sf_e: float, oracle: float, mf: float, gap: float,
               oracle_ok: str) -> str:
    """One printed line: the three errors, the gap, the ratios and the targets."""
    return (f"{label:<12}" + "".join(f"{c:>9.1f}" for c in (sf_e, oracle, mf, gap))
            + f"{mf / sf_e:>9.2f}{mf / oracle:>8.2f}  "
            + "".join(f"{c:<11}" for c in check(mf, sf_e, oracle, gap)) + oracle_ok)


def report(name: str, results: dict, rms: float) -> list[str]:
    names = experiments_of(name)
    exps, base = results["experiments"], results["baseline"]
    lines = [f"\n{name}: {results['fidelities']['low']} → {results['fidelities']['high']}, "
             f"{results['sizes']['seeds']} seed(s), test {results['sizes']['test']} rows; "
             f"high-level force RMS {rms:.0f} meV/Å",
             f"{'metric':<12}{'SF-E':>9}{'oracle':>9}{'MF':>9}{'raw gap':>9}"
             f"{'MF/SF-E':>9}{'MF/orc':>8}  MF≤0.5SF-E MF≤1.3orc MF<gap orc<gap"]
    for metric in METRICS:
        a, o, m = (exps[e]["high"][metric]["mean"] for e in names)
        gap = base[metric.replace("forces", "forces_gap")]
        oracle_ok = ("yes" if o < gap else "no") if gap > 0.02 * rms else "n/a"
        lines.append(target_row(metric, a, o, m, gap, oracle_ok))
    bins = base.get("by_energy", {})
    if len(bins) > 1:
        lines.append("force RMSE by energy above the minimum (meV/Å):")
        for b, gap_bin in bins.items():
            a, o, m = (exps[e]["high"].get("by_energy", {}).get(b, {}).get(
                "forces_rmse", {}).get("mean", float("nan")) for e in names)
            gap = gap_bin["forces_rmse"]
            lines.append(target_row(b, a, o, m, gap, "yes" if o < gap else "no")
                         + f"   ({gap_bin['n_structures']} rows)")
    return lines


def markdown_row(name: str, results: dict) -> str:
    """One README table row: force RMSE ± CI, MAE, P99 of SF-E / oracle / MF, the gap,
    MF/SF-E and MF/oracle (RMSE)."""
    exps, base = results["experiments"], results["baseline"]
    cells = []
    for exp in experiments_of(name):
        high = exps[exp]["high"]
        rmse = high["forces_rmse"]
        cells.append(f"{rmse['mean']:.1f} ± {rmse['ci95']:.1f} / {high['forces_mae']['mean']:.1f}"
                     f" / {high['forces_p99']['mean']:.0f}")
    sf_e, oracle, mf = (exps[e]["high"]["forces_rmse"]["mean"] for e in experiments_of(name))
    gap = (f"{base['forces_gap_rmse']:.1f} / {base['forces_gap_mae']:.1f} / "
           f"{base['forces_gap_p99']:.0f}")
    fids = results["fidelities"]
    heads = SETS[name][5]
    return (f"| {name} ({fids['low']} → {fids['high']}, {heads}) | " + " | ".join(cells)
            + f" | {gap} | {mf / sf_e:.2f} | {mf / oracle:.2f} |")


MARKDOWN_HEADER = ("| set (levels, MF heads) | SF-high/E | SF-high/EF (oracle) | MF-low/EF-high/E "
                   "| raw gap | MF / SF-E | MF / oracle |\n|---|---|---|---|---|---|---|")


def write_markdown(path: Path | None, rows: list[str], header: str = MARKDOWN_HEADER) -> None:
    """The README table (``header`` and ``rows``) into ``path``, when given."""
    if path is not None:
        path.write_text("\n".join([header, *rows]) + "\n")
        print(f"wrote {path}")


def set_arguments(description: str) -> argparse.ArgumentParser:
    """The command line shared by the per-set benchmarks: --out, --sets, --seeds,
    --max-time."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--sets", default=",".join(SETS), help=f"comma separated: {', '.join(SETS)}")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--max-time", type=float, default=NEW["train"]["max_time"])
    return p


def set_names(text: str) -> list[str]:
    """The set names of a --sets value; an unknown one stops with the valid names."""
    names = [s.strip() for s in text.split(",") if s.strip()]
    for name in names:
        if name not in SETS:
            raise SystemExit(f"unknown set {name!r}: {', '.join(SETS)}")
    return names


def main(argv=None) -> int:
    p = set_arguments(__doc__.splitlines()[0])
    p.add_argument("--markdown", type=Path, default=None, help="write the README table here")
    args = p.parse_args(argv)
    _common.set_threads(1)
    lines: list[str] = []
    rows: list[str] = []
    for name in set_names(args.sets):
        results = run_set(name, args.out, args.seeds, args.max_time)
        lines += report(name, results, force_rms(name, args.out))
        print("\n".join(lines), flush=True)
        lines = []
        rows.append(markdown_row(name, results))
    write_markdown(args.markdown, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
