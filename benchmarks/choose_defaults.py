#!/usr/bin/env python
"""Choose the training defaults on *validation* rows: loss weights, batch size, learning rate.

For each data set (``--sets``) and each candidate setting (``--points``), trains the
oracle SF-high/EF and MF-low/EF-high/E (one head mode per set) with ``mfgnn experiment``
at the 90 s default budget, then scores the high level on the **validation split** of the
run (the 200 rows the trainer used for model selection, whose high-level forces were
never trained by the MF model): force RMSE, all rows and, on wide-range data, within 5 eV
of the minimum. The test split is left alone: the test figures of the chosen default are
measured afterwards with ``mfgnn experiment`` and ``benchmarks/hard_data.py``.

Sets: ``h2co`` (MP2 → CCSD(T)-F12), ``hcooh`` (MP2 → CCSD(T)-F12), ``widerange`` (H2O2
RHF → MP2), ``ethanol``, ``toluene`` (rMD17 PBE → MD17), and the other sets of
``benchmarks/lfhe_targets.py`` by its names (``aspirin``, ``h2co-ccsdt``, ...).
Points: ``base`` (the presets), ``ew<k>`` (``loss.energy_weight: k``), ``hw<k>``
(``loss.hierarchicality_weight: k``), ``bs<k>`` (``train.batch_size: k``), ``lr<k>``
(``train.lr: k``), ``sc<0|1>`` (``model.scale_targets``), ``rf<0|1>``
(``train.refit_energy_heads``), ``nf<k>`` (``model.n_features``), ``tg<k>``
(``loss.energy_only_trunk_gradient``), ``eh<k>``
(``loss.energy_weight: {high level: k}``, the other levels 1), ``el<k>`` (the same for
the low level), joined with ``+`` (``ew4+bs16``). ``--mf-only`` skips the oracle (for
points that only touch the MF model); ``--energy-only`` trains only the runs that see no
forces, SF-high/E and MF-low/E-high/E (for points that concern them). Re-running with the
same ``--out`` reuses finished runs.

    python benchmarks/choose_defaults.py --out runs/defaults --sets h2co,widerange \\
        --points base,ew4,ew16
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import numpy as np

import _common
from hard_data import NEW, run_quietly
from lfhe_targets import SETS as TARGET_SETS, write_spec

from mfgnn.data import Split, load_dataset
from mfgnn.experiment import ExperimentSettings
from mfgnn.experiment.baselines import level_references
from mfgnn.experiment.metrics import Predictions, score
from mfgnn.experiment.predict import predict
from mfgnn.model_file import load_model

#: set name here → set of benchmarks/lfhe_targets.py (data, levels, head mode, sizes)
SETS = {"h2co": "h2co-f12", "hcooh": "hcooh-f12", "widerange": "widerange", "toluene": "toluene",
        "ethanol": "ethanol"}
SETS.update({name: name for name in TARGET_SETS if name not in SETS.values()})
#: point prefix → (section, key, type)
KNOBS = {"ew": ("loss", "energy_weight", float), "hw": ("loss", "hierarchicality_weight",
                                                         float),
         "bs": ("train", "batch_size", int), "lr": ("train", "lr", float),
         "sc": ("model", "scale_targets", lambda flag: bool(int(flag))),
         "rf": ("train", "refit_energy_heads", lambda flag: bool(int(flag))),
         "nf": ("model", "n_features", int),
         "tg": ("loss", "energy_only_trunk_gradient", float)}


def point_config(point: str, high: str = "high", low: str = "low") -> dict:
    """The base configuration of a point name (see the module docstring); ``high`` and
    ``low``: the set's levels, for ``eh<k>`` and ``el<k>``."""
    config = copy.deepcopy(NEW)
    config.setdefault("loss", {})
    if point == "base":
        return config
    for part in point.split("+"):
        if part[:2] in ("eh", "el"):
            weights = config["loss"].get("energy_weight")
            weights = dict(weights) if isinstance(weights, dict) else {}
            weights[high if part[1] == "h" else low] = float(part[2:])
            config["loss"]["energy_weight"] = weights
            continue
        prefix = next((p for p in KNOBS if part.startswith(p)), None)
        if prefix is None:
            raise SystemExit(f"unknown point part {part!r}: base or {', '.join(KNOBS)}<k>")
        section, key, kind = KNOBS[prefix]
        config[section][key] = kind(part[len(prefix):])
        if section == "train":  # a named train knob applies to every run
            config["energy_only"].pop(key, None)
    return config


