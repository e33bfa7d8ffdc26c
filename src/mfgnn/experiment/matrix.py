"""``mfgnn experiment``: train K seeds of every experiment of the matrix on one split,
score every label of the test split, and write results.json, results.md and figures.

Layout of the output folder::

    DIR/spec.yaml, DIR/split.json          the data and the one split all runs share
    DIR/runs/<experiment>/seed<k>/         one ``mfgnn train`` run folder each (a staged
        predictions.npz                    paradigm's stages inside it); test-split
                                           predictions (cached)
    DIR/results.json, DIR/results.md, DIR/*.png

``paradigms`` adds transfer learning, Δ-learning and Reptile beside the matrix
(:mod:`mfgnn.experiment.paradigms`), each scored on its high level like a matrix run.
Re-running with the same DIR skips finished runs and resumes interrupted ones.
"""

from __future__ import annotations

import copy
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from ..config import config_from_dict
from ..config_checks import check_keys
from ..data import Split, load_dataset, make_split
from ..errors import ConfigError
from ..fileio import write_json_atomic
from ..model_file import load_model
from ..presets import (EXPERIMENT_ENERGY_ONLY_TRAIN, EXPERIMENT_LFHE_LOW_ENERGY_WEIGHT,
                       EXPERIMENT_TRAIN, SMALL_MODEL)
from ..training.build import train
from ..training.config import TrainConfig
from ..training.head_refit import energy_only_levels
from .baselines import LevelReferences, baselines, level_references, self_energy_shift
from .metrics import Predictions, mean_ci95, score
from .paradigms import OPTION_SECTIONS, ParadigmOptions, describe, train_paradigm
from .plan import HEAD_MODES, Experiment, check_paradigms, plan_experiments
from .predict import predict
from .report import write_figures, write_markdown


@dataclass
class ExperimentSettings:
    """What ``mfgnn experiment`` runs.

    Args:
        data: dataset spec (path).
        low, high: the low-level (energies + forces) and high-level fidelity names.
        train, valid, test: split sizes (one split, seed 0, shared by every run).
        out: output folder (re-running resumes).
        seeds: seeds per experiment.
        base: base run configuration: ``{"model": ..., "loss": ..., "train": ...}``
            (None: the small model and the 90 s budget of :mod:`mfgnn.presets`), or
            the path of a YAML file with those sections, whose keys override the
            presets' key by key (``train: {max_time: 180}`` keeps the rest of the
            preset ``train`` section); ``energy_only:`` sets train keys of the runs
            that see no forces (SF-high/E, MF-low/E-high/E); ``meta:``, ``delta:`` and
            ``finetune:`` set the Reptile, Δ and TL options
            (:class:`~mfgnn.experiment.paradigms.ParadigmOptions`).
        max_epochs, max_time: override ``train.max_epochs`` / ``train.max_time``.
        heads: head modes of the multi-fidelity experiments.
        experiments: run only these experiments of the matrix (None: the whole matrix).
        paradigms: ``mfl`` (the matrix), ``tl``, ``frozen``, ``delta``, ``reptile``
            (:mod:`mfgnn.experiment.paradigms`); unknown names are a ConfigError.
    """

    data: str | Path
    low: str
    high: str
    train: int
    valid: int
    test: int
    out: str | Path
    seeds: int = 3
    base: dict | str | Path | None = None
    max_epochs: int | None = None
    max_time: float | None = None
    heads: tuple[str, ...] = HEAD_MODES
    experiments: tuple[str, ...] | None = None
    paradigms: tuple[str, ...] = ("mfl",)

    def __post_init__(self) -> None:
        # a single name is one name, not a sequence of letters
        if isinstance(self.heads, str):
            self.heads = (self.heads,)
        if isinstance(self.experiments, str):
            self.experiments = (self.experiments,)
        if isinstance(self.paradigms, str):
            self.paradigms = (self.paradigms,)
        self.paradigms = tuple(self.paradigms)
        check_paradigms(self.paradigms)


#: Section of a base configuration with the train keys of the runs that see no forces.
ENERGY_ONLY = "energy_only"


