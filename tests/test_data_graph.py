"""Radius graph: identical edge sets from every algorithm, brute force and torch_cluster."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mfgnn.data import radius_graph
from mfgnn.data.graph import (
    SMALL_STRUCTURE,
    radius_graph_all_pairs,
    radius_graph_cell_list,
)


def brute_force(pos: torch.Tensor, cutoff: float, batch: torch.Tensor | None = None) -> torch.Tensor:
    """Reference: every ordered pair, same squared-distance arithmetic, rows in chunks."""
    n = pos.shape[0]
    batch = torch.zeros(n, dtype=torch.long) if batch is None else batch
    parts = []
    for lo in range(0, n, 256):
        i = torch.arange(lo, min(lo + 256, n))
        d = pos[None, :, :] - pos[i, None, :]  # (chunk, n, 3): pos[j] - pos[i]
        d2 = d[..., 0] * d[..., 0] + d[..., 1] * d[..., 1] + d[..., 2] * d[..., 2]
        mask = (d2 < cutoff * cutoff) & (batch[i, None] == batch[None, :])
        mask[torch.arange(len(i)), i] = False
        ii, jj = mask.nonzero(as_tuple=True)
        parts.append(torch.stack([jj, i[ii]]))
    return torch.cat(parts, dim=1)


def edge_set(e: torch.Tensor) -> set[tuple[int, int]]:
    return set(map(tuple, e.t().tolist()))


def random_box(n: int, density: float = 0.1, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, generator=g, dtype=torch.float64).float() * (n / density) ** (1 / 3)


def test_cell_list_5000_atoms_equals_brute_force():
    pos = random_box(5000)
    assert 5000 > SMALL_STRUCTURE  # radius_graph takes the cell-list path
    edges = radius_graph(pos, 6.5)
    ref = brute_force(pos, 6.5)
    assert edges.shape[1] == ref.shape[1] > 400_000  # ~93 neighbours per atom
    assert torch.equal(edges, ref)  # same set, same order (target, then source)


def test_batch_of_small_molecules_matches_brute_force_and_stays_inside_structures():
    g = torch.Generator().manual_seed(1)
    sizes = torch.randint(1, 25, (200,), generator=g)
    batch = torch.repeat_interleave(torch.arange(200), sizes)
    pos = torch.randn(int(sizes.sum()), 3, generator=g) * 1.5
    edges = radius_graph(pos, 3.0, batch)
    ref = brute_force(pos, 3.0, batch)
    assert torch.equal(edges, ref)  # same order too: sorted by target, then source
    assert (batch[edges[0]] == batch[edges[1]]).all()
    assert (edges[0] != edges[1]).all()
    assert torch.equal(radius_graph_cell_list(pos, 3.0, batch), ref)
    assert torch.equal(radius_graph_all_pairs(pos, 3.0, batch), ref)


def test_mixed_small_and_large_structures_and_unsorted_batch():
    g = torch.Generator().manual_seed(2)
    batch = torch.cat([torch.zeros(600, dtype=torch.long), 1 + torch.arange(300) // 10])
    pos = torch.randn(900, 3, generator=g) * 4.0
    ref = brute_force(pos, 2.5, batch)
    assert torch.equal(radius_graph(pos, 2.5, batch), ref)
    perm = torch.randperm(900, generator=g)
    inv = torch.argsort(perm)  # new index of old atom k
    got = radius_graph(pos[perm], 2.5, batch[perm])
    assert edge_set(got) == edge_set(inv[ref])


def test_direction_and_cutoff_are_strict():
    pos = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [3.0, 0.0, 0.0]])
    edges = radius_graph(pos, 2.0)
    # pairs (0,1) both directions; 1-2 at exactly 2.0 is excluded (strict <)
    assert edges.tolist() == [[1, 0], [0, 1]]
    assert radius_graph(pos, 2.0 + 1e-6).shape[1] == 4


def test_one_atom_and_empty_and_isolated():
    assert radius_graph(torch.zeros(1, 3), 5.0).shape == (2, 0)
    assert radius_graph(torch.zeros(0, 3), 5.0).shape == (2, 0)
    far = torch.tensor([[0.0, 0, 0], [100.0, 0, 0]])
    assert radius_graph(far, 5.0).shape == (2, 0)


def test_no_grad_needed_and_indices_only():
    pos = torch.randn(30, 3, requires_grad=True)
    edges = radius_graph(pos, 3.0)
    assert edges.dtype == torch.long and not edges.requires_grad
    assert torch.equal(edges, brute_force(pos.detach(), 3.0))


def test_float64_input_and_bad_input():
    pos = torch.randn(50, 3, dtype=torch.float64)
    assert torch.equal(radius_graph(pos, 2.0), brute_force(pos, 2.0))
    with pytest.raises(ValueError):
        radius_graph(torch.zeros(4, 2), 1.0)
    with pytest.raises(ValueError):
        radius_graph(torch.zeros(4, 3), 0.0)


def test_cell_list_with_tiny_cutoff_on_large_extent():
    # the cell grid would overflow an int64 key at this resolution: cells are enlarged
    pos = torch.tensor([[0.0, 0, 0], [5e-4, 0, 0], [1e6, 1e6, 1e6]], dtype=torch.float64)
    edges = radius_graph_cell_list(pos, 1e-3)
    assert edge_set(edges) == {(0, 1), (1, 0)}


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(1, 60),
    cutoff=st.floats(0.3, 4.0),
    n_struct=st.integers(1, 5),
    seed=st.integers(0, 2**16),
)
def test_property_all_algorithms_agree(n, cutoff, n_struct, seed):
    rng = np.random.default_rng(seed)
    pos = torch.from_numpy(rng.normal(size=(n, 3)) * 2.0)
    batch = torch.from_numpy(np.sort(rng.integers(0, n_struct, size=n)))
    ref = brute_force(pos, cutoff, batch)
    assert torch.equal(radius_graph(pos, cutoff, batch), ref)
    assert torch.equal(radius_graph_cell_list(pos, cutoff, batch), ref)
    assert torch.equal(radius_graph_all_pairs(pos, cutoff, batch), ref)
    # one structure, float32: the per-item fast path agrees with the batched paths
    p32 = pos.float()
    one = brute_force(p32, cutoff)
    assert torch.equal(radius_graph(p32, cutoff), one)
    assert torch.equal(radius_graph_all_pairs(p32, cutoff), one)
    assert torch.equal(radius_graph(p32, cutoff, torch.zeros(n, dtype=torch.long)), one)


def test_same_edges_as_torch_cluster():
    torch_cluster = pytest.importorskip("torch_cluster")
    g = torch.Generator().manual_seed(3)
    pos = torch.randn(400, 3, generator=g) * 3
    batch = torch.arange(400) // 40
    ref = torch_cluster.radius_graph(pos, r=3.0, batch=batch, loop=False, max_num_neighbors=400)
    assert edge_set(radius_graph_cell_list(pos, 3.0, batch)) == edge_set(ref)
    assert edge_set(radius_graph_all_pairs(pos, 3.0, batch)) == edge_set(ref)
    big = random_box(3000, seed=4)
    ref = torch_cluster.radius_graph(big, r=6.5, loop=False, max_num_neighbors=3000)
    assert edge_set(radius_graph_cell_list(big, 6.5)) == edge_set(ref)
