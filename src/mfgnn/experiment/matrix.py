"""``mfgnn experiment``: train K seeds of every experiment of the matrix on one split,
score every label of the test split, and write results.json, results.md and figures.

Layout of the output folder::

    DIR/spec.yaml, DIR/split.json          the data and the one split all runs share
    DIR/runs/<experiment>/seed<k>/         one ``mfgnn train`` run folder each
        predictions.npz                    test-split predictions (cached)
    DIR/results.json, DIR/results.md, DIR/*.png

Re-running with the same DIR skips finished runs and resumes interrupted ones.
"""

from __future__ import annotations

import copy
import sys
import time
from pathlib import Path

import numpy as np
import yaml

from ..config import config_from_dict
from ..data import Split, fit_self_energies, load_dataset, make_split
from ..errors import ConfigError
from ..io import atomic_json_dump, load_model
from ..run import train
from .metrics import Predictions, mean_ci95, score
from .plan import Experiment, plan_experiments
from .predict import predict
from .report import write_figures, write_markdown

#: Default budget: the whole matrix on one small molecule, 3 seeds, in about an hour
#: on 2 CPU cores.
DEFAULT_MODEL = {"n_features": 48, "n_interactions": 2, "n_atom_layers": 2,
                 "n_sensitivities": 20, "tensor_order": 1, "activation": "shifted_softplus"}
DEFAULT_TRAIN = {"max_epochs": 300, "batch_size": 32, "lr": 2.0e-3, "patience": 30,
                 "scheduler_patience": 8, "max_time": 90.0}


def _base_config(path: str | None) -> dict:
    if not path:
        return {"model": dict(DEFAULT_MODEL), "train": dict(DEFAULT_TRAIN)}
    values = yaml.safe_load(Path(path).read_text()) or {}
    ignored = [k for k in ("data", "labels", "split") if k in values]
    if ignored:
        print(f"note: --config sections {', '.join(ignored)} are set by the experiment "
              "and ignored", file=sys.stderr)
    base = {k: v for k, v in values.items() if k in ("model", "loss", "train")}
    unknown = set(values) - {"model", "loss", "train", "data", "labels", "split"}
    if unknown:
        raise ConfigError(f"{path}: unknown section(s) {', '.join(sorted(unknown))}")
    base.setdefault("model", dict(DEFAULT_MODEL))
    base.setdefault("train", dict(DEFAULT_TRAIN))
    return base


def _composition_groups(dataset, rows: np.ndarray) -> np.ndarray:
    counts = dataset.element_counts_of(rows)
    _, groups = np.unique(counts, axis=0, return_inverse=True)
    return groups.reshape(-1)


def _reference(dataset, rows: np.ndarray, fidelity: str):
    """Energies (n,) and forces (Σ atoms, 3) labels of ``fidelity`` on ``rows``."""
    t = dataset.fidelities.index(fidelity)
    energy = dataset.energies[rows, t]
    forces = np.concatenate([dataset[int(i)].forces[:, t].double().numpy() for i in rows])
    return energy, forces


def baselines(dataset, split: Split, low: str, high: str) -> dict:
    """Errors of "just use the low-level method" on the test split: the force gap
    RMS(F_low − F_high) (meV/Å) and the energy gap after fitting each level's
    self-energies on the training split (meV)."""
    rows = np.asarray(split.test)
    e_lo, f_lo = _reference(dataset, rows, low)
    e_hi, f_hi = _reference(dataset, rows, high)
    out = {}
    ok = np.isfinite(f_lo).all(1) & np.isfinite(f_hi).all(1)
    if ok.any():
        out["forces_gap_rmse"] = 1000.0 * float(np.sqrt(np.mean((f_lo[ok] - f_hi[ok]) ** 2)))
    fit = fit_self_energies(dataset, split.train)
    counts = dataset.element_counts_of(rows)
    shift = (fit.values[fit.fidelities.index(high)] - fit.values[fit.fidelities.index(low)])
    gap = e_lo + counts @ shift - e_hi
    ok = np.isfinite(gap)
    if ok.any():
        out["energy_gap_rmse"] = 1000.0 * float(np.sqrt(np.mean(gap[ok] ** 2)))
    return out