def base_config(base: dict | str | Path | None) -> dict:
    """The model/loss/train sections every run starts from, and the staged paradigms'
    option sections (see :attr:`ExperimentSettings.base`). The ``model`` and ``train``
    sections are the presets of :mod:`mfgnn.presets` updated with the given keys; the
    ``energy_only`` section holds the train keys of runs trained without forces
    (:data:`~mfgnn.presets.EXPERIMENT_ENERGY_ONLY_TRAIN`, less the keys the given
    ``train`` section sets, updated with a given ``energy_only`` section)."""
    if base is None:
        base = {}
    if isinstance(base, dict):
        values, path = copy.deepcopy(base), "base configuration"
    else:
        path = str(base)
        values = yaml.safe_load(Path(base).read_text()) or {}
    ignored = [k for k in ("data", "labels", "split") if k in values]
    if ignored:
        print(f"note: sections {', '.join(ignored)} of {path} are set by the experiment "
              "and ignored", file=sys.stderr)
    kept = ("model", "loss", "train", ENERGY_ONLY, *OPTION_SECTIONS)
    base = {k: v for k, v in values.items() if k in kept}
    unknown = set(values) - {*kept, "data", "labels", "split"}
    if unknown:
        raise ConfigError(f"{path}: unknown section(s) {', '.join(sorted(unknown))}")
    given = {}
    for section in ("model", "train", ENERGY_ONLY):
        given[section] = base.get(section) or {}
        if not isinstance(given[section], dict):
            raise ConfigError(f"{path}: section {section!r} must be a mapping of options, "
                              f"got {type(given[section]).__name__}")
    check_keys(given[ENERGY_ONLY], TrainConfig, f"{path}: section {ENERGY_ONLY!r}")
    # the file's keys override the presets' keys; a train key it gives applies to every
    # run, the energy-only runs' own preset for that key included
    base["model"] = {**SMALL_MODEL, **given["model"]}
    base["train"] = {**EXPERIMENT_TRAIN, **given["train"]}
    base[ENERGY_ONLY] = {**{k: v for k, v in EXPERIMENT_ENERGY_ONLY_TRAIN.items()
                            if k not in given["train"]}, **given[ENERGY_ONLY]}
    return base


def is_lfhe(exp: Experiment, low: str, high: str) -> bool:
    """Whether ``exp`` is a multi-fidelity run of the matrix (not a staged paradigm) that
    trains the low level's forces and only the high level's energies (MF-low/EF-high/E),
    the runs whose low-level energy weight the presets set."""
    return (exp.paradigm == "mfl" and exp.multi_fidelity
            and "forces" in exp.labels.get(low, ()) and high in energy_only_levels(exp.labels))


def _run_config(base: dict, spec: Path, split_path: Path, exp: Experiment, seed: int,
                settings: ExperimentSettings) -> dict:
    values = copy.deepcopy({k: v for k, v in base.items()
                            if k not in (*OPTION_SECTIONS, ENERGY_ONLY)})
    if not any("forces" in kinds for kinds in exp.labels.values()):
        values["train"].update(base.get(ENERGY_ONLY, {}))
    loss = values.get("loss") or {}
    if is_lfhe(exp, settings.low, settings.high) and "energy_weight" not in loss:
        low_weight = {settings.low: EXPERIMENT_LFHE_LOW_ENERGY_WEIGHT}
        values["loss"] = {**loss, "energy_weight": low_weight}
    values["data"] = str(spec)
    values["labels"] = exp.labels
    values["split"] = {"file": str(split_path)}
    values["model"]["heads"] = exp.heads
    values["train"]["seed"] = seed
    if settings.max_epochs is not None:
        values["train"]["max_epochs"] = settings.max_epochs
    if settings.max_time is not None:
        values["train"]["max_time"] = settings.max_time
    return values


def _run_one(values: dict, run_dir: Path, dataset, split: Split, low: str, high: str,
             fit=None, refs: LevelReferences | None = None,
             shift: np.ndarray | None = None) -> dict:
    """Train (or resume) one run and score it on the test split, for both fidelities.
    ``fit()`` trains a staged paradigm into ``run_dir`` (default: ``mfgnn train``).
    ``refs`` (the test labels) and ``shift`` (the low → high self-energy shift of the
    test rows, fitted on the training split) are read once per experiment; None reads
    them here."""
    rows = np.asarray(split.test)
    cached = run_dir / "predictions.npz"
    if not cached.is_file():
        if not (run_dir / "model.pt").is_file() and fit is not None:
            fit()
        elif not (run_dir / "model.pt").is_file():
            resume = (run_dir / "checkpoint.pt").is_file()
            train(config_from_dict(values), run_dir, resume=resume, log=None)
        model = load_model(run_dir / "model.pt")
        energies, forces = predict(model, dataset, rows)
        np.savez(cached, fidelities=np.array(model.fidelities), energy=energies, forces=forces)
    data = np.load(cached)
    fids = [str(f) for f in data["fidelities"]]
    refs = refs if refs is not None else level_references(dataset, rows)
    result = {}
    for role, fid in (("low", low), ("high", high)):
        if fid in fids:
            t = fids.index(fid)
            pred = Predictions(data["energy"][:, t], data["forces"][:, t])
        elif role == "high" and low in fids:
            # a low-level-only model used as a high-level one (energies shifted by the
            # self-energy difference, so only the shape is compared)
            # the self-energy shift is fitted on the training split, never on test labels
            t = fids.index(low)
            if shift is None:
                shift = self_energy_shift(dataset, split.train, rows, low, high)
            pred = Predictions(data["energy"][:, t] + shift, data["forces"][:, t])
        else:
            continue
        result[role] = score(pred, *refs.of(fid), refs.groups, refs.n_atoms)
    return result


