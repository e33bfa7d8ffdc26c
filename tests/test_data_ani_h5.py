"""ANI-layout HDF5 loader: the shared ANI-1x sample, lazy reading, bad input."""

from __future__ import annotations

import pickle
import shutil
import tracemalloc
import warnings

import h5py
import numpy as np
import pytest
import torch
from ase.units import Hartree

from mfgnn.data import load_dataset
from mfgnn.errors import DataError


def ani_spec(path, *levels, **extra) -> dict:
    return {"fidelities": {lv: {"path": str(path), "format": "ani-h5",
                                "energy_key": f"{lv}.energy", **extra} for lv in levels}}


@pytest.fixture
def sample(shared_data):
    return shared_data / "ani1x_sample" / "ani1_n5.hdf5"


def raw_rows(path, key):
    """Concatenate one dataset over the groups in file order."""
    with h5py.File(path, "r") as f:
        return [f[g][key][()] for g in f]


def test_sample_counts_units_and_missing_labels(sample):
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # real hartree data must not warn
        ds = load_dataset(ani_spec(sample, "wb97x_dz", "ccsd(t)_cbs"))
    assert len(ds) == 8
    assert ds.fidelities == ("wb97x_dz", "ccsd(t)_cbs")
    assert ds.has_forces == {"wb97x_dz": True, "ccsd(t)_cbs": False}
    assert np.isfinite(ds.energies).sum(axis=0).tolist() == [8, 6]
    assert ds.has_force_rows.sum(axis=0).tolist() == [8, 0]
    assert ds.elements == (1, 6, 7, 8)
    dft = np.concatenate(raw_rows(sample, "wb97x_dz.energy"))
    np.testing.assert_array_equal(ds.energies[:, 0], dft * Hartree)  # exact conversion
    forces = raw_rows(sample, "wb97x_dz.forces")[0]  # first group: rows 0 and 1
    coords = raw_rows(sample, "coordinates")[0]
    item = ds[1]
    assert item.z.tolist() == [6, 1, 1, 1, 1, 7, 7, 7, 7, 8, 8, 8, 8]
    np.testing.assert_array_equal(item.pos.numpy(), coords[1])
    np.testing.assert_allclose(item.forces[:, 0].numpy(), forces[1] * Hartree, rtol=1e-6)
    assert torch.isnan(item.forces[:, 1]).all()
    assert torch.isnan(ds[4].energy[0, 1]) and torch.isfinite(ds[4].energy[0, 0])
    assert ds.n_atoms.tolist() == [13, 13, 14, 14, 14, 14, 19, 19]


def test_wrong_unit_warns_naming_file_and_fidelity(sample):
    with pytest.warns(UserWarning, match=r"ani1_n5\.hdf5: fidelity 'wb97x_dz' with energy_unit "
                      r"'eV'.*per atom"):
        load_dataset(ani_spec(sample, "wb97x_dz", energy_unit="eV"))


def test_pickles_without_file_handle(sample):
    ds = load_dataset(ani_spec(sample, "wb97x_dz"), cutoff=5.0)
    first = ds[6]
    clone = pickle.loads(pickle.dumps(ds))
    again = clone[6]
    assert np.array_equal(first.pos.numpy(), again.pos.numpy())
    assert np.array_equal(first.edge_index.numpy(), again.edge_index.numpy())


def _write_ani(path, n_groups, rows_per_group, n_atoms=24, seed=0):
    rng = np.random.default_rng(seed)
    base = np.arange(n_atoms)[:, None] * np.array([1.3, 0.0, 0.0])
    z = np.resize(np.array([6, 1, 1, 8], dtype=np.uint8), n_atoms)
    with h5py.File(path, "w") as f:
        for g in range(n_groups):
            grp = f.create_group(f"mol{g}")
            c = base[None] + rng.normal(0, 0.05, (rows_per_group, n_atoms, 3))
            grp["coordinates"] = c.astype(np.float32)
            grp["atomic_numbers"] = z
            grp["dft.energy"] = -28.5 * n_atoms + rng.normal(0, 0.01, rows_per_group)
            grp["dft.forces"] = rng.normal(0, 0.01, (rows_per_group, n_atoms, 3)).astype(np.float32)
            cc = -28.6 * n_atoms + rng.normal(0, 0.01, rows_per_group)
            cc[::3] = np.nan
            grp["cc.energy"] = cc


