"""Radius graph: directed edges between atoms closer than a cutoff, within one structure.

Placeholder implementation (all pairs); replaced by a cell-list version with the same
signature.
"""

from __future__ import annotations

import torch
from torch import Tensor


def radius_graph(pos: Tensor, cutoff: float, batch: Tensor | None = None) -> Tensor:
    """Edges (j -> i) for all pairs i != j of the same structure with |r_i - r_j| < cutoff.

    Args:
        pos: (N, 3) positions in Å.
        cutoff: radius in Å.
        batch: (N,) structure index of each atom (sorted); None means one structure.

    Returns:
        edge_index (2, E) long, row 0 the source j, row 1 the target i (PyG's
        ``source_to_target`` flow, as ``torch_cluster.radius_graph`` returns).
    """
    n = pos.shape[0]
    if batch is None:
        batch = torch.zeros(n, dtype=torch.long, device=pos.device)
    with torch.no_grad():
        d = torch.cdist(pos.detach(), pos.detach())
        same = batch[:, None] == batch[None, :]
        mask = (d < cutoff) & same
        mask.fill_diagonal_(False)
        target, source = mask.nonzero(as_tuple=True)
    return torch.stack([source, target], dim=0)
