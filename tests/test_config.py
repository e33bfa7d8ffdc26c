"""Run configuration parsing: defaults, nested dataclasses, clear errors."""

from __future__ import annotations

import pytest

from mfgnn.config import config_from_dict, load_config
from mfgnn.errors import ConfigError


def test_full_config_parses(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(
        "data: data.yaml\n"
        "labels: {mp2: [energy, forces], ccsdt: [energy]}\n"
        "split: {train: 1000, valid: 200, test: 1000, seed: 0}\n"
        "model: {n_features: 64, n_interactions: 2, n_atom_layers: 3, n_sensitivities: 20,\n"
        "        cutoff: 6.5, tensor_order: 2, heads: delta, head_penalty: 1.0e-3}\n"
        "train: {max_epochs: 500, batch_size: 64, lr: 1.0e-3, patience: 25, seed: 0}\n")
    config = load_config(path)
    assert config.model.tensor_order == 2 and config.model.heads == "delta"
    assert config.split.train == 1000 and config.train.patience == 25
    assert config.labels == {"mp2": ["energy", "forces"], "ccsdt": ["energy"]}
    assert config.resolved_data() == str(tmp_path / "data.yaml")


@pytest.mark.parametrize("section,key,suggestion", [
    ("model", "n_feature", "n_features"),
    ("train", "learning_rate", None),
    ("train", "max_epoch", "max_epochs"),
    ("split", "trian", "train"),
])
def test_unknown_key_names_key_and_suggests(section, key, suggestion):
    with pytest.raises(ConfigError) as info:
        config_from_dict({"data": "x.yaml", "labels": {"a": ["energy"]}, section: {key: 1}})
    message = str(info.value)
    assert repr(key) in message and section in message
    if suggestion:
        assert f"did you mean {suggestion!r}" in message


def test_unknown_top_level_key_and_label():
    with pytest.raises(ConfigError, match="'lables'.*did you mean 'labels'"):
        config_from_dict({"data": "x", "labels": {"a": ["energy"]}, "lables": {}})
    with pytest.raises(ConfigError, match="unknown label 'force'.*'forces'"):
        config_from_dict({"data": "x", "labels": {"a": ["force"]}})


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_inline_dataset_spec_resolves_relative_paths(tmp_path, shared_data):
    from mfgnn.data import load_dataset

    src = shared_data / "mp2_ccsdt" / "ch2o_mp2_avtz_3601.npz"
    (tmp_path / "mp2.npz").symlink_to(src)
    config = config_from_dict({"data": {"fidelities": {"mp2": {"path": "mp2.npz"}}},
                               "labels": {"mp2": ["energy"]}}, base_dir=tmp_path)
    dataset = load_dataset(config.resolved_data())
    assert dataset.fidelities == ("mp2",) and len(dataset) == 3601