def test_reads_lazily_with_bounded_memory(tmp_path):
    path = tmp_path / "big.h5"
    _write_ani(path, n_groups=4, rows_per_group=10_000)  # 40k conformers of 24 atoms
    array_bytes = 40_000 * 24 * 3 * 4 * 2  # float32 coordinates + forces: 23 MB
    tracemalloc.start()
    ds = load_dataset(ani_spec(path, "dft", "cc"))
    _, after_open = tracemalloc.get_traced_memory()
    rng = np.random.default_rng(0)
    for i in rng.integers(0, len(ds), 100):
        ds[int(i)]
    _, peak_100 = tracemalloc.get_traced_memory()
    for i in rng.integers(0, len(ds), 1000):
        ds[int(i)]
    _, peak_1100 = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(ds) == 40_000
    # per-row tables (energies, flags, counts) are held; coordinates and forces are not
    assert after_open < array_bytes / 4, after_open
    assert peak_1100 < array_bytes / 2, peak_1100
    assert peak_1100 < peak_100 + 2e6  # reading 10x more items: block cache is bounded
    assert ds.has_force_rows[:, 0].all()
    assert np.isfinite(ds.energies[:, 1]).sum() == 4 * 6_666
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(ds[10_001].pos.numpy(), f["mol1/coordinates"][1])


def test_per_row_species_layout(sample, tmp_path):
    """COMP6v2 layout: groups by atom count, per-row ``species``, ``energies``/``forces``."""
    out = tmp_path / "comp6.h5"
    with h5py.File(sample, "r") as f, h5py.File(out, "w") as g:
        by_size: dict[int, list] = {}
        for name in f:
            z = f[name]["atomic_numbers"][()]
            for r in range(f[name]["coordinates"].shape[0]):
                by_size.setdefault(len(z), []).append((z, f[name]["coordinates"][r],
                                                       f[name]["wb97x_dz.energy"][r],
                                                       f[name]["wb97x_dz.forces"][r]))
        for size, rows in by_size.items():
            grp = g.create_group(f"{size:03d}")
            grp["species"] = np.stack([r[0] for r in rows]).astype(np.int64)
            grp["coordinates"] = np.stack([r[1] for r in rows])
            grp["energies"] = np.array([r[2] for r in rows])
            grp["forces"] = np.stack([r[3] for r in rows])
    ds = load_dataset({"fidelities": {"dft": {
        "path": str(out), "format": "ani-h5",
        "keys": {"numbers": "species", "energy": "energies"}}}})
    ref = load_dataset(ani_spec(sample, "wb97x_dz"))
    assert len(ds) == 8 and ds.elements == ref.elements
    np.testing.assert_array_equal(np.sort(ds.energies[:, 0]), np.sort(ref.energies[:, 0]))
    assert ds.has_force_rows.all()
    np.testing.assert_array_equal(np.sort(ds.element_counts(), axis=0),
                                  np.sort(ref.element_counts(), axis=0))
    for i in (0, 7):
        z = ds[i].z.numpy()
        assert [int((z == e).sum()) for e in ds.elements] == ds.element_counts()[i].tolist()


def test_unknown_energy_key_lists_keys(sample):
    with pytest.raises(DataError, match=r"'b3lyp\.energy' .* keys of group .*wb97x_dz\.energy"):
        load_dataset(ani_spec(sample, "b3lyp"))


def test_truncated_empty_and_groupless_files(sample, tmp_path):
    data = sample.read_bytes()
    (tmp_path / "cut.h5").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"cut\.h5.*(truncated|corrupt)"):
        load_dataset(ani_spec(tmp_path / "cut.h5", "wb97x_dz"))
    (tmp_path / "empty.h5").write_bytes(b"")
    with pytest.raises(DataError, match="empty"):
        load_dataset(ani_spec(tmp_path / "empty.h5", "wb97x_dz"))
    with h5py.File(tmp_path / "none.h5", "w") as f:
        f.create_group("nothing")
    with pytest.raises(DataError, match="no group holds a 'coordinates' dataset"):
        load_dataset(ani_spec(tmp_path / "none.h5", "wb97x_dz"))


