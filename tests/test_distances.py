"""Pair-distance coverage statistics and the automatic sensitivity range."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch_geometric.data import Data

from mfgnn.data.distances import (
    auto_sensitivity_range, coverage_warning, iter_geometries, pair_distance_stats,
)


def _data(z, pos) -> Data:
    return Data(z=torch.as_tensor(z, dtype=torch.long), pos=torch.as_tensor(pos, dtype=torch.float32))


def _line(z, xs) -> Data:
    """Atoms on the x axis (exact pair distances |x_i − x_j|)."""
    pos = np.zeros((len(xs), 3))
    pos[:, 0] = xs
    return _data(z, pos)


@pytest.fixture()
def synthetic():
    # row 0: H2 at 0.74;  row 1: O-H 0.96, H...H 1.5, O...H 2.46;  row 2: O2 at 0.6;
    # row 3: H-O 1.0 and O-O 4.0 (3 atoms, long pair);  row 4: a single atom
    return [
        _line([1, 1], [0.0, 0.74]),
        _line([8, 1, 1], [0.0, 0.96, 2.46]),
        _line([8, 8], [0.0, 0.6]),
        _line([1, 8, 8], [0.0, 1.0, 5.0]),
        _line([6], [0.0]),
    ]


def test_exact_minima_and_pairs(synthetic):
    st = pair_distance_stats(synthetic, cutoff=3.0, threshold=0.8)
    assert st.n_structures == 5
    # pairs < 3 Å: 1 + 3 + 1 + 1 (H-O 1.0; O-O 4.0 and H-O 5.0 beyond)
    assert st.n_pairs == 6
    assert st.min_distance == pytest.approx(0.6, abs=1e-6)
    assert st.min_row == 2 and st.min_pair == (8, 8)
    assert st.fraction_rows_below == pytest.approx(2 / 5)  # rows 0 and 2
    assert st.pair_min[(1, 1)] == pytest.approx(0.74, abs=1e-6)
    assert st.pair_min[(1, 8)] == pytest.approx(0.96, abs=1e-6)
    assert st.pair_min[(8, 8)] == pytest.approx(0.6, abs=1e-6)
    assert st.pair_count == {(1, 1): 2, (1, 8): 3, (8, 8): 1}
    np.testing.assert_array_equal(st.rows, np.arange(5))
    np.testing.assert_allclose(st.row_min[:4], [0.74, 0.96, 0.6, 1.0], atol=1e-6)
    assert np.isinf(st.row_min[4])
    assert st.rows_below(0.8) == 2 and st.rows_below(0.5) == 0
    assert st.pairs_below(0.8) == 2 and st.pairs_below(1.2) == 4
    # median of {0.6, 0.74, 0.96, 1.0, 1.5, 2.46}: between 0.96 and 1.0, within one bin
    assert 0.95 <= st.quantiles[0.5] <= 1.01
    assert st.to_dict()["pair_min"]["8-8"] == pytest.approx(0.6, abs=1e-6)


def test_rows_subset_and_order(synthetic):
    st = pair_distance_stats(synthetic, rows=[3, 0], cutoff=6.0)
    np.testing.assert_array_equal(st.rows, [3, 0])
    np.testing.assert_allclose(st.row_min, [1.0, 0.74], atol=1e-6)
    assert st.n_pairs == 4 and st.min_row == 0
    assert (8, 8) in st.pair_min and st.pair_min[(8, 8)] == pytest.approx(4.0, abs=1e-6)


def test_iterable_and_tuples_and_padding():
    items = [(np.array([1, 1, 0]), np.array([[0, 0, 0], [0.9, 0, 0], [0, 0, 0]]))]
    st = pair_distance_stats(iter(items), cutoff=5.0)
    assert st.n_pairs == 1 and st.min_distance == pytest.approx(0.9)
    rows = [r for r, _, _ in iter_geometries(iter(items))]
    assert rows == [0]


def test_geometry_method_is_preferred():
    class Geo:
        def __len__(self):
            return 2

        def __getitem__(self, i):
            raise AssertionError("should use geometry()")

        def geometry(self, i):
            return np.array([1, 1]), np.array([[0, 0, 0], [0.7 + i, 0, 0]])

    st = pair_distance_stats(Geo(), cutoff=5.0)
    np.testing.assert_allclose(st.row_min, [0.7, 1.7])


def test_quantiles_of_a_known_distribution():
    rng = np.random.default_rng(0)
    d = rng.uniform(1.0, 3.0, size=20000)
    mols = [_line([1, 1], [0.0, x]) for x in d]
    st = pair_distance_stats(mols, cutoff=5.0)
    for q in (1e-3, 1e-2, 0.05, 0.5):
        assert st.quantiles[q] == pytest.approx(np.quantile(d, q), abs=2e-3)
    assert st.min_distance == pytest.approx(d.min(), abs=1e-6)  # float32 positions


def test_many_sizes_chunked():
    # enough molecules of two sizes to force several chunks
    rng = np.random.default_rng(1)
    mols, mins = [], []
    for k in range(3000):
        n = 2 + k % 2 * 10
        pos = rng.uniform(0, 4, size=(n, 3))
        mols.append(_data(np.full(n, 6), pos))
        p = pos.astype(np.float32).astype(np.float64)
        dm = np.linalg.norm(p[:, None] - p[None], axis=-1)
        mins.append(dm[np.triu_indices(n, 1)].min())
    st = pair_distance_stats(mols, cutoff=None)
    np.testing.assert_allclose(st.row_min, mins, rtol=1e-9)
    assert st.n_pairs == 1500 * 1 + 1500 * 66


def test_coverage_warning(synthetic):
    st = pair_distance_stats(synthetic, cutoff=3.0)
    assert coverage_warning(st, 0.5) is None
    msg = coverage_warning(st, 0.8)
    assert msg is not None
    assert "2 of 5 training structures" in msg and "40.00 %" in msg
    assert "2 of 6 pairs" in msg and "0.600 Å" in msg and "8-8" in msg and "row 2" in msg


def test_auto_sensitivity_range(synthetic):
    st = pair_distance_stats(synthetic, cutoff=3.0)
    lo, hi = auto_sensitivity_range(st, cutoff=3.0)
    assert lo == pytest.approx(0.54)  # floor(0.9 × 0.6, 0.01)
    assert lo < st.min_distance
    assert hi == pytest.approx(2.45)  # floor(q99 ≈ 2.46, 0.05) < 0.85·3
    assert coverage_warning(st, lo) is None
    # long cutoff with a bulk beyond 0.85·r_c: capped
    far = [_line([1, 1], [0.0, x]) for x in np.linspace(1.0, 6.0, 200)]
    lo2, hi2 = auto_sensitivity_range(pair_distance_stats(far, cutoff=6.5), cutoff=6.5)
    assert lo2 == pytest.approx(0.9) and hi2 == pytest.approx(5.5)
    with pytest.raises(ValueError):
        auto_sensitivity_range(st, cutoff=0.5)


def test_no_pairs():
    st = pair_distance_stats([_line([6], [0.0])], cutoff=5.0)
    assert st.n_pairs == 0 and np.isinf(st.min_distance) and st.min_row == -1
    assert coverage_warning(st, 0.8) is None
    assert auto_sensitivity_range(st, 5.0) == (0.75, 4.25)


def test_widerange_h2o2(shared_data):
    path = shared_data / "widerange" / "h2o2_hf_mp2.npz"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    with np.load(path) as f:
        R, Z = f["R"], f["Z"]
    mols = [_data(z, r) for z, r in zip(Z, R)]
    st = pair_distance_stats(mols, rows=np.arange(len(mols)), cutoff=5.0, threshold=0.8)
    assert st.n_structures == 2500 and st.n_pairs == 2500 * 6
    assert 0.59 < st.min_distance < 0.61
    assert st.fraction_rows_below == pytest.approx(0.19, abs=0.01)  # README: 19 % below 0.8 Å
    assert st.rows_below(0.7) / 2500 == pytest.approx(0.07, abs=0.01)  # README: 7 % below 0.7 Å
    assert st.pair_min[(8, 8)] > st.pair_min[(1, 8)]
    lo, hi = auto_sensitivity_range(st, cutoff=5.0)
    assert 0.5 <= lo < st.min_distance and 2.5 < hi <= 4.25
    msg = coverage_warning(st, 0.85)
    assert msg is not None and "closest is 0.60" in msg
