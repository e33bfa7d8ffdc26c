"""``train.batch_size: auto``: the batch chosen from the training rows' molecule size."""

from __future__ import annotations

import pytest
import yaml

from mfgnn.config import config_from_dict
from mfgnn.errors import ConfigError
from mfgnn.training.build import build_trainer
from mfgnn.training.setup import auto_batch_size, setup_run

TINY = {"n_features": 8, "n_interactions": 1, "n_atom_layers": 1, "n_sensitivities": 6,
        "tensor_order": 0}


def _ethanol_spec(tmp_path, shared_data):
    path = shared_data / "rmd17" / "rmd17_ethanol_train_01.npz"
    spec = tmp_path / "ethanol.yaml"
    spec.write_text(
        "fidelities:\n"
        f"  pbe: {{path: {path}, energy_unit: kcal/mol}}\n"
        f"  md17: {{path: {path}, energy_unit: kcal/mol, "
        "keys: {energy: old_energies, forces: old_forces}}\n")
    return spec


def _config(spec, labels, batch_size="auto"):
    return config_from_dict({"data": str(spec), "labels": labels,
                             "split": {"train": 50, "valid": 10, "test": 10, "seed": 0},
                             "model": TINY, "train": {"max_epochs": 1, "batch_size": batch_size}})


def test_rule_switches_at_eight_atoms():
    assert [auto_batch_size(n) for n in (1, 4, 5.5, 7.99)] == [32] * 4
    assert [auto_batch_size(n) for n in (8, 9, 21, 24.0, 400)] == [8] * 5


def test_auto_picks_32_for_h2co_and_8_for_ethanol_and_says_so(shared_data, h2co_spec, tmp_path):
    small = setup_run(_config(h2co_spec, {"mp2": ["energy", "forces"]}))
    large = setup_run(_config(_ethanol_spec(tmp_path, shared_data),
                              {"pbe": ["energy", "forces"], "md17": ["energy"]}))
    assert small.config.train.batch_size == 32
    assert large.config.train.batch_size == 8
    note = [n for n in large.notes if "train.batch_size: auto" in n]
    assert note and "8 structures (9.0 atoms" in note[0]
    # a number is kept as given, with no note
    given = setup_run(_config(h2co_spec, {"mp2": ["energy", "forces"]}, batch_size=5))
    assert given.config.train.batch_size == 5
    assert not any("batch_size: auto" in n for n in given.notes)


def test_run_folder_records_the_chosen_batch(shared_data, tmp_path):
    setup = setup_run(_config(_ethanol_spec(tmp_path, shared_data),
                              {"pbe": ["energy", "forces"]}))
    trainer = build_trainer(setup, tmp_path / "run", log=None)
    assert trainer.data.train.batch_size == 8
    assert [len(b) for b in trainer.data.train.plan(0)] == [8] * 6 + [2]
    trainer.fit()
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["train"]["batch_size"] == 8


@pytest.mark.parametrize("value", ["big", 0, 2.5])
def test_other_batch_sizes_are_errors_naming_the_key(value, h2co_spec):
    with pytest.raises(ConfigError, match="train.batch_size"):
        _config(h2co_spec, {"mp2": ["energy", "forces"]}, batch_size=value)


def test_fine_tuning_and_the_frozen_paradigm_resolve_auto(shared_data, tmp_path):
    """The fine-tune trainer (the head stage of ``--paradigms frozen``) takes the batch the
    setup chose, not the word ``auto``."""
    from mfgnn.training.build import train
    from mfgnn.training.finetune_build import build_finetune_trainer

    spec = _ethanol_spec(tmp_path, shared_data)
    train(_config(spec, {"pbe": ["energy", "forces"]}), tmp_path / "base", log=None)
    config = _config(spec, {"md17": ["energy"]})
    trainer = build_finetune_trainer(tmp_path / "base", config, tmp_path / "ft", log=None)
    assert trainer.data.train.batch_size == 8
    trainer.fit()
    saved = yaml.safe_load((tmp_path / "ft" / "config.yaml").read_text())
    assert saved["train"]["batch_size"] == 8
