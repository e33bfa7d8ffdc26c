"""Per-fidelity self-energy fits: recovery, labelled/training rows only, rank deficiency."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from mfgnn.data import SelfEnergies, fit_self_energies, load_dataset, make_split


@dataclass
class Table:
    """Minimal dataset stand-in: what fit_self_energies reads."""

    energies: np.ndarray
    counts: np.ndarray
    fidelities: tuple = ("low", "high")
    elements: tuple = (1, 6, 7, 8)

    def element_counts(self):
        return self.counts


TRUE = np.array([[-13.6, -1029.5, -1484.9, -2041.8],   # low level, eV per atom
                 [-13.7, -1030.1, -1485.5, -2042.6]])  # high level: its own references


def synthetic(n=200, seed=0):
    rng = np.random.default_rng(seed)
    counts = rng.integers(0, 8, size=(n, 4))
    counts[:, 0] += 1
    energies = counts @ TRUE.T + rng.normal(0, 1e-3, size=(n, 2))
    energies[::4, 1] = np.nan  # the high level labels only 3 rows in 4
    return Table(energies, counts)


def test_recovers_known_per_element_energies():
    t = synthetic()
    se = fit_self_energies(t)
    assert se.values.shape == (2, 4) and se.values.dtype == np.float64
    np.testing.assert_allclose(se.values, TRUE, atol=2e-4)
    assert se.n_rows == {"low": 200, "high": 150}
    assert se.rank == {"low": 4, "high": 4}
    assert all(0.5e-3 < se.residual_rmse[f] < 2e-3 for f in t.fidelities)  # the 1e-3 noise
    assert se.as_tensor().dtype == torch.float64 and se.as_tensor().shape == (2, 4)


def test_only_labelled_and_training_rows_count():
    t = synthetic()
    train = np.arange(0, 150)
    reference = fit_self_energies(t, train)
    garbage = Table(t.energies.copy(), t.counts.copy())
    garbage.energies[4, 0] = 1e9        # row 4 has no high-level label: low level garbage
    garbage.energies[4, 1] = np.nan
    garbage.energies[180, :] = -1e12     # not a training row
    garbage.counts[190] = [0, 50, 50, 50]  # not a training row either
    fitted = fit_self_energies(garbage, train)
    # high level: row 4 is NaN there, so its fit ignores row 4 entirely
    np.testing.assert_allclose(fitted.values[1], reference.values[1], rtol=0, atol=1e-9)
    # low level: row 4's garbage is a labelled training row, so it must change that fit
    assert not np.allclose(fitted.values[0], reference.values[0])
    garbage.energies[4, 0] = t.energies[4, 0]
    fitted = fit_self_energies(garbage, train)
    np.testing.assert_allclose(fitted.values, reference.values, rtol=0, atol=1e-9)


def test_grouped_fit_equals_plain_lstsq():
    t = synthetic(seed=3)
    ok = np.isfinite(t.energies[:, 1])
    plain = np.linalg.lstsq(t.counts[ok].astype(float), t.energies[ok, 1], rcond=None)[0]
    np.testing.assert_allclose(fit_self_energies(t).values[1], plain, rtol=1e-10)


def test_rank_one_h2co_gives_minimum_norm_with_exact_molecule_sum(shared_data):
    d = shared_data / "mp2_ccsdt"
    ds = load_dataset({"fidelities": {
        "mp2": {"path": str(d / "ch2o_mp2_avtz_3601.npz"), "energy_unit": "eV"},
        "f12": {"path": str(d / "ch2o_ccf12_avtz_3601.npz"), "energy_unit": "eV"}}})
    split = make_split(len(ds), 0.8, 0.1, seed=0)
    se = fit_self_energies(ds, split.train)
    assert se.rank == {"mp2": 1, "f12": 1}
    molecule = np.array([2, 1, 1])  # H2 C O
    for k in range(2):
        e_train = ds.energies[split.train, k]
        assert molecule @ se.values[k] == pytest.approx(e_train.mean(), abs=1e-9)
        # minimum norm: the solution is proportional to the composition vector
        np.testing.assert_allclose(se.values[k] / molecule, se.values[k, 1], rtol=1e-12)
        assert se.residual_rmse[ds.fidelities[k]] == pytest.approx(e_train.std(), rel=1e-9)
    assert not np.allclose(se.values[0], se.values[1])  # levels never share references


def test_ani_sample_levels_fitted_separately(shared_data):
    path = str(shared_data / "ani1x_sample" / "ani1_n5.hdf5")
    ds = load_dataset({"fidelities": {
        "dft": {"path": path, "energy_key": "wb97x_dz.energy"},
        "cc": {"path": path, "energy_key": "ccsd(t)_cbs.energy"}}})
    se = fit_self_energies(ds)
    assert se.n_rows == {"dft": 8, "cc": 6}
    assert se.elements == (1, 6, 7, 8)
    predicted = se.energy(ds.element_counts())
    resid = ds.energies - predicted
    assert np.sqrt(np.nanmean(resid[:, 1] ** 2)) == pytest.approx(se.residual_rmse["cc"])


def test_round_trip_and_unlabelled_fidelity():
    t = synthetic(n=20)
    t.energies[:, 1] = np.nan
    with pytest.warns(UserWarning, match="'high': no row with an energy"):
        se = fit_self_energies(t)
    assert (se.values[1] == 0).all() and np.isnan(se.residual_rmse["high"])
    back = SelfEnergies.from_dict(json.loads(json.dumps(se.to_dict())))
    np.testing.assert_array_equal(back.values, se.values)
    assert np.isnan(back.residual_rmse["high"]) and back.fidelities == se.fidelities
