"""The inference path of MultiFidelityHIPNN.forward (outputs without a graph): forces as
gradients of the hierarchical energies seeded with σ_t, and, for one small structure on
the CPU, pairs found by the pair layout itself; both give the numbers of the graph-kept
path (the one force training uses)."""

from __future__ import annotations

import pytest
import torch
from torch_geometric.data import Batch, Data

from mfgnn.data.graph import radius_graph
from mfgnn.errors import ModelError
from mfgnn.nn import HIPNNConfig, MultiFidelityHIPNN
from mfgnn.nn.pairs import build_pair_geometry

pytestmark = pytest.mark.usefixtures("float64_single_thread")

Z = torch.tensor([6, 6, 8, 1, 1, 1, 7, 1, 8, 6, 1])


def _model(**kw) -> MultiFidelityHIPNN:
    torch.manual_seed(0)
    cfg = HIPNNConfig(n_features=10, n_interactions=2, n_atom_layers=2, n_sensitivities=6, cutoff=4.0,
                      soft_min=0.7, soft_max=3.5, **kw)
    model = MultiFidelityHIPNN(cfg, ("a", "b", "c"), (1, 6, 7, 8), torch.randn(3, 4))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    model.set_target_scales([0.1, -0.3, 0.2], [1.7, 0.4, 2.5])
    return model


def _pos(seed: int = 1, n: int = len(Z), spread: float = 2.2) -> torch.Tensor:
    return torch.randn(n, 3, generator=torch.Generator().manual_seed(seed)) * spread


@pytest.mark.parametrize("kw", [{}, {"heads": "delta"}, {"zbl": True, "zbl_inner": 0.6, "zbl_outer": 1.4},
                                {"tensor_order": 1}])
@pytest.mark.parametrize("forces", [True, ["b"], ["a", "c"]])
def test_seeded_forces_equal_the_graph_kept_path(kw, forces):
    model = _model(**kw)
    pos = _pos()
    for data in (Data(z=Z, pos=pos), Data(z=Z, pos=pos, edge_index=radius_graph(pos, 4.0)),
                 Batch.from_data_list([Data(z=Z, pos=pos), Data(z=Z[:5], pos=_pos(2, 5))])):
        fast = model(data, forces=forces)
        kept = model(data, forces=forces, training=True)
        assert not any(v.requires_grad for v in fast.values())
        for key in ("energy", "forces", "hierarchical"):
            torch.testing.assert_close(fast[key], kept[key].detach(), rtol=1e-12, atol=1e-12, equal_nan=True)
        with torch.no_grad():
            torch.testing.assert_close(model(data, forces=forces)["forces"], fast["forces"], rtol=0, atol=0,
                                       equal_nan=True)


def test_pairs_found_by_the_layout_equal_the_radius_graph():
    pos = _pos(3, 40, 3.0)
    with_graph = build_pair_geometry(pos, radius_graph(pos, 4.0), 4.0)
    alone = build_pair_geometry(pos, None, 4.0)
    for name in ("src", "mask", "row_atom", "r", "vec"):
        assert torch.equal(getattr(alone, name), getattr(with_graph, name)), name


def test_coincident_atoms_are_named_without_an_edge_index():
    pos = _pos()
    pos[7] = pos[2]
    with pytest.raises(ModelError, match="atoms 2 and 7"):
        _model()(Data(z=Z, pos=pos), forces=True)