def run_experiment(settings: ExperimentSettings, log=None) -> int:
    """Run the matrix of ``settings``; writes results.json, results.md and figures."""
    args = settings
    log = sys.stderr if log is None else log
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    dataset = load_dataset(args.data)
    for role, name in (("--low", args.low), ("--high", args.high)):
        if name not in dataset.fidelities:
            raise ConfigError(f"{role} {name!r} is not a fidelity of {args.data} "
                              f"(it has: {', '.join(dataset.fidelities)})")
    base = base_config(args.base)
    options = ParadigmOptions.from_base(base)
    skipped: list[str] = []
    plan = plan_experiments(args.low, args.high, dataset.has_forces[args.high],
                            dataset.has_forces[args.low], tuple(args.heads),
                            tuple(args.experiments) if args.experiments else None,
                            args.paradigms, options.meta.k, skipped)
    for message in skipped:
        print(message, file=log, flush=True)
    if not plan:
        raise ConfigError(f"nothing to run: no experiment of --paradigms "
                          f"{','.join(args.paradigms)} is possible with this data")
    split_path = out / "split.json"
    if split_path.is_file():
        split = Split.load(split_path)
    else:
        split = make_split(len(dataset), args.train, args.valid, args.test, seed=0)
        split.save(split_path)
    spec = Path(args.data).resolve()
    rows = np.asarray(split.test)
    cut = load_dataset(args.data, cutoff=base["model"].get("cutoff", 6.5))
    refs = level_references(dataset, rows)  # the graph-free dataset: labels only
    shift = self_energy_shift(dataset, split.train, rows, args.low, args.high)
    jobs = [(exp, seed) for exp in plan for seed in range(args.seeds)]
    print(f"{len(plan)} experiments x {args.seeds} seeds = {len(jobs)} runs into {out}",
          file=log, flush=True)
    per_run: dict[str, list[dict]] = {exp.name: [] for exp in plan}
    start = time.monotonic()
    trained = 0
    for k, (exp, seed) in enumerate(jobs, 1):
        run_dir = out / "runs" / exp.folder / f"seed{seed}"
        fresh = not (run_dir / "predictions.npz").is_file()
        values = _run_config(base, spec, split_path, exp, seed, args)
        fit = None if exp.paradigm == "mfl" else (
            lambda: train_paradigm(exp, values, run_dir, args.low, args.high, options))
        result = _run_one(values, run_dir, cut, split, args.low, args.high, fit, refs, shift)
        per_run[exp.name].append(result)
        trained += fresh
        elapsed = time.monotonic() - start
        eta = elapsed / max(trained, 1) * sum(
            1 for e, s in jobs[k:] if not (out / "runs" / e.folder / f"seed{s}" /
                                           "predictions.npz").is_file())
        high = result.get("high", {})
        print(f"[{k}/{len(jobs)}] {exp.name} seed {seed}: {args.high} "
              f"E {high.get('energy_rmse', float('nan')):.2f} meV, "
              f"F {high.get('forces_rmse', float('nan')):.1f} meV/Å"
              f"{'' if fresh else ' (done before)'}  [{elapsed:.0f} s, ~{eta:.0f} s left]",
              file=log, flush=True)
    results = {
        "units": {"energy": "meV", "forces": "meV/A"},
        "fidelities": {"low": args.low, "high": args.high},
        "sizes": {"train": len(split.train), "valid": len(split.valid),
                  "test": len(split.test), "seeds": args.seeds},
        "baseline": baselines(dataset, split, args.low, args.high, refs, shift),
        "experiments": {name: _aggregate(runs) for name, runs in per_run.items()},
        "paradigms": {p: describe(p, args.low, args.high, options) for p in
                      dict.fromkeys(e.paradigm for e in plan)},
    }
    write_json_atomic(out / "results.json", results)
    write_markdown(results, out / "results.md")
    write_figures(results, out, per_run_dirs={e.name: out / "runs" / e.folder for e in plan},
                  dataset=cut, rows=rows)
    print((out / "results.md").read_text())
    return 0


def _aggregate(runs: list[dict]) -> dict:
    """Mean ± 95 % CI over seeds of every metric (and of every energy bin's metrics)."""
    out: dict = {}
    for role in ("high", "low"):
        metrics = [r[role] for r in runs if role in r]
        if metrics:
            out[role] = _mean_ci_tree(metrics)
    return out


def _mean_ci_tree(items: list[dict]) -> dict:
    keys = sorted({k for m in items for k in m})
    out = {}
    for k in keys:
        values = [m[k] for m in items if k in m]
        out[k] = (_mean_ci_tree(values) if isinstance(values[0], dict)
                  else mean_ci95(values))
    return out
