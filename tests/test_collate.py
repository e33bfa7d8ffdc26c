"""Batches made by index arithmetic (:class:`StructureStore`) and from a pack's memory maps
(:class:`MappedStructureStore`) equal PyG's collation of the selected ``Data`` items: the
same fields, dtypes and values, and bit-identical model outputs, losses and gradients.

Data: the shared H2CO MP2/F12 set (in memory and packed), a small two-dataset ANI-layout
file (lazy HDF5 frames, missing levels and forces), and an extxyz file with a single-atom
structure, a structure without edges and one of 150 atoms (cell-list graph).
"""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest
import torch
import yaml
from torch_geometric.data import Batch
from torch_geometric.loader import DataLoader

from mfgnn.data import load_dataset, pack_dataset
from mfgnn.data.collate import StructureStore, loader_order
from mfgnn.data.collate_mapped import MappedStructureStore
from mfgnn.data.packed import PackedDataset
from mfgnn.data.transforms import RadiusGraph
from mfgnn.loss import MultiFidelityLoss
from mfgnn.nn import MultiFidelityHIPNN
from mfgnn.presets import SMALL_MODEL
from mfgnn.training.batches import SelectColumns

STORES = (StructureStore, MappedStructureStore)
#: (columns, kinds) of the model: identity; reordered with a missing level and kinds
SELECTIONS = [([0, 1], None),
              ([1, None, 0], [{"energy"}, {"energy", "forces"}, {"forces"}])]


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():  # synthetic energies: the unit plausibility warning
        warnings.simplefilter("ignore", UserWarning)
        yield


@pytest.fixture(scope="module")
def h2co(shared_data, tmp_path_factory):
    """(in-memory dataset, pack) of H2CO at MP2 and F12, graphs at 3 Å (partial graphs)."""
    folder = shared_data / "mp2_ccsdt"
    spec = {"fidelities": {
        "mp2": {"path": str(folder / "ch2o_mp2_avtz_3601.npz"), "energy_unit": "eV"},
        "f12": {"path": str(folder / "ch2o_ccf12_avtz_3601.npz"), "energy_unit": "eV"}}}
    out = tmp_path_factory.mktemp("h2co") / "pack"
    pack_dataset(spec, out, chunk_rows=1000)
    return load_dataset(spec, cutoff=3.0), PackedDataset(out, cutoff=3.0)


def reference(dataset, rows, columns, kinds, positions) -> Batch:
    """What the training loop got before: PyG collation of the selected items."""
    select = SelectColumns(columns, kinds)
    return Batch.from_data_list([select(dataset[int(rows[p])]) for p in positions])


def assert_same_batch(a: Batch, b: Batch) -> None:
    """Same class, keys, dtypes, shapes, values (NaN where NaN) and PyG tables."""
    assert type(a) is type(b) and sorted(a.keys()) == sorted(b.keys())
    for key in b.keys():
        x, y = getattr(a, key), getattr(b, key)
        assert x.dtype == y.dtype and x.shape == y.shape, key
        np.testing.assert_array_equal(x.numpy(), y.numpy(), err_msg=key)
    assert a.num_graphs == b.num_graphs and a.num_nodes == b.num_nodes
    for table in ("_slice_dict", "_inc_dict"):
        ta, tb = getattr(a, table), getattr(b, table)
        assert sorted(ta) == sorted(tb), table
        for key in tb:
            assert torch.equal(ta[key], tb[key]), (table, key)


@pytest.mark.parametrize("columns,kinds", SELECTIONS)
@pytest.mark.parametrize("which", ["memory", "pack"])
def test_batches_equal_pyg_collation(h2co, which, columns, kinds):
    dataset = h2co[0] if which == "memory" else h2co[1]
    rows = np.random.default_rng(0).permutation(len(dataset))[:500]
    for cls in STORES if which == "pack" else STORES[:1]:
        store = cls(dataset, rows, columns, kinds)
        assert len(store) == 500 and store.cutoff == 3.0
        for positions in ([0], [5, 3, 499, 3], np.arange(100, 164), torch.tensor([7, 1])):
            batch = store.batch(positions)
            assert_same_batch(batch, reference(dataset, rows, columns, kinds, positions))
        assert batch.energy.shape == (2, len(columns)) and batch.idx.tolist() == [rows[7], rows[1]]
        if kinds is not None:  # column 0 keeps energies only, column 2 forces only
            assert batch.forces[:, 0].isnan().all() and batch.energy[:, 2].isnan().all()
            assert batch.energy[:, 1].isnan().all() and batch.forces[:, 1].isnan().all()
            np.testing.assert_array_equal(batch.energy[:, 0].numpy(),
                                          dataset.energies[[rows[7], rows[1]], 1])


