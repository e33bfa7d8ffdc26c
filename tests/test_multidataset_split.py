"""Splits of several datasets (stratified, per-dataset sizes, saved and read back), and a
tiny training run on a multi-dataset spec evaluated per dataset."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from mfgnn.cli import main
from mfgnn.config import config_from_dict
from mfgnn.data import Split, SplitConfig, load_dataset, make_dataset_split, make_split
from mfgnn.data.splits import apportion
from mfgnn.errors import ConfigError, DataError
from mfgnn.training.build import train
from mfgnn.training.evaluation import evaluate_run
from mfgnn.training.setup import build_split

from test_multidataset import ROWS, multi_spec, write_small_files

NAMES = ("h2co", "hcooh", "ch3oh")
TINY_MODEL = {"n_features": 8, "n_interactions": 1, "n_atom_layers": 1,
              "n_sensitivities": 6, "tensor_order": 0}


def index_of(sizes) -> np.ndarray:
    return np.repeat(np.arange(len(sizes)), sizes)


def check_partition(split: Split, n: int) -> None:
    rows = np.concatenate([split.train, split.valid, split.test])
    assert len(rows) == len(np.unique(rows)) == n


@pytest.fixture(scope="module")
def files(shared_data, tmp_path_factory):
    return write_small_files(tmp_path_factory.mktemp("small"), shared_data)


@pytest.mark.parametrize("train, valid, test", [(300, 100, None), (0.7, 0.15, 0.15),
                                                (200, 50, 60), (0.5, 0.2, None)])
def test_stratified_shares_are_proportional(train, valid, test):
    sizes = np.array([1000, 500, 37])
    index = index_of(sizes)
    split = make_dataset_split(index, NAMES, train, valid, test, seed=4, stratify="dataset")
    plain = make_split(len(index), train, valid, test, seed=4)
    assert split.sizes() == plain.sizes()  # the same totals as an unstratified split
    for name in ("train", "valid") + (("test",) if test is not None else ()):
        got = np.bincount(index[getattr(split, name)], minlength=3)
        expected = len(getattr(split, name)) * sizes / sizes.sum()
        assert np.all(np.abs(got - expected) < 1 + 1e-9), (name, got, expected)
    if test is None or isinstance(test, float):
        check_partition(split, len(index))
    again = make_dataset_split(index, NAMES, train, valid, test, seed=4, stratify="dataset")
    assert np.array_equal(again.train, split.train) and (split.n, split.seed) == (1537, 4)


@settings(max_examples=40, deadline=None)
@given(sizes=st.lists(st.integers(0, 60), min_size=1, max_size=5),
       a=st.integers(0, 100), b=st.integers(0, 100), seed=st.integers(0, 9))
def test_stratified_counts_stay_within_one_row(sizes, a, b, seed):
    index = index_of(sizes)
    n = len(index)
    train, valid = min(a, n), min(b, max(n - min(a, n), 0))
    split = make_dataset_split(index, [f"d{k}" for k in range(len(sizes))], train, valid,
                               seed=seed, stratify="dataset")
    check_partition(split, n)
    for name, total in (("train", train), ("valid", valid)):
        got = np.bincount(index[getattr(split, name)], minlength=len(sizes))
        assert got.sum() == total
        assert np.all(np.abs(got - total * np.array(sizes) / max(n, 1)) < 1 + 1e-9)


def test_apportion_respects_caps():
    assert apportion(3, [1, 2], caps=[1, 2]).tolist() == [1, 2]
    assert apportion(1, [1, 2], caps=[0, 2]).tolist() == [0, 1]
    assert apportion(5, [3, 3, 3]).tolist() == [2, 2, 1]  # ties: earlier first
    with pytest.raises(DataError):
        apportion(4, [1, 2])


def test_per_dataset_sizes_are_exact():
    index = index_of([100, 50, 20])
    split = make_dataset_split(index, NAMES, {"h2co": 30, "hcooh": 10}, {"h2co": 5, "hcooh": 0.2},
                               None, seed=2)
    assert split.by_dataset(index, NAMES) == {
        "h2co": {"train": 30, "valid": 5, "test": 65},
        "hcooh": {"train": 10, "valid": 10, "test": 30},
        "ch3oh": {"train": 0, "valid": 0, "test": 20}}   # missing from the mappings
    check_partition(split, 170)
    split = make_dataset_split(index, NAMES, {"h2co": 30}, {"hcooh": 5}, {"ch3oh": 7}, seed=2)
    assert split.by_dataset(index, NAMES) == {
        "h2co": {"train": 30, "valid": 0, "test": 0}, "hcooh": {"train": 0, "valid": 5, "test": 0},
        "ch3oh": {"train": 0, "valid": 0, "test": 7}}
    assert (index[split.train] == 0).all() and (index[split.test] == 2).all()


@pytest.mark.parametrize("args, error, message", [
    (({"h2co": 10, "hcoh": 5}, {"h2co": 1}), ConfigError,
     r"unknown dataset 'hcoh'; did you mean 'hcooh'"),
    (({"h2co": 90}, {"h2co": 20}), DataError, r"dataset 'h2co' exceed its 100 rows"),
    (({"h2co": 10}, 5), ConfigError, "must all be mappings"),
    (({"ch3oh": 0.01}, {"h2co": 1}), DataError, "split 'train' would be empty"),
    ((160, 20), DataError, "exceed the 170 rows"),
])
def test_split_errors(args, error, message):
    stratify = None if isinstance(args[0], dict) else "dataset"
    with pytest.raises(error, match=message):
        make_dataset_split(index_of([100, 50, 20]), NAMES, *args, stratify=stratify)


@pytest.mark.parametrize("values, message", [
    ({"stratify": "datasets"}, r"unknown stratify mode 'datasets'; did you mean 'dataset'"),
    ({"train": {"h2co": -1}}, r"split.train.h2co must be >= 0"),
    ({"train": {"h2co": 1.5}}, r"split.train.h2co: a fraction must be at most 1"),
    ({"train": {}}, "must name at least one dataset"),
    ({"train": {"h2co": 10}, "valid": 0.1}, r"split.valid: with per-dataset sizes"),
    ({"train": {"h2co": 10}, "valid": {"h2co": 2}, "test": 5}, r"split.test: with per-dataset"),
])
def test_split_config_is_validated(values, message):
    with pytest.raises(ConfigError, match=message):
        SplitConfig(**values)


def test_split_config_round_trips_through_the_run_config(files, tmp_path):
    values = {"data": multi_spec(files), "labels": {"mp2": ["energy"]},
              "split": {"train": {"h2co": 20, "hcooh": 10}, "valid": {"h2co": 5, "ch3oh": 5},
                        "seed": 3}}
    config = config_from_dict(values)
    assert config.split.per_dataset and config.split.test is None
    again = config_from_dict({**values, "split": yaml.safe_load(yaml.safe_dump(
        config.to_dict()["split"]))})
    assert again.split == config.split


def test_build_split_per_dataset_and_saved_split_round_trips(files, tmp_path):
    ds = load_dataset(multi_spec(files))
    config = config_from_dict({
        "data": multi_spec(files), "labels": {"mp2": ["energy"]},
        "split": {"train": {"h2co": 20, "hcooh": 10, "ch3oh": 10},
                  "valid": {"h2co": 5, "hcooh": 5, "ch3oh": 5}, "seed": 3}})
    split = build_split(config, len(ds), None, ds.dataset_index, ds.names)
    assert split.by_dataset(ds.dataset_index, ds.names) == {
        "h2co": {"train": 20, "valid": 5, "test": ROWS["h2co"] - 25},
        "hcooh": {"train": 10, "valid": 5, "test": ROWS["hcooh"] - 15},
        "ch3oh": {"train": 10, "valid": 5, "test": ROWS["ch3oh"] - 15}}
    path = split.save(tmp_path / "run" / "split.json")
    saved = json.loads(path.read_text())
    assert set(saved) == {"n", "seed", "train", "valid", "test"}  # row indices, as before
    back = Split.load(path)
    for name in ("train", "valid", "test"):
        assert np.array_equal(getattr(back, name), getattr(split, name))
    assert (back.n, back.seed) == (len(ds), 3)
    # a run folder with split.json reuses it, whatever the config draws
    other = config_from_dict({"data": multi_spec(files), "labels": {"mp2": ["energy"]},
                              "split": {"train": 0.5, "valid": 0.2, "stratify": "dataset"}})
    reused = build_split(other, len(ds), tmp_path / "run", ds.dataset_index, ds.names)
    assert np.array_equal(reused.train, split.train)
    fresh = build_split(other, len(ds), None, ds.dataset_index, ds.names)
    assert fresh.by_dataset(ds.dataset_index, ds.names)["h2co"]["train"] == 20
    with pytest.raises(ConfigError, match="did you mean 'hcooh'"):
        build_split(config_from_dict({"data": multi_spec(files), "labels": {"mp2": ["energy"]},
                                      "split": {"train": {"hcoh": 2}, "valid": {"h2co": 2}}}),
                    len(ds), None, ds.dataset_index, ds.names)


def test_tiny_training_is_evaluated_per_dataset(files, tmp_path, capsys, one_thread):
    spec = tmp_path / "three.yaml"
    spec.write_text(yaml.safe_dump(multi_spec(files), sort_keys=False))
    config = config_from_dict({
        "data": str(spec),
        "labels": {"mp2": ["energy", "forces"], "ccsdt": ["energy"]},
        "split": {"train": 0.5, "valid": 0.25, "stratify": "dataset", "seed": 1},
        "model": TINY_MODEL,
        "train": {"max_epochs": 2, "batch_size": 16, "lr": 3e-3, "seed": 0},
    })
    train(config, tmp_path / "run", log=None)
    ds = load_dataset(spec)
    split = Split.load(tmp_path / "run" / "split.json")
    test_rows = split.by_dataset(ds.dataset_index, ds.names)
    assert all(v["train"] > 0 and v["test"] > 0 for v in test_rows.values())
    metrics = evaluate_run(tmp_path / "run", json_path=str(tmp_path / "m.json"))
    assert set(metrics["mp2"]["by_dataset"]) == {"h2co", "hcooh"}
    assert set(metrics["ccsdt"]["by_dataset"]) == {"h2co", "ch3oh"}
    for fid, m in metrics.items():
        parts = m["by_dataset"]
        assert sum(p["n_energy"] for p in parts.values()) == m["n_energy"]
        assert sum(p["n_forces"] for p in parts.values()) == m["n_forces"]
        for name, p in parts.items():
            assert p["n_energy"] == test_rows[name]["test"]
            assert p["energy_rmse"] > 0 and p["forces_rmse"] > 0
    atoms = {"h2co": 4, "hcooh": 5, "ch3oh": 6}
    hcooh = metrics["mp2"]["by_dataset"]["hcooh"]
    assert hcooh["n_forces"] == atoms["hcooh"] * test_rows["hcooh"]["test"]
    # the overall figure is the pooled one
    e = metrics["mp2"]["by_dataset"]
    pooled = np.sqrt(sum(p["energy_rmse"] ** 2 * p["n_energy"] for p in e.values())
                     / sum(p["n_energy"] for p in e.values()))
    assert metrics["mp2"]["energy_rmse"] == pytest.approx(pooled, rel=1e-9)
    assert json.loads((tmp_path / "m.json").read_text())["ccsdt"]["by_dataset"]["ch3oh"]
    capsys.readouterr()
    assert main(["evaluate", str(tmp_path / "run")]) == 0
    text = capsys.readouterr().out
    assert "mp2 by dataset" in text and "ccsdt by dataset" in text
    assert any(line.strip().startswith("ch3oh") for line in text.splitlines())
