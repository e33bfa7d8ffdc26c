"""Synthetic ANI-1x-layout files (:mod:`mfgnn.data.synthetic`) read by the ANI loader, and
the bulk paths that large packs use (pair distances read in bulk, the chunked
self-energy fit, sampled rows) agreeing with the row-by-row ones. Small sizes only."""

from __future__ import annotations

import warnings

import h5py
import numpy as np
import pytest

from mfgnn.data import fit_self_energies, load_dataset
from mfgnn.data import self_energy as self_energy_module
from mfgnn.data.distances import pair_distance_stats
from mfgnn.data.pack import pack_dataset
from mfgnn.data.packed import PackedDataset
from mfgnn.data.splits import sample_rows
from mfgnn.data.synthetic import HIGH, LOW, synthetic_spec, write_synthetic_ani

HARTREE = 27.211386  # eV


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    folder = tmp_path_factory.mktemp("synthetic")
    path = folder / "ani.h5"
    info = write_synthetic_ani(path, 3000, seed=4, chunk_rows=100)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        ds = load_dataset(synthetic_spec(path))
    return path, info, ds


def test_layout_is_that_of_ani1x(synthetic):
    path, info, _ = synthetic
    with h5py.File(path, "r") as f:
        assert len(f) == info["groups"] >= 10
        for name, grp in f.items():
            n, n_atoms = grp["coordinates"].shape[:2]
            assert grp["atomic_numbers"].dtype == np.uint8
            assert grp["atomic_numbers"].shape == (n_atoms,)
            assert grp["coordinates"].dtype == grp[f"{LOW}.forces"].dtype == np.float32
            assert grp[f"{LOW}.forces"].shape == (n, n_atoms, 3)
            assert grp[f"{LOW}.energy"].dtype == grp[f"{HIGH}.energy"].dtype == np.float64
            assert grp[f"{LOW}.energy"].shape == grp[f"{HIGH}.energy"].shape == (n,)
            z = grp["atomic_numbers"][()]
            assert name.split("_")[0] == "".join(
                f"{s}{int((z == k).sum())}" for s, k in (("C", 6), ("H", 1), ("N", 7), ("O", 8)))
            assert ((z == 1).sum() + (z > 1).sum()) == n_atoms and (z > 1).sum() <= 20
    assert info["n"] == 3000 and 10 < info["mean_atoms"] < 20 and info["max_atoms"] <= 62


def test_the_loader_reads_it_in_ev_with_sparse_ccsdt(synthetic):
    _, info, ds = synthetic
    assert len(ds) == 3000 and ds.fidelities == (LOW, HIGH)
    assert ds.elements == (1, 6, 7, 8) and ds.has_forces == {LOW: True, HIGH: False}
    has_cc = np.isfinite(ds.energies[:, 1])
    assert np.isfinite(ds.energies[:, 0]).all() and ds.has_force_rows[:, 0].all()
    assert has_cc.sum() == info["cc_rows"] and 0.07 < has_cc.mean() < 0.13
    assert ds.n_atoms.sum() == info["atoms"]
    # hartree -> eV: about -1050 eV per carbon, -13.6 eV per hydrogen
    counts = ds.element_counts()
    per_atom = np.array([-0.5009, -37.8303, -54.5736, -75.0435]) * HARTREE
    np.testing.assert_allclose(ds.energies[:, 0], counts @ per_atom, atol=2.0)
    fit = fit_self_energies(ds)
    np.testing.assert_allclose(fit.values[0], per_atom, atol=0.05)
    assert fit.residual_rmse[LOW] < 0.5 and fit.n_rows[HIGH] == has_cc.sum()
    # forces = -kappa * displacement: RMS about 0.03 hartree/Å = 0.8 eV/Å
    assert 0.5 < ds.force_rms(np.arange(3000))[0] < 1.0