def test_model_outputs_loss_and_gradients_are_bit_identical(h2co, one_thread):
    """The model's energies and forces, the training loss and its gradients on CPU."""
    dataset, packed = h2co
    torch.manual_seed(0)
    model = MultiFidelityHIPNN({**SMALL_MODEL, "n_features": 16, "soft_min": 0.75, "soft_max": 2.8,
                                "cutoff": 3.0}, ["mp2", "f12"], dataset.elements)
    loss_fn = MultiFidelityLoss(["mp2", "f12"], {"mp2": ["energy", "forces"], "f12": ["energy"]})
    rows = np.arange(0, 3601, 5)
    positions = np.random.default_rng(1).permutation(len(rows))[:32]

    def run(batch):
        model.zero_grad(set_to_none=True)
        out = model(batch, forces=loss_fn.needs_forces(batch), training=True)
        loss = loss_fn(out, batch, model.hierarchicality(out)).total
        loss.backward()
        grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
        return out, loss.detach(), grads

    ref_out, ref_loss, ref_grads = run(reference(dataset, rows, [0, 1], None, positions))
    assert torch.isfinite(ref_loss) and ref_out["forces"][:, 0].isfinite().all()
    for batch in (StructureStore(dataset, rows, [0, 1]).batch(positions),
                  StructureStore(packed, rows, [0, 1]).batch(positions),
                  MappedStructureStore(packed, rows, [0, 1]).batch(positions)):
        out, loss, grads = run(batch)
        assert torch.equal(out["energy"], ref_out["energy"])
        assert torch.equal(out["forces"][:, 0], ref_out["forces"][:, 0])
        assert torch.equal(loss, ref_loss) and len(grads) == len(ref_grads)
        assert all(torch.equal(g, h) for g, h in zip(grads, ref_grads))


def test_empty_label_columns_and_subsets(h2co):
    dataset, packed = h2co
    sub = dataset.subset(np.arange(3600, 0, -3))  # items keep the dataset's rows as idx
    rows = [4, 0, 29]
    for source in (sub, packed.subset(np.arange(10, 40))):
        for cls in STORES if source.dataset is packed else STORES[:1]:
            store = cls(source, rows, [None, 1], [set(), set()])
            batch = store.batch([2, 0, 1])
            assert_same_batch(batch, reference(source, rows, [None, 1], [set(), set()], [2, 0, 1]))
            assert batch.energy.isnan().all() and batch.forces.isnan().all()
            assert batch.energy.shape == (3, 2) and batch.forces.shape == (12, 2, 3)
    assert StructureStore(sub, rows, [0]).batch([0, 1]).idx.tolist() == [3600 - 12, 3600]


@pytest.fixture(scope="module")
def odd_structures(tmp_path_factory):
    """An extxyz of 6 structures (one atom; two atoms 5 Å apart; water; 150 atoms on a
    jittered grid; CH2O twice) at ``lo`` (E+F) and ``hi`` (E only, missing in row 2);
    returns (dataset, pack), graphs at 3 Å."""
    import ase.io
    from ase import Atoms

    folder = tmp_path_factory.mktemp("odd")
    rng = np.random.default_rng(3)
    grid = np.stack(np.meshgrid(*[np.arange(6)] * 3, indexing="ij"), -1).reshape(-1, 3)[:150]
    geometries = [([1], [[0.0, 0.0, 0.0]]), ([1, 1], [[0, 0, 0], [5.0, 0, 0]]),
                  ([8, 1, 1], [[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]]),
                  (np.resize([6, 1, 8], 150), grid * 1.6 + rng.normal(0, 0.1, (150, 3))),
                  ([6, 8, 1, 1], [[0, 0, 0], [1.2, 0, 0], [-0.5, 0.9, 0], [-0.5, -0.9, 0]]),
                  ([6, 8, 1, 1], [[0, 0, 0], [1.21, 0, 0], [-0.6, 0.9, 0], [-0.5, -0.9, 0.1]])]
    frames = []
    for r, (z, pos) in enumerate(geometries):
        a = Atoms(numbers=z, positions=pos)
        a.info["energy"] = -10.0 * len(a) + rng.normal()
        a.arrays["forces"] = rng.normal(0, 0.3, (len(a), 3))
        if r != 2:
            a.info["hi_energy"] = -11.0 * len(a) + rng.normal()
        frames.append(a)
    ase.io.write(folder / "odd.extxyz", frames, format="extxyz")
    spec = {"fidelities": {"lo": {"path": str(folder / "odd.extxyz")},
                           "hi": {"path": str(folder / "odd.extxyz"),
                                  "keys": {"energy": "hi_energy", "forces": None}}}}
    pack_dataset(spec, folder / "pack", chunk_rows=4)
    return load_dataset(spec, cutoff=3.0), PackedDataset(folder / "pack", cutoff=3.0)