def test_bad_rows_are_reported_when_read(sample, tmp_path):
    path = tmp_path / "bad.h5"
    shutil.copy(sample, path)
    with h5py.File(path, "r+") as f:
        c = f["C1H6N2O5/coordinates"]
        block = c[()]
        block[2, 5, 1] = np.nan
        block[1, 3] = block[1, 0]
        c[...] = block
        e = f["C1H5N3O5/wb97x_dz.energy"]
        e[0] = np.inf
    with pytest.raises(DataError, match=r"group '/C1H5N3O5', row 0 .*energy is inf"):
        load_dataset(ani_spec(path, "wb97x_dz"))
    ds = load_dataset(ani_spec(path, "ccsd(t)_cbs"))
    with pytest.raises(DataError, match=r"group '/C1H6N2O5', row 2 \(dataset row 5\), atom 5: "
                       r"coordinate .*'coordinates'"):
        ds[5]
    with pytest.raises(DataError, match=r"row 1 \(dataset row 4\): atoms 0 and 3 are at the same"):
        ds[4]
    assert ds[3].z.shape == (14,)  # other rows stay readable


def test_read_index_of_a_small_file(tmp_path):
    """The index alone: groups at any depth, compositions, energies as stored, forces."""
    from mfgnn.data.ani_h5_index import N_Z, describe_row, energy_in_ev, read_index
    from mfgnn.data.spec import parse_spec

    path = tmp_path / "small.h5"
    with h5py.File(path, "w") as f:
        a = f.create_group("a")  # one composition, one padding column, forces
        a["coordinates"] = np.zeros((2, 4, 3))
        a["atomic_numbers"] = np.array([8, 1, 1, 0])
        a["dft.energy"] = np.array([-1.0, -2.0])
        a["dft.forces"] = np.zeros((2, 4, 3))
        c = f.create_group("b/c")  # per-row atomic numbers, both energies, no forces
        c["coordinates"] = np.zeros((3, 2, 3))
        c["atomic_numbers"] = np.array([[1, 1], [6, 0], [1, 1]])
        c["dft.energy"] = np.array([-3.0, -4.0, np.nan])
        c["cc.energy"] = np.array([-5.0, -6.0, -7.0])
    specs = list(parse_spec({"fidelities": {
        lv: {"path": str(path), "format": "ani-h5", "energy_key": f"{lv}.energy"}
        for lv in ("dft", "cc")}}).fidelities)
    with h5py.File(path, "r") as f:
        index = read_index(f, path, specs, "coordinates", "atomic_numbers")
    assert index.groups == ["/a", "/b/c"] and index.n == 5
    assert index.sizes.tolist() == [2, 3] and index.start.tolist() == [0, 2, 5]
    assert index.natoms.tolist() == [3, 0] and index.masks[0].tolist() == [True] * 3 + [False]
    assert index.masks[1] is None and index.counts[0, [1, 8]].tolist() == [2, 1]
    comps, inverse, natoms = index.rowcomp[1]
    assert comps.shape[1] == N_Z and natoms.tolist() == [2, 1, 2]
    assert inverse[0] == inverse[2] != inverse[1]
    np.testing.assert_array_equal(index.energy["dft"], [-1, -2, -3, -4, np.nan])
    assert np.isnan(index.energy["cc"][:2]).all() and index.missing == {"dft": 0, "cc": 1}
    assert index.group_forces["dft"].tolist() == [True, False]
    assert index.forces_keys == {"dft": "dft.forces", "cc": "cc.forces"}
    assert describe_row(index.groups, index.start, 3) == "group '/b/c', row 1 (dataset row 3)"
    e, note = energy_in_ev(path, index, specs[1])
    np.testing.assert_allclose(e[2:], np.array([-5.0, -6.0, -7.0]) * Hartree)
    assert "absent in 1 groups" in note and "hartree -> eV" in note