def test_no_pair_closer_than_0_9_angstrom(synthetic):
    _, _, ds = synthetic
    stats = pair_distance_stats(ds)
    assert stats.n_structures == 3000 and stats.min_distance > 0.9
    assert 1.0 < stats.quantile(0.01) < 1.2  # bonded X-H pairs near 1.09 Å


def test_same_seed_same_file_and_bounded_chunks(tmp_path):
    a, b = tmp_path / "a.h5", tmp_path / "b.h5"
    write_synthetic_ani(a, 500, seed=1, chunk_rows=64)
    write_synthetic_ani(b, 500, seed=1, chunk_rows=64)
    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        assert list(fa) == list(fb)
        for g in fa:
            np.testing.assert_array_equal(fa[g]["coordinates"][()], fb[g]["coordinates"][()])
    assert not list(tmp_path.glob(".*.tmp"))
    with pytest.raises(ValueError, match="n_conformers"):
        write_synthetic_ani(tmp_path / "c.h5", 0)


def test_bulk_paths_of_a_pack_equal_the_row_by_row_ones(synthetic, tmp_path, monkeypatch):
    path, _, ds = synthetic
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        pack_dataset(synthetic_spec(path), tmp_path / "pack", chunk_rows=700)
    packed = PackedDataset(tmp_path / "pack")
    rows = sample_rows(np.arange(3000), 1000, seed=2)
    assert len(rows) == 1000 and (np.diff(rows) > 0).all()
    np.testing.assert_array_equal(sample_rows(rows, 5000), rows)
    counts, z, pos = packed.geometries(rows[::-1])
    assert counts.sum() == len(z) == len(pos)
    np.testing.assert_array_equal(z[:counts[0]], ds.geometry(int(rows[-1]))[0])
    bulk = pair_distance_stats(packed, rows[::-1], cutoff=5.0)   # bulk reads
    one = pair_distance_stats(ds, rows[::-1], cutoff=5.0)        # row by row
    np.testing.assert_array_equal(bulk.rows, rows[::-1])
    np.testing.assert_array_equal(bulk.histogram, one.histogram)
    np.testing.assert_allclose(bulk.row_min, one.row_min, rtol=1e-6)
    assert bulk.pair_count == one.pair_count and bulk.min_row == one.min_row
    whole = fit_self_energies(packed, rows)
    monkeypatch.setattr(self_energy_module, "FIT_ROWS", 97)  # 11 chunks merged
    chunked = fit_self_energies(packed, rows)
    np.testing.assert_allclose(chunked.values, whole.values, rtol=1e-9, atol=1e-9)
    for f in ds.fidelities:
        assert chunked.residual_rmse[f] == pytest.approx(whole.residual_rmse[f], rel=1e-9)
        assert chunked.n_rows[f] == whole.n_rows[f] and chunked.rank[f] == whole.rank[f]
    np.testing.assert_allclose(packed.force_rms(rows), ds.force_rms(rows), rtol=1e-6)


def test_split_files_round_trip_through_the_large_file_reader(tmp_path, monkeypatch):
    import json

    from mfgnn.data import split_file
    from mfgnn.data.splits import Split, make_split

    split = make_split(200_000, 0.9, 0.05, seed=3)
    path = split.save(tmp_path / "split.json")
    as_json = json.loads(path.read_text())
    assert as_json["n"] == 200_000 and as_json["train"][:5] == split.train[:5].tolist()
    assert path.stat().st_size > split_file.LARGE_SPLIT_BYTES  # read by numpy
    back = Split.load(path)
    for name in ("train", "valid", "test"):
        np.testing.assert_array_equal(getattr(back, name), getattr(split, name))
    assert back.n == 200_000 and back.seed == 3
    monkeypatch.setattr(split_file, "LARGE_SPLIT_BYTES", 0)
    empty = Split(np.array([4, 1]), np.array([], dtype=np.int64), np.array([7]), n=None)
    back = Split.load(empty.save(tmp_path / "small.json"))
    assert back.train.tolist() == [4, 1]
    assert back.valid.size == 0 and back.test.tolist() == [7] and back.n is None
