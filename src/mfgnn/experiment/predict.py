"""Predictions of a model on dataset rows, as numpy arrays."""

from __future__ import annotations

import numpy as np
import torch
from torch_geometric.loader import DataLoader


def predict(model, dataset, rows, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Energies (n, F) in eV (float64) and forces (Σ atoms, F, 3) in eV/Å of every model
    fidelity on ``rows`` of ``dataset``, in row order."""
    model.eval()
    device = next(model.parameters()).device
    subset = torch.utils.data.Subset(dataset, [int(i) for i in rows])
    energies, forces = [], []
    for batch in DataLoader(subset, batch_size=batch_size, shuffle=False):
        out = model(batch.to(device), forces=True)
        energies.append(out["energy"].detach().double().cpu().numpy())
        forces.append(out["forces"].detach().double().cpu().numpy())
    return np.concatenate(energies), np.concatenate(forces)
