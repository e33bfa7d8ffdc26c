"""From a run configuration to the pieces of a run: dataset, split, self-energies, model.

The model's fidelities are the dataset's fidelities that appear in ``labels``, in the
dataset's order (lowest level first): a single-fidelity run has one head, a
multi-fidelity run one head per trained level. Labels that exist in the data but are
not selected are never used, not even for the self-energy fit.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..config import RunConfig
from ..data import (MultiFidelityDataset, Split, fit_self_energies, make_dataset_split,
                    make_split)
from ..data.distances import auto_sensitivity_range, coverage_warning, pair_distance_stats
from ..data.packed import PackedDataset, open_dataset
from ..data.splits import sample_rows
from ..nn.normalization import TargetScales, fit_target_scales
from ..errors import ConfigError, DataError


@dataclass
class RunSetup:
    """The data side of a run, from which :func:`~mfgnn.training.build.build_trainer`
    makes the trainer's parts."""

    config: RunConfig
    dataset: MultiFidelityDataset
    split: Split
    fidelities: tuple[str, ...]      # the model's, lowest level first
    columns: list[int]               # their columns in the dataset's labels
    self_energies: torch.Tensor      # (F_model, n_elements) float64, eV
    target_scales: TargetScales | None = None   # μ_t, σ_t when model.scale_targets
    notes: list[str] = field(default_factory=list)  # what the setup chose or found


def check_labels(config: RunConfig, dataset: MultiFidelityDataset) -> None:
    """Every selected label must exist in the data, else one clear ConfigError."""
    for name, kinds in config.labels.items():
        if name not in dataset.fidelities:
            raise ConfigError(
                f"labels: fidelity {name!r} is not in the data "
                f"(the dataset has: {', '.join(dataset.fidelities)})"
            )
        if "forces" in kinds and not dataset.has_forces.get(name, False):
            raise ConfigError(
                f"labels: forces selected for fidelity {name!r}, but the data declares "
                f"no forces for it"
            )
    if not any(config.labels.values()):
        raise ConfigError("labels: no label selected for training")


def model_fidelities(config: RunConfig, dataset: MultiFidelityDataset) -> list[str]:
    """Dataset fidelities with at least one selected label, in dataset order."""
    return [f for f in dataset.fidelities if config.labels.get(f)]


def build_split(config: RunConfig, n: int, out_dir: Path | None,
                dataset_index: np.ndarray | None = None, names: tuple[str, ...] = ()) -> Split:
    """The saved split of a run (resume), a given split file, or a fresh random one.

    With rows of several datasets (``dataset_index``, ``names``) or per-dataset sizes,
    a fresh split is drawn per dataset (:func:`~mfgnn.data.splits.make_dataset_split`,
    ``split.stratify``); otherwise over all rows (:func:`~mfgnn.data.splits.make_split`).
    A split read from a file must fit the dataset (rows in ``range(n)``), else a
    DataError names the file."""
    saved = out_dir / "split.json" if out_dir is not None else None
    path = None
    if saved is not None and saved.is_file():
        path = saved
    elif config.split.file:
        path = Path(config.split.file)
        if not path.is_absolute():
            path = Path(config.base_dir) / path
    if path is None:
        s = config.split
        if dataset_index is not None and (len(names) > 1 or s.per_dataset):
            return make_dataset_split(dataset_index, names, s.train, s.valid, s.test,
                                      seed=s.seed, stratify=s.stratify)
        if s.per_dataset:
            raise ConfigError("split: per-dataset sizes need the rows' datasets "
                              "(pass dataset_index and names)")
        return make_split(n, s.train, s.valid, s.test, seed=s.seed)
    split = Split.load(path)
    try:
        split.check(n)
    except DataError as exc:
        raise DataError(f"{path}: {exc} (was the split made for another dataset?)") from None
    if path == saved:
        _warn_if_sizes_differ(config, split, saved)
    return split


def _warn_if_sizes_differ(config: RunConfig, split: Split, saved: Path) -> None:
    """The run folder's own split wins (a resumed run keeps its rows); say so when the
    configuration asks for other (integer) sizes."""
    import warnings

    asked = {k: getattr(config.split, k) for k in ("train", "valid", "test")}
    differ = {k: v for k, v in asked.items()
              if isinstance(v, int) and not isinstance(v, bool) and v != len(getattr(split, k))}
    if differ:
        held = ", ".join(f"{k} {len(getattr(split, k))}" for k in asked)
        wanted = ", ".join(f"{k} {v}" for k, v in differ.items())
        warnings.warn(f"{saved} holds this run folder's split ({held}); it is used, not the "
                      f"configuration's {wanted} (write the run into another folder for a "
                      "new split)", UserWarning, stacklevel=3)


