"""Evaluation of a model on labelled structures: every label that exists is scored,
including labels of fidelities the model never trained on (e.g. high-level forces of a
model trained to high-level energies only)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from ..errors import ConfigError, ModelError
from ..fileio import write_json_atomic
from ..loss import MultiFidelityLoss
from ..metrics import MetricAccumulator
from ..model_file import load_model
from .batches import BatchSource
from .distributed import SINGLE, Distributed, empty_share


def evaluate_model(model, batches, loss_fn: MultiFidelityLoss | None = None,
                   accumulator: MetricAccumulator | None = None,
                   dist: Distributed = SINGLE) -> tuple[float, dict]:
    """Mean loss over the batches (when ``loss_fn`` is given, else NaN) and per-fidelity
    metrics (:class:`~mfgnn.metrics.MetricAccumulator`).

    Args:
        model: a :class:`~mfgnn.nn.MultiFidelityHIPNN`.
        batches: batches whose label columns are the model's (see
            :class:`~mfgnn.training.batches.BatchSource`); in a distributed run, this
            rank's shares of the global batches (None for an empty share).
        loss_fn: the training loss, to report the validation loss.
        accumulator: collects the errors (a fresh one by default); pass one to read
            more from it afterwards (e.g. :meth:`MetricAccumulator.by_energy`).
        dist: in a distributed run, the loss of each global batch is normalised over
            all ranks and every rank's errors are gathered, so every rank returns the
            figures of the whole set.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    n_fid = len(model.fidelities)
    metrics = accumulator if accumulator is not None else MetricAccumulator(model.fidelities)
    total, count = 0.0, 0
    for batch in batches:
        local = (torch.isfinite(batch.forces[..., 0]).any().reshape(1) if batch is not None
                 else torch.zeros(1, dtype=torch.bool))
        has_forces = bool(dist.any_(local.cpu())[0])
        with_forces = set(range(n_fid)) if has_forces else set()
        if batch is None:
            out, batch, hier = empty_share(model, device)
        else:
            batch = batch.to(device)
            out = model(batch, forces=has_forces)
            out = {k: (v.detach() if torch.is_tensor(v) else v) for k, v in out.items()}
            metrics.update(out, batch)
            hier = model.hierarchicality(out)
        if loss_fn is not None:
            with torch.no_grad():
                stats = loss_fn.statistics(out, batch, hier, with_forces)
                total += float(loss_fn.combine(dist.sum_statistics(stats)).total)
            count += 1
    model.train(was_training)
    if dist.enabled:
        metrics.absorb([m for r, m in enumerate(dist.gather(metrics)) if r != dist.rank])
    loss = total / count if count else float("nan")
    return loss, metrics.summary()


class DatasetMetrics:
    """A :class:`~mfgnn.metrics.MetricAccumulator` over all structures plus one per
    dataset (batches carry ``dataset``, the index into ``names``); the same ``update`` /
    ``summary`` / ``by_energy`` interface, so it can be handed to :func:`evaluate_model`.

    ``summary()`` adds to each fidelity ``"by_dataset": {name: {energy_rmse, ...,
    n_energy, n_forces}}`` for the datasets with labels of that fidelity.
    """

    def __init__(self, fidelities, names):
        self.fidelities = tuple(fidelities)
        self.names = tuple(names)
        self.total = MetricAccumulator(self.fidelities)
        self.parts = [MetricAccumulator(self.fidelities) for _ in self.names]

    def update(self, out: dict, batch) -> None:
        """Add one batch to the total and to the accumulator of each dataset in it."""
        self.total.update(out, batch)
        dataset = getattr(batch, "dataset", None)
        if dataset is None:
            return
        dataset = dataset.reshape(-1).cpu()
        atoms = (dataset if getattr(batch, "batch", None) is None
                 else dataset[batch.batch.cpu()])
        energy, forces = batch.energy.cpu(), batch.forces.cpu()
        for d in torch.unique(dataset).tolist():
            keep_e = (dataset == d).reshape(-1, *([1] * (energy.dim() - 1)))
            keep_f = (atoms == d).reshape(-1, *([1] * (forces.dim() - 1)))
            view = SimpleNamespace(  # the other datasets' labels masked out
                energy=torch.where(keep_e, energy, torch.full_like(energy, float("nan"))),
                forces=torch.where(keep_f, forces, torch.full_like(forces, float("nan"))))
            self.parts[d].update(out, view)

    def absorb(self, others) -> None:
        """Add the errors collected by other :class:`DatasetMetrics`."""
        others = list(others)
        self.total.absorb(o.total for o in others)
        for d, part in enumerate(self.parts):
            part.absorb(o.parts[d] for o in others)

    def by_energy(self, groups_of) -> dict[str, dict]:
        """:meth:`MetricAccumulator.by_energy` of all structures."""
        return self.total.by_energy(groups_of)

    def summary(self) -> dict[str, dict]:
        """Per-fidelity metrics of all structures, with ``by_dataset`` entries."""
        result = self.total.summary()
        parts = [p.summary() for p in self.parts]
        for name, entry in result.items():
            entry["by_dataset"] = {d: part[name] for d, part in zip(self.names, parts)
                                   if name in part}
        return result


