"""``mfgnn finetune``: new heads for new levels, frozen groups, discriminative learning
rates, replay, lineage, and the errors a user can make (on the shared H2CO data)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
import yaml
from _symmetry import assert_forces_are_minus_energy_gradient
from torch_geometric.data import Batch

from mfgnn.cli import main
from mfgnn.config import config_from_dict
from mfgnn.errors import ConfigError, ModelError
from mfgnn.model_file import load_model
from mfgnn.training.batches import BatchSource, ReplayMix
from mfgnn.training.build import train
from mfgnn.training.finetune import parameter_groups
from mfgnn.training.finetune_build import build_finetune_trainer, finetune

TINY = {"n_features": 8, "n_interactions": 2, "n_atom_layers": 1, "n_sensitivities": 6,
        "tensor_order": 0}


@pytest.fixture(scope="module")
def files(shared_data):
    folder = shared_data / "mp2_ccsdt"
    return folder / "ch2o_mp2_avtz_3601.npz", folder / "ch2o_ccf12_avtz_3601.npz"


@pytest.fixture(scope="module")
def base_run(tmp_path_factory, files):
    """A tiny model trained on H2CO MP2 energies and forces."""
    folder = tmp_path_factory.mktemp("base")
    spec = folder / "mp2.yaml"
    spec.write_text(f"fidelities:\n  mp2: {{path: {files[0]}}}\n")
    train(config_from_dict({
        "data": str(spec), "labels": {"mp2": ["energy", "forces"]},
        "split": {"train": 64, "valid": 16, "test": 16, "seed": 0}, "model": TINY,
        "train": {"max_epochs": 2, "batch_size": 16, "lr": 3e-3}}), folder / "run", log=None)
    return folder / "run"


def _spec(folder, files):
    spec = folder / "h2co.yaml"
    spec.write_text(f"fidelities:\n  mp2: {{path: {files[0]}}}\n  f12: {{path: {files[1]}}}\n")
    return spec


def _config(folder, files, finetune, labels=None, epochs=2):
    return config_from_dict({
        "data": str(_spec(folder, files)), "labels": labels or {"f12": ["energy"]},
        "split": {"train": 48, "valid": 16, "test": 16, "seed": 3},
        "train": {"max_epochs": epochs, "batch_size": 16, "lr": 2e-3, "ema_decay": 0.9},
        "finetune": finetune})


def test_new_level_head_starts_as_a_copy_and_its_forces_are_exact(base_run, files, tmp_path):
    config = _config(tmp_path, files, {"init_from": "mp2"})
    trainer = build_finetune_trainer(base_run, config, tmp_path / "ft", log=None)
    model = trainer.model
    assert model.fidelities == ("mp2", "f12")
    base = load_model(base_run)
    batch = Batch.from_data_list([trainer.data.test.items()[i] for i in range(3)])
    out, ref = model(batch.clone()), base(batch.clone())
    se_shift = (model.self_energies[1] - model.self_energies[0])
    counts = torch.tensor([[2, 1, 1]] * 3, dtype=torch.float64)  # H2CO: 2 H, 1 C, 1 O
    assert torch.allclose(out["energy"][:, 0], ref["energy"][:, 0], atol=1e-10)
    # the copied head predicts the base level's shape, shifted by the new self-energies
    assert torch.allclose(out["energy"][:, 1] - out["energy"][:, 0], counts @ se_shift,
                          atol=1e-8)
    finetune(base_run, config, tmp_path / "ft2", log=None)
    tuned = load_model(tmp_path / "ft2").double()
    one = Batch.from_data_list([trainer.data.test.items()[0]])
    one.pos = one.pos.double()
    assert_forces_are_minus_energy_gradient(tuned, one, atoms=range(4), h=1e-5)


def test_frozen_groups_stay_bit_identical_and_groups_get_their_learning_rates(
        base_run, files, tmp_path):
    config = _config(tmp_path, files, {"freeze": ["blocks.0", "sensitivities"], "lr_decay": 5})
    trainer = build_finetune_trainer(base_run, config, tmp_path / "ft", log=None)
    lrs = sorted({g["lr"] for g in trainer.optimizer.param_groups})
    assert lrs == pytest.approx([2e-3 / 5, 2e-3])  # last block at η/5, heads at η (block 0 frozen)
    in_optimizer = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
    frozen = [n for n, p in trainer.model.named_parameters() if id(p) not in in_optimizer]
    assert frozen and all(n.startswith("blocks.0") or ".sensitivity." in n for n in frozen)
    trainer.fit()
    base = load_model(base_run).state_dict()
    tuned = load_model(tmp_path / "ft").state_dict()
    for name in frozen:
        assert torch.equal(tuned[name], base[name]), name
    assert not torch.equal(tuned["blocks.1.atom_layers.0.linear.weight"],
                           base["blocks.1.atom_layers.0.linear.weight"])
    meta = load_model(tmp_path / "ft").metadata["finetuned_from"]
    from mfgnn.model_file import read_model_file
    assert meta["base_sha256"] == read_model_file(base_run)["state_sha256"]
    assert meta["frozen_groups"] == ["blocks.0", "sensitivities"] and meta["new_levels"] == ["f12"]


def test_freezing_the_trunk_trains_the_heads_alone(base_run, files, tmp_path):
    """``freeze: [trunk]`` leaves only head parameters in the optimiser, and after
    training every trunk parameter equals the base model's bit for bit."""
    config = _config(tmp_path, files, {"freeze": ["trunk"], "init_from": "mp2"})
    trainer = build_finetune_trainer(base_run, config, tmp_path / "ft", log=None)
    names = {id(p): n for n, p in trainer.model.named_parameters()}
    trained = [names[id(p)] for g in trainer.optimizer.param_groups for p in g["params"]
               if id(p) in names]
    assert trained and all(n.startswith("heads.") for n in trained)
    groups = parameter_groups(trainer.model)
    assert set(groups["trunk"]) == {n for n in names.values() if not n.startswith("heads.")}
    trainer.fit()
    base = load_model(base_run).state_dict()
    tuned = load_model(tmp_path / "ft").state_dict()
    for name in groups["trunk"]:
        assert torch.equal(tuned[name], base[name]), name