def test_single_atoms_no_edges_and_large_structures(odd_structures):
    dataset, packed = odd_structures
    rows = np.arange(6)
    for source, classes in ((dataset, STORES[:1]), (packed, STORES)):
        for cls in classes:
            store = cls(source, rows, [1, 0])
            for positions in ([0], [1], [0, 1], [5, 0, 3, 1, 2], [3, 3]):
                assert_same_batch(store.batch(positions),
                                  reference(source, rows, [1, 0], None, positions))
            batch = store.batch([0, 1, 2])
            assert batch.edge_index.shape == (2, 6) and batch.edge_index.min() == 3  # water only
            assert batch.energy[2, 0].isnan() and batch.forces[:, 0].isnan().all()
    counts = StructureStore(dataset, rows, [0]).edge_ptr.diff().tolist()
    assert counts[:3] == [0, 0, 6] and counts[4] == 12 and counts[3] > 150 * 6


def test_lazy_hdf5_frames_and_two_datasets(tmp_path, shared_data):
    """Row-by-row frames (ANI HDF5) with missing levels and forces, plus an in-memory
    dataset: both blocks of one dataset in one store, equal to the PyG path."""
    from test_pack import ani_spec, write_ani

    write_ani(tmp_path / "small.h5", groups=6, rows=20)
    ani = yaml.safe_load(ani_spec(tmp_path / "small.h5", tmp_path).read_text())
    folder = shared_data / "mp2_ccsdt"
    h2co = {"mp2": {"path": str(folder / "ch2o_mp2_avtz_3601.npz"), "energy_unit": "eV"},
            "f12": {"path": str(folder / "ch2o_ccf12_avtz_3601.npz"), "energy_unit": "eV"}}
    spec = {"datasets": {"ani": ani, "h2co": {"fidelities": h2co}},
            "order": ["mp2", "dft", "tz", "f12", "cc"]}
    dataset = load_dataset(spec, cutoff=3.0)
    pack_dataset(spec, tmp_path / "pack", chunk_rows=50)
    packed = PackedDataset(tmp_path / "pack", cutoff=3.0)
    rows = np.array([3700, 0, 45, 119, 30, 121, 200, 1000, 45])
    columns, kinds = [2, 1, None, 4, 0], [{"forces"}, {"energy", "forces"}, {"energy"},
                                           {"energy"}, {"energy", "forces"}]
    for source, classes in ((dataset, STORES[:1]), (packed, STORES)):
        for cls in classes:
            store = cls(source, rows, columns, kinds)
            batch = store.batch(np.arange(len(rows)))
            assert_same_batch(batch, reference(source, rows, columns, kinds, range(len(rows))))
            assert batch.dataset.tolist() == [1, 0, 0, 0, 0, 1, 1, 1, 0]  # ANI rows < 120
            has_tz = dataset.has_force_rows[rows, 2]  # groups 1 and 2 have no tz forces
            assert has_tz.tolist() == [False, True, False, True, False, False, False, False, False]
            for k, labelled in enumerate(has_tz):
                tz = batch.forces[batch.ptr[k]:batch.ptr[k + 1], 0]
                assert bool(tz.isfinite().all()) == labelled and bool(tz.isnan().all()) != labelled
            assert batch.energy[:, 0].isnan().all()  # model column 0 keeps forces only
            np.testing.assert_array_equal(batch.energy[:, 3].numpy(), dataset.energies[rows, 4])


