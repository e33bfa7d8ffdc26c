"""What the ``mfgnn`` commands do, as functions usable from Python: train a run,
evaluate a run, and the packaged demo (multi-fidelity vs single-fidelity on the bundled
H2CO MP2 / CCSD(T)-F12 subset)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch_geometric.loader import DataLoader

from .config import RunConfig, load_config
from .errors import ConfigError, ModelError
from .io import atomic_json_dump, load_model
from .training.evaluation import evaluate_model
from .training.setup import setup_run
from .training.trainer import STDERR, Trainer


def train(config: RunConfig | str | Path, out_dir: str | Path, resume: bool = False,
          log=STDERR) -> dict:
    """Train the run described by ``config`` into ``out_dir``; returns test metrics."""
    if not isinstance(config, RunConfig):
        config = load_config(config)
    setup = setup_run(config, Path(out_dir))
    trainer = Trainer(setup, out_dir, resume=resume, log=log)
    return trainer.fit()


def evaluate_run(run_dir: str | Path, data: str | None = None, split: str = "test",
                 json_path: str | None = None, batch_size: int = 256,
                 dtype: torch.dtype | None = None) -> dict:
    """Energy and force RMSE/MAE per fidelity of a trained run.

    By default on the run's own ``split`` ("train", "valid", "test"); with ``data`` (a
    dataset spec) on every row of that dataset, matching fidelities by name.
    Returns ``{fidelity: {"energy_rmse": meV, "energy_mae": meV, "forces_rmse": meV/Å,
    "forces_mae": meV/Å, "n_energy": int, "n_forces": int}}``.
    """
    from .data import Split, load_dataset

    run_dir = Path(run_dir)
    model = load_model(run_dir / "model.pt", dtype=dtype)
    if data is None:
        config = load_config(run_dir / "config.yaml")
        dataset = load_dataset(config.resolved_data(), cutoff=model.config.cutoff)
        chosen = Split.load(run_dir / "split.json")
        if split not in ("train", "valid", "test"):
            raise ConfigError(f"--split must be train, valid or test, not {split!r}")
        indices = getattr(chosen, split)
    else:
        dataset = load_dataset(data, cutoff=model.config.cutoff)
        indices = np.arange(len(dataset))
    columns = [dataset.fidelities.index(f) if f in dataset.fidelities else None
               for f in model.fidelities]
    if all(c is None for c in columns):
        raise ConfigError(
            f"the data has none of the model's fidelities (model: "
            f"{', '.join(model.fidelities)}; data: {', '.join(dataset.fidelities)})")
    check_elements(model, dataset, indices, run_dir / "model.pt")
    subset = torch.utils.data.Subset(dataset, list(map(int, indices)))
    _, metrics = evaluate_model(model, DataLoader(subset, batch_size=batch_size), columns)
    if json_path:
        try:
            atomic_json_dump(metrics, json_path)
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
    source = ", ".join(str(f.path) for f in spec.fidelities) if spec is not None else "the data"
    more = f" (and {hit.size - 1} more rows)" if hit.size > 1 else ""
    raise ModelError(
        f"{source}: row {row}{more} holds element(s) {', '.join(map(str, found))} (atomic "
        f"numbers), which the model {model_path} was not trained on; allowed atomic numbers: "
        f"{', '.join(map(str, model.elements))}")


def format_metrics(metrics: dict) -> str:
    """A plain-text table of :func:`evaluate_run` results."""
    head = f"{'fidelity':<12}{'E RMSE':>10}{'E MAE':>10}{'F RMSE':>10}{'F MAE':>10}{'n_E':>8}{'n_F':>8}"
    lines = [head, f"{'':<12}{'meV':>10}{'meV':>10}{'meV/Å':>10}{'meV/Å':>10}"]

    def fmt(x):
        return f"{x:>10.2f}" if x is not None else f"{'-':>10}"

    for fid, m in metrics.items():
        lines.append(f"{fid:<12}{fmt(m.get('energy_rmse'))}{fmt(m.get('energy_mae'))}"
                     f"{fmt(m.get('forces_rmse'))}{fmt(m.get('forces_mae'))}"
                     f"{m.get('n_energy', 0):>8}{m.get('n_forces', 0):>8}")
    return "\n".join(lines)
