"""The graph step of a dataset: MultiFidelityDataset(levels, graph=RadiusGraph(c) | None)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from torch_geometric.data import Data
from torch_geometric.loader import DataLoader

from mfgnn.data import (MultiFidelityDataset, RadiusGraph, demo_spec_path, load_dataset,
                        radius_graph)
from mfgnn.data.frames import InMemoryFrames


def small_levels(tmp_path) -> list[tuple[InMemoryFrames, str]]:
    """Three molecules (3, 5 and 2 atoms) with one fidelity, built in memory."""
    rng = np.random.default_rng(0)
    counts = [3, 5, 2]
    ptr = np.concatenate([[0], np.cumsum(counts)])
    pos = np.concatenate([rng.uniform(0.0, 3.0, (n, 3)) for n in counts])
    z = np.array([8, 1, 1, 6, 1, 1, 1, 1, 1, 1])
    frames = InMemoryFrames(tmp_path / "mem", ptr, z, pos, {"a": rng.normal(size=3)},
                            {"a": None}, {"positions": "R", "numbers": "Z", "energy:a": "E"})
    return [(frames, "a")]


def test_without_a_graph_items_have_no_edges(tmp_path):
    ds = MultiFidelityDataset(small_levels(tmp_path), graph=None)
    assert ds.graph is None and ds.cutoff is None
    assert all("edge_index" not in ds[i] for i in range(len(ds)))
    assert ds.subset([2, 0]).cutoff is None


@pytest.mark.parametrize("cutoff", [0.5, 1.7, 10.0])
def test_radius_graph_step_gives_the_radius_graph_of_each_item(tmp_path, cutoff):
    ds = MultiFidelityDataset(small_levels(tmp_path), graph=RadiusGraph(cutoff))
    assert ds.cutoff == cutoff and ds.graph == RadiusGraph(cutoff)
    for i in range(len(ds)):
        item = ds[i]
        assert torch.equal(item.edge_index, radius_graph(item.pos, cutoff))
    sub = ds.subset([1, 2])
    assert sub.cutoff == cutoff and sub.graph is ds.graph
    assert torch.equal(sub[0].edge_index, ds[1].edge_index)
    batch = next(iter(DataLoader(ds, batch_size=3)))
    assert torch.equal(batch.edge_index, radius_graph(batch.pos, cutoff, batch.batch))
    assert repr(ds).endswith(f"graph=RadiusGraph(cutoff={cutoff:g}))")


def test_any_callable_is_a_graph_step(tmp_path):
    class Complete:
        """Every ordered pair of atoms, with a declared cutoff for the dataset to report."""

        cutoff = 99.0

        def __call__(self, data: Data) -> Data:
            n = data.num_nodes
            i, j = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
            keep = i != j
            data.edge_index = torch.stack([j[keep], i[keep]])
            return data

    ds = MultiFidelityDataset(small_levels(tmp_path), graph=Complete())
    assert ds.cutoff == 99.0 and ds[1].edge_index.shape == (2, 20)
    no_cutoff = MultiFidelityDataset(small_levels(tmp_path), graph=lambda d: d)
    assert no_cutoff.cutoff is None
    with pytest.raises(TypeError, match="graph must be a callable"):
        MultiFidelityDataset(small_levels(tmp_path), graph=3.0)


def test_radius_graph_transform_contract():
    pos = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [5.0, 0.0, 0.0]])
    data = Data(pos=pos, z=torch.tensor([1, 1, 1]))
    out = RadiusGraph(2.0)(data)
    assert out.edge_index.tolist() == [[1, 0], [0, 1]]
    assert "edge_index" not in data  # PyG transforms work on a shallow copy
    graph = RadiusGraph(2)
    assert isinstance(graph.cutoff, float) and repr(graph) == "RadiusGraph(cutoff=2)"
    assert pickle.loads(pickle.dumps(graph)) == graph  # DataLoader workers
    assert hash(graph) == hash(RadiusGraph(2.0)) and graph != RadiusGraph(3.0)
    for bad in (0, -1.0, float("nan"), "far", None):
        with pytest.raises(ValueError, match="cutoff must be"):
            RadiusGraph(bad)


def test_load_dataset_builds_the_graph_step_and_rejects_a_bad_cutoff_first(tmp_path):
    spec = {"fidelities": {"a": {"path": str(tmp_path / "absent.npz")}}}
    with pytest.raises(ValueError, match="cutoff must be > 0"):  # before any file is read
        load_dataset(spec, cutoff=0.0)


def test_load_dataset_cutoff_is_the_radius_graph_step():
    ds = load_dataset(demo_spec_path(), cutoff=2.5)
    assert ds.graph == RadiusGraph(2.5) and ds.cutoff == 2.5
    assert torch.equal(ds[7].edge_index, radius_graph(ds[7].pos, 2.5))
    plain = load_dataset(demo_spec_path())
    assert plain.graph is None and plain.cutoff is None and "edge_index" not in plain[7]