def test_refit_of_the_energy_only_level_after_fine_tuning(base_run, files, tmp_path):
    """``train.refit_energy_heads`` in a fine-tuning run refits the new F12 level (trained
    on energies only) at the end, leaves the MP2 level as the base has it, and the saved
    model is the refitted one."""
    config = _config(tmp_path, files, {"init_from": "mp2"}, epochs=1)
    config.train = dataclasses.replace(config.train, refit_energy_heads=True)
    trainer = build_finetune_trainer(base_run, config, tmp_path / "ft", log=None)
    trainer.fit()
    report = json.loads((tmp_path / "ft" / "head_refit.json").read_text())
    assert [r["fidelity"] for r in report] == ["f12"]
    assert report[0]["valid_rmse_after"] <= report[0]["valid_rmse_before"]
    tuned = load_model(tmp_path / "ft")
    before_refit = load_model(tmp_path / "ft")
    before_refit.load_state_dict(trainer.best_state)  # the best weights, as trained
    batch = Batch.from_data_list([trainer.data.valid.items()[i] for i in range(4)])
    assert torch.allclose(tuned(batch.clone())["energy"][:, 0],
                          before_refit(batch.clone())["energy"][:, 0], atol=1e-8)
    errors = torch.cat([tuned(b)["energy"][:, 1] - b.energy[:, 1].double()
                        for b in trainer.data.valid.batches()])
    assert 1e3 * float(errors.square().mean().sqrt()) == pytest.approx(
        report[0]["valid_rmse_after"], rel=1e-4)


def test_replay_writes_old_level_errors_before_and_after(base_run, files, tmp_path):
    config = _config(tmp_path, files, {"replay": {"data": "base", "fraction": 0.3}})
    finetune(base_run, config, tmp_path / "ft", log=None)
    report = yaml.safe_load((tmp_path / "ft" / "replay_metrics.json").read_text())
    assert set(report) == {"before", "after"} and set(report["before"]) == {"mp2"}
    assert report["before"]["mp2"]["n_forces"] == 16 * 4  # the base run's validation rows
    assert report["after"]["mp2"]["forces_rmse"] > 0


def test_replay_fraction_is_binomial_over_many_batches(files):
    from mfgnn.data import load_dataset

    from mfgnn.data import parse_spec

    dataset = load_dataset(parse_spec({"fidelities": {"mp2": {"path": str(files[0])}}}))
    main_rows, replay_rows = np.arange(0, 800), np.arange(1000, 1400)
    main_src = BatchSource(dataset, main_rows, [0], 20, shuffle=True, seed=1)
    mix = ReplayMix(main_src, BatchSource(dataset, replay_rows, [0], 20, shuffle=True), 0.25)
    replayed = total = 0
    for epoch in range(3):
        batches = mix.batches(epoch)
        assert len(batches) >= len(main_rows) // 20
        for b in batches:
            replayed += int((b.idx >= 1000).sum())
            total += int(b.num_graphs)
    share, n = replayed / total, total
    assert abs(share - 0.25) < 4 * np.sqrt(0.25 * 0.75 / n), (share, n)


def test_element_the_base_lacks_is_a_clear_error(base_run, tmp_path, shared_data):
    ch3oh = shared_data / "mp2_ccsdt" / "ch3oh_cc_avtz_7201.npz"
    spec = tmp_path / "ch3oh.yaml"
    spec.write_text(f"fidelities:\n  cc: {{path: {ch3oh}}}\n")
    base = load_model(base_run)
    assert set(base.elements) == {1, 6, 8}
    # CH3OH has H, C, O too: make a copy with a nitrogen in the first row
    raw = dict(np.load(ch3oh))
    raw["Z"] = raw["Z"].copy()
    raw["Z"][0, -1] = 7
    np.savez(tmp_path / "with_n.npz", **raw)
    spec.write_text(f"fidelities:\n  cc: {{path: {tmp_path / 'with_n.npz'}}}\n")
    config = config_from_dict({"data": str(spec), "labels": {"cc": ["energy"]},
                               "split": {"train": 0.5, "valid": 0.25, "seed": 0},
                               "finetune": {}})
    with pytest.raises(ModelError, match=r"element\(s\) 7 .*not trained on"):
        build_finetune_trainer(base_run, config, tmp_path / "ft", log=None)


def test_cli_lists_groups_and_refuses_bad_input(base_run, files, tmp_path, capsys):
    assert main(["finetune", str(base_run), "--list-groups"]) == 0
    out = capsys.readouterr().out
    assert "sensitivities" in out and "blocks.1.atom_layers" in out
    assert set(parameter_groups(load_model(base_run))) >= {"blocks.0", "blocks.1"}
    config = _config(tmp_path, files, {"freeze": ["heads"]})
    with pytest.raises(ConfigError, match="unknown group 'heads'"):
        build_finetune_trainer(base_run, config, tmp_path / "ft", log=None)
    path = tmp_path / "ft.yaml"
    path.write_text(yaml.safe_dump({**config.to_dict(), "finetune": {"lr_decay": 0.5}}))
    code = main(["finetune", str(base_run), str(path), "--out", str(tmp_path / "o")])
    assert code == 2 and "finetune.lr_decay must be >= 1" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="mfgnn finetune"):
        train(config, tmp_path / "plain", log=None)
