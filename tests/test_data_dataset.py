"""MultiFidelityDataset items, PyG batching, subsets, DataLoader workers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch_geometric.loader import DataLoader

from mfgnn.data import demo_spec_path, load_dataset, radius_graph


@pytest.fixture(scope="module")
def ch3oh(shared_data):
    d = shared_data / "mp2_ccsdt"
    return load_dataset({"fidelities": {
        "mp2": {"path": str(d / "meuwly_db_CH3OH_MP2.npz"), "energy_unit": "eV"},
        "ccsdt": {"path": str(d / "ch3oh_cc_avtz_7201.npz"), "energy_unit": "eV"},
    }}, cutoff=3.0)


def test_item_fields_dtypes_and_shapes(ch3oh):
    item = ch3oh[10]
    assert item.z.dtype == torch.long and item.z.shape == (6,)
    assert item.pos.dtype == torch.float32 and item.pos.shape == (6, 3)
    assert item.energy.dtype == torch.float64 and item.energy.shape == (1, 2)
    assert item.forces.dtype == torch.float32 and item.forces.shape == (6, 2, 3)
    assert item.idx.tolist() == [10]
    assert torch.equal(item.edge_index, radius_graph(item.pos, 3.0))
    assert item.edge_index.shape[1] == 30  # CH3OH: every pair within 3 Å
    np.testing.assert_array_equal(item.energy.numpy()[0], ch3oh.energies[10])
    assert torch.equal(ch3oh[-1].idx, torch.tensor([7200]))
    with pytest.raises(IndexError):
        ch3oh[7201]


def test_dataloader_batching_shapes(ch3oh):
    loader = DataLoader(ch3oh, batch_size=16, shuffle=False)
    batch = next(iter(loader))
    assert batch.energy.shape == (16, 2) and batch.energy.dtype == torch.float64
    assert batch.forces.shape == (96, 2, 3) and batch.forces.dtype == torch.float32
    assert batch.pos.shape == (96, 3) and batch.z.shape == (96,)
    assert batch.batch.shape == (96,) and batch.idx.tolist() == list(range(16))
    # edge indices are offset per structure and never cross structures
    assert (batch.batch[batch.edge_index[0]] == batch.batch[batch.edge_index[1]]).all()
    assert torch.equal(batch.edge_index, radius_graph(batch.pos, 3.0, batch.batch))
    np.testing.assert_array_equal(batch.energy.numpy(), ch3oh.energies[:16])


def test_no_edges_without_cutoff(shared_data):
    ds = load_dataset(demo_spec_path())
    assert "edge_index" not in ds[0]
    assert ds.cutoff is None and ds.fidelities == ("mp2", "f12")


def test_subset_keeps_attributes_and_original_rows(ch3oh):
    rows = [5, 700, 42, 7200]
    sub = ch3oh.subset(rows)
    assert len(sub) == 4 and sub.fidelities == ch3oh.fidelities
    np.testing.assert_array_equal(sub.energies, ch3oh.energies[rows])
    np.testing.assert_array_equal(sub.element_counts(), ch3oh.element_counts()[rows])
    assert sub[1].idx.tolist() == [700]
    nested = sub.subset([3, 0])
    assert [nested[k].idx.item() for k in range(2)] == [7200, 5]
    np.testing.assert_array_equal(nested.energies, ch3oh.energies[[7200, 5]])
    batch = next(iter(DataLoader(sub, batch_size=4)))
    assert batch.idx.tolist() == rows


def test_missing_fidelity_is_nan_in_batches(shared_data):
    path = str(shared_data / "ani1x_sample" / "ani1_n5.hdf5")
    ds = load_dataset({"fidelities": {
        "dft": {"path": path, "format": "ani-h5", "energy_key": "wb97x_dz.energy"},
        "cc": {"path": path, "format": "ani-h5", "energy_key": "ccsd(t)_cbs.energy"},
    }}, cutoff=5.0)
    batches = list(DataLoader(ds, batch_size=8, num_workers=2))  # one h5 handle per worker
    b = batches[0]
    assert b.energy.shape == (8, 2) and b.forces.shape == (int(ds.n_atoms.sum()), 2, 3)
    assert torch.isnan(b.energy[:, 1]).sum() == 2 and not torch.isnan(b.energy[:, 0]).any()
    assert torch.isnan(b.forces[:, 1]).all() and not torch.isnan(b.forces[:, 0]).any()