def evaluate_run(run_dir: str | Path, data: str | None = None, split: str = "test",
                 json_path: str | None = None, batch_size: int = 256,
                 dtype: torch.dtype | None = None) -> dict:
    """Energy and force errors per fidelity of a trained run (``mfgnn evaluate``).

    By default on the run's own ``split`` ("train", "valid", "test"); with ``data`` (a
    dataset spec) on every row of that dataset, matching fidelities by name.
    Returns ``{fidelity: {"energy_rmse", "energy_mae", "energy_p99": meV,
    "forces_rmse", "forces_mae", "forces_p99": meV/Å, "n_energy", "n_forces",
    "by_energy": {bin: the same errors}}}``, where ``by_energy`` bins the structures by
    their label energy above the minimum of their composition (when they span more than
    one bin of :data:`~mfgnn.metrics.ENERGY_BIN_EDGES`: wide-range data). When the data
    holds several datasets, each fidelity also has ``"by_dataset": {dataset name: the
    same errors and counts}`` (the datasets with labels of that fidelity).
    """
    from ..config import load_config
    from ..data import Split
    from ..data.packed import open_dataset

    run_dir = Path(run_dir)
    model = load_model(run_dir / "model.pt", dtype=dtype)
    if data is None:
        if split not in ("train", "valid", "test"):
            raise ConfigError(f"--split must be train, valid or test, not {split!r}")
        config = load_config(run_dir / "config.yaml")
        dataset = open_dataset(config.resolved_data(), cutoff=model.config.cutoff)
        rows = getattr(Split.load(run_dir / "split.json"), split)
    else:
        dataset = open_dataset(data, cutoff=model.config.cutoff)
        rows = np.arange(len(dataset))
    columns = [dataset.fidelities.index(f) if f in dataset.fidelities else None
               for f in model.fidelities]
    if all(c is None for c in columns):
        raise ConfigError(
            f"the data has none of the model's fidelities (model: "
            f"{', '.join(model.fidelities)}; data: {', '.join(dataset.fidelities)})")
    check_elements(model, dataset, rows, run_dir / "model.pt")
    source = BatchSource(dataset, rows, columns, batch_size)
    names = tuple(getattr(dataset, "names", ()))
    accumulator = (DatasetMetrics(model.fidelities, names) if len(names) > 1
                   else MetricAccumulator(model.fidelities))
    _, metrics = evaluate_model(model, source.batches(), accumulator=accumulator)

    def groups_of(structure_rows):
        counts = dataset.element_counts_of(structure_rows)
        return np.unique(counts, axis=0, return_inverse=True)[1].reshape(-1)

    for name, bins in accumulator.by_energy(groups_of).items():
        if len(bins) > 1 and name in metrics:
            metrics[name]["by_energy"] = bins
    if json_path:
        try:
            write_json_atomic(json_path, metrics)
        except OSError as exc:
            raise ConfigError(f"could not write {json_path}: {exc.strerror or exc}") from None
    return metrics


def check_elements(model, dataset, rows, model_path) -> None:
    """ModelError naming the data file, the first row and the element when ``rows`` of
    ``dataset`` hold an element the model was not trained on."""
    unknown = [z for z in dataset.elements if z not in model.elements]
    if not unknown:
        return
    rows = np.asarray(rows, dtype=np.int64)
    cols = [dataset.elements.index(z) for z in unknown]
    counts = dataset.element_counts_of(rows)[:, cols] if len(rows) else np.zeros((0, 1))
    hit = np.flatnonzero(counts.sum(axis=1) > 0)
    if not hit.size:
        return
    row = int(rows[hit[0]])
    found = [z for z, c in zip(unknown, counts[hit[0]]) if c > 0]
    spec = getattr(dataset, "spec", None)
    source = (", ".join(dict.fromkeys(str(f.path) for f in spec.fidelities))
              if spec is not None else "the data")
    more = f" (and {hit.size - 1} more rows)" if hit.size > 1 else ""
    names = getattr(dataset, "names", ())
    if len(names) > 1:
        more = f" of dataset {names[int(dataset.dataset_index[row])]!r}{more}"
    raise ModelError(
        f"{source}: row {row}{more} holds element(s) {', '.join(map(str, found))} (atomic "
        f"numbers), which the model {model_path} was not trained on; allowed atomic numbers: "
        f"{', '.join(map(str, model.elements))}")