def fit_model_self_energies(dataset: MultiFidelityDataset, split: Split,
                            fidelities: list[str], config: RunConfig) -> torch.Tensor:
    """Per-fidelity self-energies from the training rows; zero for a fidelity whose
    energies are not trained (its labels stay unused)."""
    fit = fit_self_energies(dataset, split.train)
    values = np.zeros((len(fidelities), len(dataset.elements)), dtype=np.float64)
    for t, name in enumerate(fidelities):
        if "energy" in config.labels.get(name, []):
            values[t] = fit.values[fit.fidelities.index(name)]
    return torch.as_tensor(values, dtype=torch.float64)


def setup_run(config: RunConfig, out_dir: Path | None = None) -> RunSetup:
    """Load the data, check the labels, split, and fit self-energies.

    Memory does not grow with per-row Python objects: the split and the self-energy fit
    work on index arrays and streamed per-composition sums, the pair-distance check and
    the target scales read a bounded seeded sample of the training rows
    (:data:`DISTANCE_ROWS`, :data:`SCALE_ROWS`), a pack's atoms are read in bulk."""
    dataset = open_dataset(config.resolved_data(), cutoff=config.model.cutoff)
    check_labels(config, dataset)
    split = build_split(config, len(dataset), out_dir, dataset.dataset_index, dataset.names)
    if len(split.train) == 0:
        raise DataError(f"split: the training split is empty ({_sizes(split)})")
    if len(split.valid) == 0:
        raise DataError(f"split: the validation split is empty ({_sizes(split)}; "
                        "early stopping needs it)")
    fidelities = model_fidelities(config, dataset)
    for name in fidelities:
        t = dataset.fidelities.index(name)
        if "energy" in config.labels[name]:
            if not np.isfinite(dataset.energies[split.train, t]).any():
                raise DataError(f"labels: energy selected for fidelity {name!r}, but none of "
                                f"the {len(split.train)} training rows has a {name!r} energy "
                                f"({_field(dataset, name, 'energy')})")
        if "forces" in config.labels[name]:
            if not dataset.has_force_rows[split.train, t].any():
                raise DataError(f"labels: forces selected for fidelity {name!r}, but none of "
                                f"the {len(split.train)} training rows has {name!r} forces "
                                f"({_field(dataset, name, 'forces')}; NaN = missing)")
    columns = [dataset.fidelities.index(f) for f in fidelities]
    self_energies = fit_model_self_energies(dataset, split, fidelities, config)
    notes: list[str] = []
    if len(dataset.names) > 1:
        notes.append("split per dataset: " + "; ".join(
            f"{name} " + " ".join(f"{k} {v}" for k, v in sizes.items())
            for name, sizes in split.by_dataset(dataset.dataset_index, dataset.names).items()))
    config = check_distances(config, dataset, split, notes)
    config = resolve_batch_size(config, dataset, split, notes)
    scales = None
    if config.model.scale_targets:
        scales = fit_model_target_scales(config, dataset, split, fidelities, self_energies)
        notes.append("target scales (model.scale_targets): " + ", ".join(
            f"{f} μ {m:+.4f} eV/atom σ {sd:.4g} eV" for f, m, sd in
            zip(fidelities, scales.shift, scales.scale)))
    if isinstance(dataset, PackedDataset):
        dataset.close()  # a pack: unmap the pages the checks read (reopened on use)
    return RunSetup(config, dataset, split, tuple(fidelities), columns, self_energies,
                    scales, notes)


#: ``train.batch_size: auto``: the batch below and from AUTO_BATCH_ATOMS atoms per
#: training structure on average.
AUTO_BATCH_SMALL, AUTO_BATCH_LARGE, AUTO_BATCH_ATOMS = 32, 8, 8.0


def auto_batch_size(mean_atoms: float) -> int:
    """The batch of ``train.batch_size: auto`` for training structures of ``mean_atoms``
    atoms on average: 32 below 8 atoms, 8 from 8 atoms up. Measured at the 90 s
    budget of ``mfgnn experiment`` on one CPU core (README, batch-size tables): on the
    validation rows of four rMD17 molecules (9–24 atoms) batch 8 lowered the MF model's
    force error on all four and the oracle's on three, and raised both on H2CO, HCOOH and
    H2O2 (4–5 atoms); on the test rows of all ten rMD17 molecules (3 seeds) it lowered the
    MF model's error on ten and the oracle's on nine. No set of 7 or 8 atoms was measured."""
    return AUTO_BATCH_LARGE if mean_atoms >= AUTO_BATCH_ATOMS else AUTO_BATCH_SMALL


def resolve_batch_size(config: RunConfig, dataset, split: Split, notes: list[str]) -> RunConfig:
    """The configuration with ``train.batch_size: auto`` replaced by
    :func:`auto_batch_size` of the training rows' mean atom count (a note says what it
    chose); unchanged for a number."""
    if config.train.batch_size != "auto":
        return config
    mean_atoms = float(np.asarray(dataset.n_atoms)[split.train].mean())
    size = auto_batch_size(mean_atoms)
    notes.append(f"batch size chosen from the data (train.batch_size: auto): {size} "
                 f"structures ({mean_atoms:.1f} atoms per training structure on average)")
    return dataclasses.replace(config, train=dataclasses.replace(config.train, batch_size=size))


