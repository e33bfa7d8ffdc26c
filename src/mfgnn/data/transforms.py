"""Graph building as a named step: PyG transforms applied to each dataset item.

:class:`~mfgnn.data.dataset.MultiFidelityDataset` builds the ``Data`` of a row (atoms,
positions, labels) and then, when it was given a graph transform, calls it to add the
edges, in the manner of NequIP's ``NeighborListTransform`` and PyG's ``transform=``
argument. :class:`RadiusGraph` is the transform every command uses::

    dataset = MultiFidelityDataset(levels, graph=RadiusGraph(6.5))
    dataset[0].edge_index    # == radius_graph(dataset[0].pos, 6.5)

Any callable ``Data -> Data`` works as a graph (e.g. a ``torch_geometric.transforms.Compose``);
a transform that has a ``cutoff`` attribute (Å) makes it the dataset's ``cutoff``.
"""

from __future__ import annotations

from collections.abc import Callable

from torch_geometric.data import Data
from torch_geometric.transforms import BaseTransform

from .graph import radius_graph

#: What a dataset accepts as its graph step.
GraphTransform = Callable[[Data], Data]


class RadiusGraph(BaseTransform):
    """Add ``edge_index`` (2, E): every pair of atoms closer than ``cutoff`` Å.

    The edges are :func:`mfgnn.data.graph.radius_graph` of ``data.pos`` (directed j -> i,
    both directions, no self loops, sorted by target then source). Like every PyG
    transform it works on a shallow copy: the input ``Data`` is not modified.

    Args:
        cutoff: radius in Å, > 0.

    Raises:
        ValueError: cutoff not a number > 0.
    """

    def __init__(self, cutoff: float) -> None:
        try:
            value = float(cutoff)
        except (TypeError, ValueError):
            raise ValueError(f"cutoff must be a number > 0 Å, got {cutoff!r}") from None
        if not value > 0:  # also NaN
            raise ValueError(f"cutoff must be > 0 Å, got {cutoff}")
        self.cutoff = value

    def forward(self, data: Data) -> Data:
        """``data`` with ``edge_index`` set from its positions."""
        data.edge_index = radius_graph(data.pos, self.cutoff)
        return data

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RadiusGraph) and other.cutoff == self.cutoff

    def __hash__(self) -> int:
        return hash((RadiusGraph, self.cutoff))

    def __repr__(self) -> str:
        return f"RadiusGraph(cutoff={self.cutoff:g})"