def _run_config(base: dict, spec: Path, split_path: Path, exp: Experiment, seed: int,
                args) -> dict:
    values = copy.deepcopy(base)
    values["data"] = str(spec)
    values["labels"] = exp.labels
    values["split"] = {"file": str(split_path)}
    values["model"]["heads"] = exp.heads
    values["train"]["seed"] = seed
    if args.max_epochs is not None:
        values["train"]["max_epochs"] = args.max_epochs
    if args.max_time is not None:
        values["train"]["max_time"] = args.max_time
    return values


def _run_one(values: dict, run_dir: Path, dataset, rows, low: str, high: str) -> dict:
    """Train (or resume) one run and score it on the test split, for both fidelities."""
    cached = run_dir / "predictions.npz"
    if not cached.is_file():
        if not (run_dir / "model.pt").is_file():
            resume = (run_dir / "checkpoint.pt").is_file()
            train(config_from_dict(values), run_dir, resume=resume, log=None)
        model = load_model(run_dir / "model.pt")
        energies, forces = predict(model, dataset, rows)
        np.savez(cached, fidelities=np.array(model.fidelities), energy=energies, forces=forces)
    data = np.load(cached)
    fids = [str(f) for f in data["fidelities"]]
    groups = _composition_groups(dataset, rows)
    result = {}
    for role, fid in (("low", low), ("high", high)):
        if fid in fids:
            t = fids.index(fid)
            pred = Predictions(data["energy"][:, t], data["forces"][:, t])
        elif role == "high" and low in fids:
            # a low-level-only model used as a high-level one (energies shifted by the
            # self-energy difference, so only the shape is compared)
            t = fids.index(low)
            pred = Predictions(data["energy"][:, t] + _self_energy_shift(dataset, rows, low, high),
                               data["forces"][:, t])
        else:
            continue
        e_ref, f_ref = _reference(dataset, rows, fid)
        result[role] = score(pred, e_ref, f_ref, groups)
    return result


def _self_energy_shift(dataset, rows, low: str, high: str) -> np.ndarray:
    fit = fit_self_energies(dataset, rows)
    delta = fit.values[fit.fidelities.index(high)] - fit.values[fit.fidelities.index(low)]
    return dataset.element_counts_of(rows) @ delta


def run_experiment(args, log=None) -> int:
    """Run the whole matrix described by the parsed ``mfgnn experiment`` arguments."""
    log = sys.stderr if log is None else log
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    dataset = load_dataset(args.data)
    for role, name in (("--low", args.low), ("--high", args.high)):
        if name not in dataset.fidelities:
            raise ConfigError(f"{role} {name!r} is not a fidelity of {args.data} "
                              f"(it has: {', '.join(dataset.fidelities)})")
    heads = tuple(h.strip() for h in args.heads.split(",") if h.strip())
    chosen = getattr(args, "experiments", None)
    only = tuple(n.strip() for n in chosen.split(",") if n.strip()) if chosen else None
    plan = plan_experiments(args.low, args.high, dataset.has_forces[args.high],
                            dataset.has_forces[args.low], heads, only)
    split_path = out / "split.json"
    if split_path.is_file():
        split = Split.load(split_path)
    else:
        split = make_split(len(dataset), args.train, args.valid, args.test, seed=0)
        split.save(split_path)
    spec = Path(args.data).resolve()
    base = _base_config(args.config)
    rows = np.asarray(split.test)
    cut = load_dataset(args.data, cutoff=base["model"].get("cutoff", 6.5))
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
        result = _run_one(values, run_dir, cut, rows, args.low, args.high)
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
        "baseline": baselines(cut, split, args.low, args.high),
        "experiments": {name: _aggregate(runs) for name, runs in per_run.items()},
    }
    atomic_json_dump(results, out / "results.json")
    write_markdown(results, out / "results.md")
    write_figures(results, out, per_run_dirs={e.name: out / "runs" / e.folder for e in plan},
                  dataset=cut, rows=rows)
    print((out / "results.md").read_text())
    return 0


def _aggregate(runs: list[dict]) -> dict:
    out: dict = {}
    for role in ("high", "low"):
        keys = sorted({k for r in runs for k in r.get(role, {})})
        if keys:
            out[role] = {k: mean_ci95([r[role][k] for r in runs if k in r.get(role, {})])
                         for k in keys}
    return out
