"""Reptile (seed paper 004, Algorithm 2): k = 1, ε = 1 is a joint-training step; k > 1
moves the weights by ε × the task displacement; tasks; the recipe end to end on H2CO."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from torch_geometric.data import Batch

from mfgnn.config import config_from_dict
from mfgnn.data import fit_self_energies, load_dataset
from mfgnn.errors import CheckpointError, ConfigError
from mfgnn.experiment.predict import predict
from mfgnn.loss import MultiFidelityLoss
from mfgnn.model_file import load_model
from mfgnn.nn import HIPNNConfig, MultiFidelityHIPNN
from mfgnn.training.config import TrainConfig
from mfgnn.training.reptile import MetaConfig, Reptile, make_tasks, reptile_finetune
from mfgnn.training.setup import setup_run
from mfgnn.training.trainer import Trainer

TINY = {"n_features": 8, "n_interactions": 1, "n_atom_layers": 1, "n_sensitivities": 6,
        "tensor_order": 0}
LABELS = {"mp2": ["energy", "forces"], "f12": ["energy"]}


@pytest.fixture(scope="module")
def spec(tmp_path_factory, shared_data):
    folder = shared_data / "mp2_ccsdt"
    path = tmp_path_factory.mktemp("reptile") / "h2co.yaml"
    path.write_text("fidelities:\n"
                    f"  mp2: {{path: {folder / 'ch2o_mp2_avtz_3601.npz'}}}\n"
                    f"  f12: {{path: {folder / 'ch2o_ccf12_avtz_3601.npz'}}}\n")
    return path


@pytest.fixture(scope="module")
def dataset(spec):
    return load_dataset(spec, cutoff=6.5)


class _Batches:
    """A batch source that serves the same fixed batches every pass."""

    def __init__(self, batches):
        self.list, self.batch_size = batches, 1

    def __len__(self):
        return len(self.list)

    def batches(self, epoch=0):
        return self.list


class _Fixed:
    def __init__(self, batches):
        self.name, self.batches, self.k = "all labels", batches, 0

    def next_batch(self):
        self.k += 1
        return self.batches[(self.k - 1) % len(self.batches)]


class _NoSchedule:
    def step_end(self, fraction):
        pass


def _batches(dataset, n_batches, size=8):
    return [Batch.from_data_list([dataset[i] for i in range(b * size, (b + 1) * size)])
            for b in range(n_batches)]


def _model(dataset):
    torch.manual_seed(0)
    se = fit_self_energies(dataset, np.arange(64)).as_tensor()
    return MultiFidelityHIPNN(HIPNNConfig(**TINY), dataset.fidelities, dataset.elements,
                              se).double()


def _trainer_steps(model, batches, settings):
    """Ordinary training: the trainer's own step (forward → MultiFidelityLoss → backward
    → clip → Adam step) on each batch, one optimiser throughout."""
    loss = MultiFidelityLoss(model.fidelities, LABELS)
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr)
    trainer = Trainer(model, loss, optimizer, _NoSchedule(), None, None, settings, log=None)
    for batch in batches:
        assert trainer.train_step(batch) is not None
    return model


def _weights(model):
    return [p.detach().clone() for p in model.parameters()]


SETTINGS = TrainConfig(lr=1e-2, max_epochs=1, grad_clip=10.0, ema_decay=0.0)


def test_k1_epsilon1_is_one_joint_training_step(dataset, float64_single_thread):
    """One outer step with k = 1, ε = 1 on a task holding every label equals one ordinary
    training step on the same batch from the same weights, bit for bit."""
    batch = _batches(dataset, 1)[0]
    start = _model(dataset)
    ref = _trainer_steps(copy.deepcopy(start), [batch], SETTINGS)
    model = copy.deepcopy(start)
    learner = Reptile(model, MultiFidelityLoss(model.fidelities, LABELS), [_Fixed([batch])],
                      MetaConfig(k=1, epsilon=1.0), SETTINGS, log=None)
    row = learner.outer_step()
    assert row["task"] == "all labels" and np.isfinite(row["loss"])
    for p, q, p0 in zip(model.parameters(), ref.parameters(), start.parameters()):
        assert torch.equal(p, q)
    assert any(not torch.equal(p, p0) for p, p0 in zip(model.parameters(), start.parameters()))


def test_k1_epsilon1_over_several_outer_steps_is_joint_training(dataset, float64_single_thread):
    """The inner optimiser (and its Adam moments) is kept across outer steps, so k = 1,
    ε = 1 is ordinary training step for step."""
    batches = _batches(dataset, 3)
    start = _model(dataset)
    ref = _trainer_steps(copy.deepcopy(start), batches, SETTINGS)
    model = copy.deepcopy(start)
    learner = Reptile(model, MultiFidelityLoss(model.fidelities, LABELS), [_Fixed(batches)],
                      MetaConfig(k=1, epsilon=1.0), SETTINGS, log=None)
    for _ in range(3):
        learner.outer_step()
    for p, q in zip(model.parameters(), ref.parameters()):
        assert torch.allclose(p, q, rtol=0, atol=1e-12)


@pytest.mark.parametrize("reset", [False, True])
def test_k_steps_move_the_weights_by_epsilon_times_the_task_displacement(
        dataset, float64_single_thread, reset):
    """θ ← θ0 + ε (θ_k − θ0), θ_k the weights after k inner steps computed separately."""
    batches = _batches(dataset, 3)
    start = _model(dataset)
    theta0 = _weights(start)
    theta_k = _weights(_trainer_steps(copy.deepcopy(start), batches, SETTINGS))
    model = copy.deepcopy(start)
    learner = Reptile(model, MultiFidelityLoss(model.fidelities, LABELS), [_Fixed(batches)],
                      MetaConfig(k=3, epsilon=0.5, reset_optimizer=reset), SETTINGS, log=None)
    learner.outer_step()
    moved = False
    for p, a, b in zip(model.parameters(), theta0, theta_k):
        assert torch.allclose(p, a + 0.5 * (b - a), rtol=0, atol=1e-12)
        moved |= not torch.allclose(p, b, rtol=0, atol=1e-12)
    assert moved


def _config(spec, **train):
    return config_from_dict({
        "data": str(spec), "labels": LABELS,
        "split": {"train": 48, "valid": 8, "test": 8, "seed": 0}, "model": TINY,
        "train": {"max_epochs": 2, "batch_size": 16, "lr": 3e-3, **train}})


def test_fidelity_tasks_carry_only_their_level_labels(spec, one_thread):
    setup = setup_run(_config(spec))
    tasks = make_tasks(setup, MetaConfig(tasks="fidelities"))
    assert [t.name for t in tasks] == ["mp2", "f12"] and len(tasks[0]) == 48
    mp2, f12 = tasks[0].next_batch(), tasks[1].next_batch()
    assert torch.isfinite(mp2.energy[:, 0]).all() and torch.isfinite(mp2.forces[:, 0]).all()
    assert torch.isnan(mp2.energy[:, 1]).all() and torch.isnan(mp2.forces[:, 1]).all()
    assert torch.isfinite(f12.energy[:, 1]).all() and torch.isnan(f12.energy[:, 0]).all()
    assert torch.isnan(f12.forces).all()          # f12 forces are not selected
    # a single dataset is a single task holding every label (joint training)
    one = make_tasks(setup, MetaConfig(tasks="datasets"))
    assert len(one) == 1 and torch.isfinite(one[0].next_batch().energy).all()


def test_dataset_tasks_are_the_rows_of_each_dataset(shared_data, one_thread):
    folder = shared_data / "mp2_ccsdt"
    mp2 = {"path": str(folder / "ch2o_mp2_avtz_3601.npz")}
    f12 = {"path": str(folder / "ch2o_ccf12_avtz_3601.npz")}
    config = config_from_dict({
        "data": {"datasets": {"a": {"fidelities": {"mp2": mp2}},
                              "b": {"fidelities": {"mp2": mp2, "f12": f12}}}},
        "labels": LABELS, "split": {"train": 48, "valid": 8, "test": 8}, "model": TINY,
        "train": {"batch_size": 16}})
    setup = setup_run(config)
    tasks = make_tasks(setup, MetaConfig(tasks="datasets"))
    assert [t.name for t in tasks] == ["a", "b"] and len(tasks[0]) + len(tasks[1]) == 48
    a, b = tasks[0].next_batch(), tasks[1].next_batch()
    assert (a.dataset == 0).all() and torch.isnan(a.energy[:, 1]).all()
    assert (b.dataset == 1).all() and torch.isfinite(b.energy).all()


def test_meta_options_are_checked():
    for bad, match in (({"tasks": "levels"}, "unknown tasks 'levels'"),
                       ({"k": 0}, "meta.k must be >= 1"),
                       ({"epsilon": 1.5}, r"meta.epsilon must be in \(0, 1\]"),
                       ({"epsilon": 0.0}, "meta.epsilon must be > 0"),
                       ({"meta_share": 1.0}, "meta_share"),
                       ({"outer_steps": 2.5}, "meta.outer_steps must be an integer")):
        with pytest.raises(ConfigError, match=match):
            MetaConfig(**bad)


def test_reptile_then_finetune_end_to_end(spec, tmp_path, dataset, one_thread):
    """Meta stage over the MP2 E+F and F12 E tasks, then fine-tuning on F12 energies:
    a model.pt with finite F12 forces; seeded task sampling; resume reuses the stages."""
    out = tmp_path / "reptile"
    meta = {"k": 2, "epsilon": 0.5, "outer_steps": 4, "finetune_epochs": 1}
    result = reptile_finetune(_config(spec), meta, out, log=None)
    assert "f12" in result
    record = json.loads((out / "meta" / "meta.json").read_text())
    assert record["outer_steps"] == 4 and record["tasks"] == ["mp2", "f12"]
    g = torch.Generator().manual_seed(0)
    expected = [["mp2", "f12"][int(torch.randint(2, (1,), generator=g))] for _ in range(4)]
    assert [row["task"] for row in record["history"]] == expected
    model = load_model(out / "model.pt")
    assert model.fidelities == ("mp2", "f12")
    assert model.metadata["finetuned_from"]["base"].endswith("meta/model.pt")
    energy, forces = predict(model, dataset, np.arange(3000, 3008))
    assert np.isfinite(forces[:, 1]).all() and np.isfinite(energy[:, 1]).all()
    with pytest.raises(CheckpointError, match="already holds a Reptile run"):
        reptile_finetune(_config(spec), meta, out, log=None)
    again = reptile_finetune(_config(spec), meta, out, resume=True, log=None)
    assert again["f12"]["energy_rmse"] == pytest.approx(result["f12"]["energy_rmse"])