def test_loader_order_and_workers_give_the_same_batches(h2co):
    dataset, packed = h2co
    rows = np.arange(1000, 1300)
    g = torch.Generator().manual_seed(5)
    order = loader_order(len(rows), 64, shuffle=True, generator=g)
    pyg = DataLoader([dataset[int(r)] for r in rows], batch_size=64, shuffle=True,
                     generator=torch.Generator().manual_seed(5))
    assert [len(p) for p in order] == [64, 64, 64, 64, 44]
    assert [b.idx.tolist() for b in pyg] == [rows[p].tolist() for p in order]
    assert torch.equal(torch.cat(loader_order(300, 64)), torch.arange(300))
    for store in (StructureStore(dataset, rows, [1]), MappedStructureStore(packed, rows, [1])):
        in_process = list(store.loader(order))
        assert len(in_process) == 5
        workers = list(store.loader(order, num_workers=2))
        for a, b, p in zip(workers, in_process, order):
            assert_same_batch(a, b)
            assert a.idx.tolist() == rows[p].tolist()


def test_mapped_store_holds_no_atom_arrays(h2co):
    """Per-row tables only: no array with ΣN rows after a batch (besides the memory
    maps) and none at all once pickled; the pickle is far smaller than the pack."""
    _, packed = h2co
    n_atoms = int(packed.n_atoms.sum())
    store = MappedStructureStore(packed, np.arange(len(packed)), [0, 1])

    def atom_sized(obj, allow_maps):
        found = []
        for name, value in vars(obj).items():
            values = value.values() if isinstance(value, dict) else [value]
            for v in values:
                if isinstance(v, (np.ndarray, torch.Tensor)) and v.ndim and len(v) >= n_atoms:
                    if not (allow_maps and isinstance(v, np.memmap)):
                        found.append(name)
        return found

    assert atom_sized(store, False) == []
    batch = store.batch(np.arange(0, 3601, 7))
    assert batch.num_graphs == 515 and batch.pos.shape == (4 * 515, 3)
    assert atom_sized(store, True) == []
    blob = pickle.dumps(store)
    clone = pickle.loads(blob)
    assert clone._arrays is None and atom_sized(clone, False) == []
    # 16 bytes per row (pack row, atom count) and the pack's meta.json; forces.npy: 96 per row
    assert len(blob) < 3601 * 16 + 8192 < (packed.path / "forces.npy").stat().st_size / 5
    assert_same_batch(clone.batch([3, 4]), store.batch([3, 4]))


def test_store_memory_device_and_errors(h2co, odd_structures):
    dataset, packed = h2co
    store = StructureStore(dataset, np.arange(100), [0, 1])
    # 400 atoms: z 8 + pos 12 + forces 24 bytes; 100 rows: energy 16 + idx 8 + dataset 8
    # bytes; atom_ptr and edge_ptr 101 x 8 bytes; edges 2 x int32 each
    n_edges = store.edges.shape[1]
    assert store.nbytes == 400 * 44 + 100 * 32 + 2 * 101 * 8 + n_edges * 8
    assert store.to("cpu") is store and store.device == torch.device("cpu")
    with pytest.raises(IndexError):
        store.batch([100])
    with pytest.raises(ValueError):
        store.batch([])
    with pytest.raises(TypeError):
        MappedStructureStore(dataset, [0], [0])
    odd, _ = odd_structures
    odd.graph = lambda data: data  # a graph step that is not a RadiusGraph
    try:
        with pytest.raises(TypeError):
            StructureStore(odd, [0], [0])
        plain = StructureStore(odd, [0, 4], [0], cutoff=None)
        assert "edge_index" not in plain.batch([0, 1])
    finally:
        odd.graph = RadiusGraph(3.0)
    assert StructureStore(dataset, [4, 5], [0], cutoff=1.5).batch([0, 1]).edge_index.shape[1] > 0


def test_mapped_store_reopens_its_maps_every_few_batches(h2co):
    """The pages batches read do not stay mapped for the whole run: the maps are dropped
    after REMAP_BATCHES batches (and reopened by the next one)."""
    from mfgnn.data.collate_mapped import REMAP_BATCHES

    _, packed = h2co
    store = MappedStructureStore(packed, np.arange(len(packed)), [0, 1])
    for k in range(REMAP_BATCHES - 1):
        store.batch([k])
        assert store._arrays is not None
    store.batch([0])
    assert store._arrays is None
    assert store.batch([5]).num_graphs == 1 and store._arrays is not None
