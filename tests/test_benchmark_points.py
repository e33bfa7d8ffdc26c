"""The settings the default-choosing benchmarks train: a point name must change exactly the
knobs it names, on top of the current presets."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from mfgnn.presets import (  # noqa: E402
    EXPERIMENT_ENERGY_ONLY_TRAIN, EXPERIMENT_TRAIN, SMALL_MODEL)


def test_point_names_set_the_knobs_they_name_and_nothing_else():
    from choose_defaults import point_config
    base = point_config("base")
    assert base["model"] == SMALL_MODEL and base["train"] == EXPERIMENT_TRAIN
    assert base["energy_only"] == EXPERIMENT_ENERGY_ONLY_TRAIN
    assert point_config("lr1e-3")["energy_only"] == {}  # the knob is every run's
    previous = point_config("sc1+lr2e-3+ew4")
    assert previous["model"]["scale_targets"] is True
    assert previous["train"]["lr"] == pytest.approx(2e-3)
    assert previous["loss"]["energy_weight"] == 4.0
    assert point_config("sc0")["model"]["scale_targets"] is False
    assert point_config("rf0")["train"] == {**EXPERIMENT_TRAIN, "refit_energy_heads": False}
    high_weight = point_config("eh4+lr2e-3", "f12")
    assert high_weight["loss"]["energy_weight"] == {"f12": 4.0}
    assert high_weight["model"] == SMALL_MODEL
    both = point_config("eh4+el0.5", "f12", "mp2")["loss"]["energy_weight"]
    assert both == {"f12": 4.0, "mp2": 0.5}
    assert point_config("nf96")["model"] == {**SMALL_MODEL, "n_features": 96}
    for key in SMALL_MODEL:
        if key != "scale_targets":
            assert previous["model"][key] == SMALL_MODEL[key]
    assert point_config("base")["train"]["lr"] == EXPERIMENT_TRAIN["lr"]  # not mutated


def test_unknown_point_part_is_named():
    from choose_defaults import point_config
    with pytest.raises(SystemExit, match="xy3"):
        point_config("sc1+xy3")


def test_hard_data_recipes_toggle_one_part():
    from hard_data import recipe
    assert recipe("new")["model"] == SMALL_MODEL
    assert recipe("new+scale")["model"] == {**SMALL_MODEL, "scale_targets": True}
    assert recipe("new-no-zbl")["model"] == {**SMALL_MODEL, "zbl": False}
    assert recipe("old")["model"]["scale_targets"] is False
    assert recipe("old")["train"]["refit_energy_heads"] is False
    assert recipe("new-no-refit")["train"] == {**EXPERIMENT_TRAIN, "refit_energy_heads": False}
    with pytest.raises(SystemExit, match="new-no-scale"):
        recipe("new-no-scale")


def test_lfhe_limits_splits_the_high_level_error_into_low_and_correction():
    """e_high = e_low + e_corr: a model exact at the low level whose correction is zero
    has e_corr = the raw gap; one exact at both levels has no error; the three RMS values
    obey |e_high| ≤ |e_low| + |e_corr|."""
    import numpy as np
    from lfhe_limits import error_parts
    rng = np.random.default_rng(0)
    f_low, f_high = rng.normal(size=(50, 3)), rng.normal(size=(50, 3))
    gap = 1000 * np.sqrt(np.mean((f_high - f_low) ** 2))
    no_correction = error_parts(f_low, f_low, f_low, f_high)
    assert no_correction["low"] == 0 and no_correction["corr"] == pytest.approx(gap)
    assert error_parts(f_low, f_high, f_low, f_high) == {"low": 0, "corr": 0, "high": 0}
    noisy = error_parts(f_low + 0.1 * rng.normal(size=f_low.shape),
                        f_high + 0.2 * rng.normal(size=f_low.shape), f_low, f_high)
    assert noisy["high"] <= noisy["low"] + noisy["corr"]
    assert noisy["low"] == pytest.approx(100, rel=0.25)
    assert noisy["high"] == pytest.approx(200, rel=0.25)
    # NaN labels (a level without forces on some atoms) are left out, not propagated
    f_nan = f_high.copy()
    f_nan[0] = np.nan
    assert np.isfinite(error_parts(f_low, f_high, f_low, f_nan)["corr"])


def test_budget_table_row_holds_the_four_ratios_of_each_metric():
    """``lfhe_budget.py --markdown``: MF / SF-E, MF / oracle, MF / gap and oracle / gap,
    each as RMSE / MAE / P99, under a header with as many columns."""
    from lfhe_budget import MARKDOWN_HEADER, ratio_row
    from lfhe_targets import experiments_of

    def errors(rmse, mae, p99):
        return {"high": {"forces_rmse": {"mean": rmse}, "forces_mae": {"mean": mae},
                         "forces_p99": {"mean": p99}}}

    sf_e, oracle, mf = experiments_of("benzene")
    results = {"experiments": {sf_e: errors(400.0, 200.0, 1000.0),
                               oracle: errors(50.0, 20.0, 100.0),
                               mf: errors(100.0, 30.0, 150.0)},
               "baseline": {"forces_gap_rmse": 200.0, "forces_gap_mae": 60.0,
                            "forces_gap_p99": 120.0}}
    row = ratio_row("benzene", 360.0, results)
    assert row == ("| benzene | 360 s | 0.25 / 0.15 / 0.15 | 2.00 / 1.50 / 1.50 | "
                   "0.50 / 0.50 / 1.25 | 0.25 / 0.33 / 0.83 |")
    assert row.count("|") == MARKDOWN_HEADER.splitlines()[0].count("|")


def test_widerange_tail_adds_rows_to_the_training_split_only():
    from widerange_tail import reference_internals, tail_split, training_bins
    from mfgnn.data import make_split
    base = make_split(2500, 1000, 200, 1000, seed=0)
    split = tail_split(2500, 300)
    assert len(split.train) == 1300 and set(split.train[1000:]) == set(range(2500, 2800))
    assert (split.valid == base.valid).all() and (split.test == base.test).all()
    # energies above the test rows' minimum: 0.5 and 3 (shared), 7 and 40 eV (tail)
    shared = np.array([1.0, 1.5, 4.0, 9.0])
    counts = training_bins(np.array([8.0, 41.0]), shared, np.array([1, 2, 4, 5]),
                           np.array([0, 3]))
    assert counts == [1, 1, 1, 1]
    text = ("Reference geometry: optimised at HF/cc-pvdz with geomeTRIC 1.1.1: O-O 1.3927 A, "
            "O-H 0.9482/0.9482 A, OOH 102.34/102.34 deg, HOOH 115.41 deg.")
    assert reference_internals(text) == dict(r_oo=1.3927, r_oh1=0.9482, r_oh2=0.9482,
                                             a1=102.34, a2=102.34, phi=115.41)
    with pytest.raises(SystemExit, match="provenance"):
        reference_internals("no geometry here")


def test_widerange_tail_draws_each_row_independently_of_how_many(shared_data, monkeypatch):
    monkeypatch.setenv("MFGNN_SHARED_DATA", str(shared_data))
    import widerange_tail
    gen = widerange_tail.generator()
    provenance = str(np.load(shared_data / "widerange" / "h2o2_hf_mp2.npz")["provenance"])
    internals = widerange_tail.reference_internals(provenance)
    few, few_sigma = widerange_tail.sample(gen, 3, internals)
    more, more_sigma = widerange_tail.sample(gen, 8, internals)
    assert np.array_equal(few, more[:3]) and np.array_equal(few_sigma, more_sigma[:3])
    assert ((more_sigma >= 0.20) & (more_sigma <= 0.25)).all()
    pairs = np.linalg.norm(more[:, :, None] - more[:, None, :], axis=-1)[:, [0, 0, 0, 1, 1, 2],
                                                                        [1, 2, 3, 2, 3, 3]]
    assert pairs.min() >= 0.6 and not np.allclose(more[0], more[1])