#: The largest soft_min that ``soft_min: auto`` chooses (Å): the HIP-NN default.
AUTO_SOFT_MIN_CEILING = 0.75
#: Training rows scanned by :func:`check_distances` (a seeded sample when there are more).
DISTANCE_ROWS = 50_000
#: Training rows of the target-scale estimate (a seeded sample when there are more).
SCALE_ROWS = 200_000


def check_distances(config: RunConfig, dataset, split: Split, notes: list[str]) -> RunConfig:
    """Pair distances of the training rows against the sensitivity range: warns (with
    numbers) when pairs fall below ``soft_min``; resolves ``"auto"`` soft_min/soft_max
    from the data (:func:`~mfgnn.data.distances.auto_sensitivity_range`; soft_min at most
    :data:`AUTO_SOFT_MIN_CEILING`). Returns the configuration with numeric distances."""
    model = config.model
    rows = sample_rows(split.train, DISTANCE_ROWS, config.split.seed)
    stats = pair_distance_stats(dataset, rows, cutoff=model.cutoff)
    q = stats.quantiles
    sampled = (f" in a random sample of {len(rows)} of the {len(split.train)} training rows"
               if len(rows) < len(split.train) else "")
    notes.append(f"training pair distances: min {stats.min_distance:.3f} Å, 0.1 % "
                 f"{q.get(0.001, float('nan')):.3f} Å, 1 % {q.get(0.01, float('nan')):.3f} Å, "
                 f"median {q.get(0.5, float('nan')):.3f} Å ({stats.n_pairs} pairs{sampled})")
    if model.auto_range:
        lo, hi = auto_sensitivity_range(stats, model.cutoff)
        # soft_min: auto only ever lowers the HIP-NN default: raising it to just below the
        # closest pairs (0.87 Å on H2CO) cost energy-only training 2x (README, Results)
        lo = min(lo, AUTO_SOFT_MIN_CEILING) if model.soft_min == "auto" else model.soft_min
        hi = hi if model.soft_max == "auto" else model.soft_max
        notes.append(f"sensitivity range chosen from the data: soft_min {lo} Å, soft_max {hi} Å")
        model = dataclasses.replace(model, soft_min=lo, soft_max=hi)
        config = dataclasses.replace(config, model=model)
    message = coverage_warning(stats, model.soft_min)
    if message and sampled:
        message += f" (counted{sampled})"
    if message:
        warnings.warn(message, UserWarning, stacklevel=3)
        notes.append(message)
    return config


def fit_model_target_scales(config: RunConfig, dataset, split: Split, fidelities: list[str],
                            self_energies: torch.Tensor) -> TargetScales:
    """μ_t per fidelity and one σ shared by the model's fidelities, from training labels
    that are selected for training only.

    σ is the RMS force component of the trained force labels (pooled over fidelities as
    a geometric mean); without trained forces σ = 1 eV (the per-atom energy spread, the
    other candidate, is 30× smaller than the force scale on H2CO). One σ for all levels keeps
    the heads' modes meaningful (delta: E_t = E_{t−1} + ΔE_t in the same units) and the
    levels' errors comparable. More than :data:`SCALE_ROWS` training rows: μ and σ are
    estimated on a seeded random sample of that many."""
    rows = sample_rows(split.train, SCALE_ROWS, config.split.seed)
    cols = [dataset.fidelities.index(f) for f in fidelities]
    energies = dataset.energies[np.ix_(rows, cols)].copy()
    for t, name in enumerate(fidelities):
        if "energy" not in config.labels.get(name, []):
            energies[:, t] = np.nan
    counts = dataset.element_counts_of(rows).astype(np.float64)
    reference = counts @ self_energies.numpy().T
    rms = dataset.force_rms(rows)[cols]
    rms = np.array([r if "forces" in config.labels.get(name, []) else np.nan
                    for r, name in zip(rms, fidelities)])
    fit = fit_target_scales(energies, dataset.n_atoms[rows], reference, rms, fidelities)
    from_forces = [sd for sd, src in zip(fit.scale, fit.source) if src == "forces"]
    common = float(np.exp(np.mean(np.log(from_forces)))) if from_forces else 1.0
    return dataclasses.replace(fit, scale=np.full(len(fidelities), common))


def _sizes(split: Split) -> str:
    return ", ".join(f"{k} {v}" for k, v in split.sizes().items())


def _field(dataset: MultiFidelityDataset, name: str, kind: str) -> str:
    """Where a fidelity's label comes from (file and field, every dataset that holds it),
    for messages (best effort)."""
    spec = getattr(dataset, "spec", None)
    where = []
    for f in getattr(spec, "fidelities", ()):
        if f.name == name:
            key = f.keys.get(kind)
            where.append(f"field {key!r} of {f.path}" if key else f"the {kind} field of {f.path}")
    return "; ".join(where) if where else f"field {kind}"