def validation_scores(out: Path, spec: Path, high: str, cutoff: float) -> dict[str, list]:
    """High-level force RMSE (meV/Å) on the validation rows, all and < 5 eV above the
    minimum, for every seed of every experiment under ``out/runs``."""
    split = Split.load(out / "split.json")
    rows = np.asarray(split.valid)
    dataset = load_dataset(spec, cutoff=cutoff)
    refs = level_references(dataset, rows)
    scores: dict[str, list] = {}
    for model_path in sorted((out / "runs").glob("*/seed*/model.pt")):
        model = load_model(model_path)
        energy, forces = predict(model, dataset, rows)
        t = list(model.fidelities).index(high)
        result = score(Predictions(energy[:, t], forces[:, t]), *refs.of(high), refs.groups,
                       refs.n_atoms)
        low_bins = [b for b in result["by_energy"] if float(b.split("-")[0]) < 5]
        sq = sum(result["by_energy"][b]["forces_rmse"] ** 2 *
                 result["by_energy"][b]["n_structures"] for b in low_bins)
        n = sum(result["by_energy"][b]["n_structures"] for b in low_bins)
        scores.setdefault(model_path.parent.parent.name, []).append(
            (result["forces_rmse"], (sq / n) ** 0.5 if n else float("nan")))
    return scores


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--sets", default="h2co,hcooh,widerange")
    p.add_argument("--points", default="base,ew4,ew16")
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--max-time", type=float, default=NEW["train"]["max_time"])
    which = p.add_mutually_exclusive_group()
    which.add_argument("--mf-only", action="store_true", help="train only the MF model")
    which.add_argument("--energy-only", action="store_true",
                       help="train only the runs without forces: SF-high/E, "
                            "MF-low/E-high/E")
    args = p.parse_args(argv)
    _common.set_threads(1)
    lines = []
    for name in [s.strip() for s in args.sets.split(",") if s.strip()]:
        _, _, _, low, high, heads, (n_train, n_valid, n_test) = TARGET_SETS[SETS[name]]
        spec = write_spec(SETS[name], args.out)
        experiments = (f"SF-{high}/EF", f"MF-{low}/EF-{high}/E[{heads}]")[
            1 if args.mf_only else 0:]
        if args.energy_only:
            experiments = (f"SF-{high}/E", f"MF-{low}/E-{high}/E[{heads}]")
        for point in [s.strip() for s in args.points.split(",") if s.strip()]:
            out = args.out / name / point
            settings = ExperimentSettings(
                data=str(spec), low=low, high=high, train=n_train, valid=n_valid,
                test=n_test, out=out, seeds=args.seeds, base=point_config(point, high, low),
                max_time=args.max_time, heads=(heads,), experiments=experiments)
            run_quietly(settings)
            for exp, values in validation_scores(
                    out, spec, high, NEW["model"]["cutoff"]).items():
                every = np.array(values)
                lines.append(f"{name:<10}{point:<14}{exp:<32}{every[:, 0].mean():>10.1f}"
                             f"{every[:, 1].mean():>10.1f}   "
                             + " ".join(f"{v:.1f}" for v in every[:, 0]))
            print_lines(lines)
    return 0


def print_lines(lines: list[str]) -> None:
    print(f"\nhigh-level force RMSE on the validation split (meV/Å), mean over seeds\n"
          f"{'set':<10}{'point':<14}{'experiment':<32}{'all':>10}{'< 5 eV':>10}   seeds",
          flush=True)
    print("\n".join(lines), flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
