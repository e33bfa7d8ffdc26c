r"""Δ-learning as a recipe: a low-level model, then a model of the level difference.

:func:`train_delta` runs three steps into one folder:

1. **low** (``OUT/low``, an ordinary run folder): a one-head model trained on the low
   level's labels (``labels.<low>`` of the config, by default energy and forces).
2. **correction** (``OUT/correction``): a one-head model named after the high level,
   trained on the residual E_high − E_low of the rows that have the high level
   (``OUT/residual.npz`` + ``OUT/residual.yaml``: the same geometries, row by row, so the
   shared split applies; NaN where the high level is missing). With
   ``labels.<high>: [energy, forces]`` it also learns the force residual
   F_high − F_low. Its self-energies are fitted to the residual, i.e. they are the
   per-element difference of the two levels' reference energies.
3. **combine**: ``OUT/model.pt`` holds a :class:`~mfgnn.nn.delta_model.DeltaLearningModel`
   (E_high = E_low_model + ΔE_model, forces by autograd of the sum) that
   :func:`mfgnn.load_model`, ``mfgnn evaluate`` and the ASE calculator load like any
   model; it is evaluated on the test split (``OUT/test_metrics.json``).

What E_low is in the residual (:attr:`DeltaConfig.delta_target`):

* ``labels`` (default, classic Δ-learning): the low-level *label* where the row has one,
  else the low model's prediction. The correction then learns the smooth physical
  difference of the two methods, independent of the low model's errors; at inference
  the high prediction carries the low model's error plus the correction's.
* ``predicted``: the low model's prediction on every row. The correction also absorbs
  the low model's (in-sample) error on the high-level rows, so the *sum* is fitted to
  E_high directly; with a good low model and few high rows the difference is small.

Both steps share one split (``OUT/split.json``, drawn from the config's ``split:`` or
read from ``split.file``) and the config's ``model:``/``loss:``/``train:`` sections
(``DeltaConfig.correction_model`` overrides architecture fields of the correction only).
``train.max_time`` is split between the steps: ``low_share`` of it for the low model,
the rest for the correction; ``train.max_epochs`` applies to each step.

Files of ``OUT``: ``config.yaml``, ``split.json``, ``delta.json`` (the recipe's options),
``low/``, ``residual.npz``, ``residual.yaml``, ``correction/``, ``model.pt``,
``test_metrics.json``.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
import yaml
from torch_geometric.loader import DataLoader

from ..config import RunConfig, load_config
from ..config_checks import build_section, check_choice, check_number
from ..data import load_dataset
from ..errors import CheckpointError, ConfigError, DataError, MfgnnError
from ..fileio import savez_atomic, write_json_atomic, write_text_atomic
from ..model_file import load_model, read_model_file, save_model
from ..nn import HIPNNConfig
from ..nn.delta_model import DeltaLearningModel
from .build import pick_device, train
from .evaluation import evaluate_run
from .progress import STDERR, say
from .setup import build_split

#: Choices of :attr:`DeltaConfig.delta_target`.
DELTA_TARGETS = ("labels", "predicted")

#: Names of the residual data written for step 2, in the run folder.
RESIDUAL_FILE = "residual.npz"
RESIDUAL_SPEC = "residual.yaml"


@dataclass
class DeltaConfig:
    """Options of the Δ-learning recipe.

    Attributes:
        delta_target: what E_low is in the residual E_high − E_low: ``labels`` (the
            low-level label where the row has one, else the low model's prediction) or
            ``predicted`` (the low model's prediction on every row); see the module text.
        low_share: fraction of ``train.max_time`` given to the low model (0 < x < 1);
            the correction gets the rest.
        correction_model: architecture fields (``model:`` keys) that differ for the
            correction network, e.g. ``{n_features: 32, n_interactions: 1}``; None: the
            same architecture as the low model.
    """

    delta_target: str = "labels"
    low_share: float = 0.5
    correction_model: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        check_choice(self.delta_target, DELTA_TARGETS, "delta", "delta_target")
        check_number(self.low_share, "delta.low_share", minimum=0, strict=True)
        if self.low_share >= 1:
            raise ConfigError(f"delta.low_share is the low model's fraction of train.max_time "
                              f"(0 < low_share < 1), got {self.low_share}")
        if self.correction_model is not None:
            if not isinstance(self.correction_model, Mapping):
                raise ConfigError("delta.correction_model must be a mapping of model: fields, "
                                  f"got {self.correction_model!r}")
            self.correction_model = dict(self.correction_model)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ---------------------------------------------------------------------------- residuals


@dataclass
class Residuals:
    """The labels of the correction model, one entry per row of the dataset.

    Attributes:
        energy: (n,) float64 eV, E_high − E_low; NaN where the row has no high energy.
        forces: per row (N, 3) float64 eV/Å F_high − F_low, or None (no high forces, or
            force residuals not requested); None as a whole when not requested.
        predicted_energy_rows: rows whose E_low is the low model's prediction.
        predicted_forces_rows: rows whose F_low is the low model's prediction.
    """

    energy: np.ndarray
    forces: list[np.ndarray | None] | None
    predicted_energy_rows: np.ndarray
    predicted_forces_rows: np.ndarray


def residual_labels(dataset, low_model, low: str, high: str, delta_target: str = "labels",
                    forces: bool = False, batch_size: int = 256,
                    device: str | torch.device = "cpu") -> Residuals:
    """E_high − E_low (and F_high − F_low with ``forces``) on every row of ``dataset``.

    E_low is the low label where the row has one and ``delta_target`` is ``labels``,
    else ``low_model``'s prediction (only the rows that need it are evaluated). Rows
    without a high label get NaN (no forces)."""
    check_choice(delta_target, DELTA_TARGETS, "delta", "delta_target")
    k_lo, k_hi = dataset.fidelities.index(low), dataset.fidelities.index(high)
    e_hi = np.asarray(dataset.energies[:, k_hi], dtype=np.float64)
    e_lo = np.asarray(dataset.energies[:, k_lo], dtype=np.float64)
    n = len(e_hi)
    has_hi = np.isfinite(e_hi)
    f_hi = (np.asarray(dataset.has_force_rows[:, k_hi], dtype=bool) if forces
            else np.zeros(n, dtype=bool))
    f_lo = np.asarray(dataset.has_force_rows[:, k_lo], dtype=bool)
    predicted = delta_target == "predicted"
    model_e = has_hi & (predicted | ~np.isfinite(e_lo))
    model_f = f_hi & (predicted | ~f_lo)
    low_energy = np.where(has_hi, e_lo, np.nan)
    force_rows: list[np.ndarray | None] = [None] * n
    rows = np.flatnonzero(model_e | model_f | f_hi)
    if len(rows):
        low_model.eval()
        low_model.to(device)
        loader = DataLoader(torch.utils.data.Subset(dataset, rows.tolist()),
                            batch_size=batch_size, shuffle=False)
        start = 0
        for batch in loader:
            chunk = rows[start:start + batch.num_graphs]
            start += batch.num_graphs
            out = None
            if (model_e[chunk] | model_f[chunk]).any():
                with torch.no_grad() if not model_f[chunk].any() else torch.enable_grad():
                    out = low_model(batch.to(device), forces=bool(model_f[chunk].any()))
                energy = out["energy"][:, 0].detach().double().cpu().numpy()
                take = model_e[chunk]
                low_energy[chunk[take]] = energy[take]
            if not f_hi[chunk].any():
                continue
            ptr = batch.ptr.cpu().numpy()
            labels = batch.forces.detach().double().cpu().numpy()
            pred = (out["forces"][:, 0].detach().double().cpu().numpy()
                    if out is not None and "forces" in out else None)
            for s, row in enumerate(chunk):
                if not f_hi[row]:
                    continue
                atoms = slice(ptr[s], ptr[s + 1])
                lo = pred[atoms] if model_f[row] else labels[atoms, k_lo]
                force_rows[row] = labels[atoms, k_hi] - lo
    energy = e_hi - low_energy
    return Residuals(energy=energy, forces=force_rows if forces else None,
                     predicted_energy_rows=np.flatnonzero(model_e),
                     predicted_forces_rows=np.flatnonzero(model_f))


def write_residual_data(folder: str | Path, dataset, high: str, residuals: Residuals,
                        low: str | None = None) -> Path:
    """``folder/residual.npz`` (keys ``R`` Å, ``Z`` (0 = padding), ``E`` eV and, with
    force residuals, ``F`` eV/Å; NaN = missing) with every row's geometry in the
    dataset's row order, and the spec ``folder/residual.yaml`` naming it as level
    ``high``. Returns the spec's path."""
    folder = Path(folder)
    n = len(dataset)
    geometries = [dataset.geometry(i) for i in range(n)]
    width = max((len(z) for z, _ in geometries), default=0)
    Z = np.zeros((n, width), dtype=np.int64)
    R = np.zeros((n, width, 3), dtype=np.float64)
    for i, (z, pos) in enumerate(geometries):
        Z[i, :len(z)] = z
        R[i, :len(z)] = pos
    arrays = {"R": R, "Z": Z, "E": np.asarray(residuals.energy, dtype=np.float64)}
    if residuals.forces is not None:
        F = np.zeros((n, width, 3), dtype=np.float64)
        for i, f in enumerate(residuals.forces):
            if f is None:
                F[i] = np.nan
            else:
                F[i, :len(f)] = f
        arrays["F"] = F
    savez_atomic(folder / RESIDUAL_FILE, **arrays)
    keys = {"positions": "R", "numbers": "Z", "energy": "E",
            "forces": "F" if residuals.forces is not None else None}
    what = f"{high} - {low}" if low else high
    spec = {"name": "residual",
            "description": f"Δ-learning residual {what} (eV, eV/Angstrom), written by "
                           "mfgnn.training.delta",
            "fidelities": {high: {"path": RESIDUAL_FILE, "format": "npz", "energy_unit": "eV",
                                  "length_unit": "Angstrom", "keys": keys}}}
    path = folder / RESIDUAL_SPEC
    write_text_atomic(path, yaml.safe_dump(spec, sort_keys=False))
    return path


# ---------------------------------------------------------------------------- the recipe


def delta_labels(config: RunConfig, dataset, low: str, high: str) -> tuple[list[str], list[str]]:
    """The label kinds of the low model and of the correction; ConfigError for levels
    the data lacks, a wrong order, or labels of other levels."""
    for name in (low, high):
        if name not in dataset.fidelities:
            raise ConfigError(f"Δ-learning: level {name!r} is not in the data (the dataset "
                              f"has: {', '.join(dataset.fidelities)})")
    if low == high:
        raise ConfigError(f"Δ-learning needs two different levels, got {low!r} twice")
    if dataset.fidelities.index(low) > dataset.fidelities.index(high):
        raise ConfigError(f"Δ-learning: {low!r} comes after {high!r} in the data's order "
                          f"({', '.join(dataset.fidelities)}, lowest first); swap low and high")
    others = [f for f, kinds in config.labels.items() if kinds and f not in (low, high)]
    if others:
        raise ConfigError(f"labels: {', '.join(others)} is neither level of the Δ-learning "
                          f"run ({low} -> {high}); remove it")
    low_kinds = list(config.labels.get(low) or
                     (["energy", "forces"] if dataset.has_forces.get(low) else ["energy"]))
    if "energy" not in low_kinds:
        raise ConfigError(f"labels.{low}: the low model of Δ-learning needs energies "
                          f"(got {low_kinds})")
    high_kinds = ["energy"]
    if "forces" in (config.labels.get(high) or []):
        if not dataset.has_forces.get(high):
            raise ConfigError(f"labels: forces selected for fidelity {high!r}, but the data "
                              "declares no forces for it")
        high_kinds.append("forces")
    return low_kinds, high_kinds


def _check_options(folder: Path, record: dict) -> None:
    """Write ``delta.json`` once; a resumed run must use the options it started with."""
    path = folder / "delta.json"
    if not path.is_file():
        write_json_atomic(path, record)
        return
    before = json.loads(path.read_text())
    if before != json.loads(json.dumps(record)):
        raise ConfigError(f"{path}: the run was started with {before}; now {record}. Use the "
                          "same levels and options to resume, or another output folder")


def train_delta(config: RunConfig | str | Path, low: str, high: str, out_dir: str | Path,
                resume: bool = False, log=STDERR,
                options: DeltaConfig | Mapping[str, Any] | None = None) -> dict:
    """Train a Δ-learning model (low model + correction) into ``out_dir``.

    Args:
        config: the run configuration (or its YAML path): data, split, model, loss and
            train settings shared by both steps; ``labels.<low>`` (default: energy, and
            forces when the data has them) trains the low model, ``labels.<high>``
            may add ``forces`` to learn the force residual too (energies always).
        low, high: the two levels (dataset fidelity names, low before high).
        out_dir: the run folder (layout in the module text).
        resume: continue an interrupted run (each step resumes from its checkpoint;
            finished steps are re-finished from theirs, the residual file is kept).
        log: progress output (``STDERR``, a file, or None).
        options: :class:`DeltaConfig` or a mapping of its fields.

    Returns:
        Test-split metrics of the combined model per level (as
        :func:`~mfgnn.training.evaluation.evaluate_run`), also in ``test_metrics.json``.
    """
    if not isinstance(config, RunConfig):
        config = load_config(config)
    if config.finetune is not None:
        raise ConfigError("the configuration has a finetune: section; Δ-learning trains "
                          "from scratch")
    options = build_section(DeltaConfig, options, "delta") if not isinstance(
        options, DeltaConfig) else options
    out = Path(out_dir)
    if (out / "delta.json").is_file() and not resume:
        raise CheckpointError(f"{out} already holds a Δ-learning run (delta.json); pass "
                              "resume=True (--resume) to continue it or choose another folder")
    dataset = load_dataset(config.resolved_data(), cutoff=config.model.cutoff)
    low_kinds, high_kinds = delta_labels(config, dataset, low, high)
    correction_model = config.model
    if options.correction_model:
        correction_model = HIPNNConfig.from_dict({**config.model.to_dict(),
                                                  **options.correction_model})
    split = build_split(config, len(dataset), out, dataset.dataset_index, dataset.names)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CheckpointError(f"cannot create the run folder {out}: "
                              f"{exc.strerror or exc}") from None
    _check_options(out, {"low": low, "high": high, **options.to_dict()})
    split_path = out / "split.json"
    if not split_path.is_file():
        split.save(split_path)
    labels = {low: low_kinds, high: high_kinds}
    shared = dataclasses.replace(config.split, file=str(split_path.resolve()))
    budget = config.train.max_time
    t_low = None if budget is None else budget * options.low_share
    t_corr = None if budget is None else budget - t_low
    run_config = dataclasses.replace(config, labels=labels, split=shared)
    if not (out / "config.yaml").is_file():
        write_text_atomic(out / "config.yaml",
                          yaml.safe_dump(run_config.to_dict(), sort_keys=False))

    # step 1: the low model
    say(log, f"Δ-learning 1/3: low model {low} {low_kinds} -> {out / 'low'}"
        + (f" ({t_low:.0f} s of {budget:.0f} s)" if budget else ""))
    low_config = dataclasses.replace(
        config, labels={low: low_kinds}, split=shared,
        train=dataclasses.replace(config.train, max_time=t_low))
    train(low_config, out / "low", resume=resume, log=log)
    low_model = load_model(out / "low")

    # step 2: the correction on E_high - E_low
    spec_path = out / RESIDUAL_SPEC
    if not (resume and (out / RESIDUAL_FILE).is_file() and spec_path.is_file()):
        residuals = residual_labels(dataset, low_model, low, high, options.delta_target,
                                    forces="forces" in high_kinds,
                                    batch_size=config.train.eval_batch_size,
                                    device=pick_device(config.train.device))
        low_model.cpu()
        n_res = int(np.isfinite(residuals.energy[split.train]).sum())
        if n_res == 0:
            raise DataError(f"Δ-learning: none of the {len(split.train)} training rows has a "
                            f"{high!r} energy; the correction has nothing to learn")
        spec_path = write_residual_data(out, dataset, high, residuals, low)
        finite = residuals.energy[np.isfinite(residuals.energy)]
        say(log, f"residual {high} - {low} ({options.delta_target}): {len(finite)} rows, "
            f"{len(residuals.predicted_energy_rows)} with the low model's energy, mean "
            f"{finite.mean():+.4f} eV, std {finite.std():.4f} eV")
    say(log, f"Δ-learning 2/3: correction {high} - {low} {high_kinds} -> {out / 'correction'}"
        + (f" ({t_corr:.0f} s)" if budget else ""))
    corr_config = dataclasses.replace(
        config, data=str(spec_path.resolve()), labels={high: high_kinds}, split=shared,
        model=correction_model, train=dataclasses.replace(config.train, max_time=t_corr))
    with warnings.catch_warnings():
        # residuals are small energies: the unit plausibility check would flag them
        warnings.filterwarnings("ignore", message=rf".*{RESIDUAL_FILE}: fidelity .*energy_unit",
                                category=UserWarning)
        train(corr_config, out / "correction", resume=resume, log=log)

    # step 3: the combined model
    combine(out, low, high, labels, options, provenance=list(dataset.provenance))
    say(log, f"Δ-learning 3/3: {out / 'model.pt'} ({low}, {high} = {low} + Δ); test split")
    return evaluate_run(out, json_path=str(out / "test_metrics.json"))


def combine(out_dir: str | Path, low: str, high: str, labels: dict[str, list[str]],
            options: DeltaConfig, provenance: list[str] | None = None) -> DeltaLearningModel:
    """``OUT/model.pt``: the :class:`DeltaLearningModel` of ``OUT/low`` and
    ``OUT/correction`` (with the lineage of both in its metadata)."""
    out = Path(out_dir)
    parts = {}
    for name in ("low", "correction"):
        payload = read_model_file(out / name)
        parts[name] = {"sha256": payload.get("state_sha256"),
                       "best_valid_loss": payload["metadata"].get("best_valid_loss"),
                       "epochs": payload["metadata"].get("epochs")}
    try:
        model = DeltaLearningModel(load_model(out / "low"), load_model(out / "correction"))
    except MfgnnError as exc:
        raise CheckpointError(f"{out}: the low and correction models do not combine: "
                              f"{exc}") from None
    if model.fidelities != (low, high):
        raise CheckpointError(f"{out}: the models' levels are {list(model.fidelities)}, "
                              f"expected {[low, high]}")
    save_model(out / "model.pt", model, labels,
               {"delta_learning": {"low": low, "high": high, **options.to_dict(), "models": parts},
                "provenance": provenance or []})
    return model
