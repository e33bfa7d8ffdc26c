"""Evaluation of a model on labelled structures: every label that exists is scored,
including labels of fidelities the model never trained on (e.g. high-level forces of a
model trained to high-level energies only)."""

from __future__ import annotations

import torch

from ..loss import MultiFidelityLoss
from .metrics import MetricAccumulator
from .setup import select_columns


def evaluate_model(model, loader, columns: list[int | None] | None = None,
                   loss_fn: MultiFidelityLoss | None = None) -> tuple[float, dict]:
    """Mean loss (when ``loss_fn`` is given, else NaN) and per-fidelity metrics.

    Args:
        model: a :class:`~mfgnn.nn.MultiFidelityHIPNN`.
        loader: batches whose label columns are the dataset's.
        columns: for each model fidelity, its column in the batch labels.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    metrics = MetricAccumulator(model.fidelities)
    total, batches = 0.0, 0
    for batch in loader:
        if columns is not None:
            batch = select_columns(batch, columns)
        batch = batch.to(device)
        has_forces = bool(torch.isfinite(batch.forces[..., 0]).any())
        out = model(batch, forces=has_forces)
        out = {k: (v.detach() if torch.is_tensor(v) else v) for k, v in out.items()}
        metrics.update(out, batch)
        if loss_fn is not None:
            with torch.no_grad():
                total += float(loss_fn(out, batch, model.hierarchicality(out)).total)
            batches += 1
    model.train(was_training)
    loss = total / batches if batches else float("nan")
    return loss, metrics.summary()
