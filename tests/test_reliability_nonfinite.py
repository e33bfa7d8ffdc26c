"""Non-finite training: NaN or inf losses and gradients are skipped with a warning, a NaN
predicted force at a labelled atom is not masked away, too many bad steps in a row (also
across a resume) stop with the last good checkpoint intact, and a non-finite validation
loss never overwrites the checkpoint.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import pytest
import torch
from _reliability import error_line, h2co_spec, load_checkpoint, run_values, write_config
from torch_geometric.data import Data

from mfgnn.cli import main
from mfgnn.config import config_from_dict
from mfgnn.loss import LossConfig
from mfgnn.errors import MfgnnError
from mfgnn.model_file import load_model
from mfgnn.loss import MultiFidelityLoss
from mfgnn.training.setup import setup_run
from mfgnn.training.build import build_trainer
from mfgnn.training.trainer import Trainer, TrainingDiverged

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture()
def spec(tmp_path, shared_data) -> Path:
    return h2co_spec(tmp_path, shared_data)


# --------------------------------------------------------------------------- non-finite


def _inject(monkeypatch, bad: dict[int, float]) -> list[int]:
    """Replace the training loss of the chosen (0-based, global) steps by ``bad[step]``
    (NaN or inf); evaluation losses are left alone."""
    real = MultiFidelityLoss.combine
    step = [0]

    def call(self, *args, **kwargs):
        terms = real(self, *args, **kwargs)
        if torch.is_grad_enabled():
            if step[0] in bad:
                terms.total = terms.total * 0.0 + bad[step[0]]
            step[0] += 1
        return terms

    monkeypatch.setattr(MultiFidelityLoss, "combine", call)
    return step


def test_non_finite_losses_are_skipped_with_a_warning(spec, tmp_path, monkeypatch):
    values = run_values(spec, epochs=2, max_bad_steps=3)  # 3 steps per epoch
    trainer = build_trainer(setup_run(config_from_dict(values)), tmp_path / "run", log=None)
    steps = _inject(monkeypatch, {1: float("nan"), 2: float("inf"), 4: float("-inf")})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit()
    skipped = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)
               and "non-finite loss, step skipped" in str(w.message)]
    assert steps[0] == 6 and len(skipped) == 3, skipped
    assert "(2 in a row; train.max_bad_steps = 3)" in skipped[1]
    assert [row["skipped_steps"] for row in trainer.history] == [2, 1]
    # only the 3 good steps moved the weights
    assert all(s["step"] == 3 for s in trainer.optimizer.state_dict()["state"].values())
    assert trainer.consecutive_bad == 0
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
    assert load_model(tmp_path / "run").metadata["epochs"] == 2


def test_non_finite_gradient_of_a_finite_loss_is_skipped(spec, tmp_path, monkeypatch):
    values = run_values(spec, epochs=1)
    trainer = build_trainer(setup_run(config_from_dict(values)), tmp_path / "run", log=None)
    real = MultiFidelityLoss.combine
    weight = next(trainer.model.parameters())

    def call(self, *args, **kwargs):
        terms = real(self, *args, **kwargs)
        if torch.is_grad_enabled():  # + sqrt(0 * w): value 0, gradient 0 * inf = NaN
            terms.total = terms.total + torch.sqrt(weight.sum() * 0.0)
        return terms

    monkeypatch.setattr(MultiFidelityLoss, "combine", call)
    before = [p.detach().clone() for p in trainer.model.parameters()]
    with pytest.warns(RuntimeWarning, match="non-finite gradient, step skipped"):
        trainer.fit()
    assert trainer.history[0]["skipped_steps"] == 3
    assert all(torch.equal(a, b) for a, b in zip(before, trainer.model.parameters()))


def test_non_finite_force_prediction_is_not_masked_away():
    """A NaN predicted force at a labelled atom makes the loss NaN (so the trainer skips
    the step) instead of silently dropping out; a column the model was not asked for
    (all NaN) and unlabelled atoms are ignored."""
    fn = MultiFidelityLoss(["lo", "hi"], {"lo": ["forces"], "hi": ["forces"]},
                           LossConfig(hierarchicality_weight=0.0))
    target = torch.zeros(3, 2, 3)
    target[2, 0] = float("nan")  # atom 2 has no low-level label
    batch = Data(energy=torch.zeros(1, 2, dtype=torch.float64), forces=target,
                 batch=torch.zeros(3, dtype=torch.long))
    pred = torch.ones(3, 2, 3)
    pred[:, 1] = float("nan")  # high-level forces not requested
    assert float(fn({"energy": torch.zeros(1, 2), "forces": pred}, batch).total) == 2.0
    pred[2, 0, 1] = float("nan")  # unlabelled atom: ignored
    assert float(fn({"energy": torch.zeros(1, 2), "forces": pred}, batch).total) == 2.0
    pred[0, 0, 0] = float("nan")  # labelled atom: the loss must not hide it
    assert math.isnan(float(fn({"energy": torch.zeros(1, 2), "forces": pred}, batch).total))


def test_too_many_bad_steps_stop_with_the_last_good_checkpoint(spec, tmp_path, monkeypatch,
                                                               capsys):
    config = write_config(tmp_path / "run.yaml", run_values(spec, epochs=1, max_bad_steps=4))
    run = tmp_path / "run"
    assert main(["train", str(config), "--out", str(run)]) == 0
    checkpoint, model = (run / "checkpoint.pt").read_bytes(), (run / "model.pt").read_bytes()
    capsys.readouterr()
    # continue for 2 more epochs: every step diverges (4 in a row, across the epoch border)
    _inject(monkeypatch, {k: float("nan") for k in range(100)})
    with pytest.warns(RuntimeWarning, match="non-finite loss"):
        code = main(["train", str(config), "--out", str(run), "--resume", "--max-epochs", "3"])
    assert code == 2
    assert error_line(capsys.readouterr().err).startswith(
        "mfgnn: error: 4 consecutive non-finite losses or gradients at epoch 3; the last good "
        f"checkpoint {run / 'checkpoint.pt'} (epoch 2) is intact")
    # epoch 2 (3 skipped steps, unchanged weights) completed and was saved; epoch 3 never was
    state = load_checkpoint(run)
    assert state["epoch"] == 2 and state["consecutive_bad"] == 3
    assert (run / "model.pt").read_bytes() == model and checkpoint != (run / "checkpoint.pt").read_bytes()
    with pytest.raises(TrainingDiverged), pytest.warns(RuntimeWarning, match="4 in a row"):
        # --debug shows the exception; the restored counter (3) makes the first step the 4th
        main(["--debug", "train", str(config), "--out", str(run), "--resume", "--max-epochs", "3"])
    assert issubclass(TrainingDiverged, MfgnnError)
    assert load_checkpoint(run)["epoch"] == 2


def test_non_finite_validation_loss_never_overwrites_the_checkpoint(spec, tmp_path, monkeypatch):
    values = run_values(spec, epochs=3)
    trainer = build_trainer(setup_run(config_from_dict(values)), tmp_path / "run", log=None)
    real = Trainer.evaluate
    calls = [0]

    def evaluate(self, indices):
        loss, metrics = real(self, indices)
        calls[0] += 1
        return (float("nan") if calls[0] == 2 else loss), metrics

    monkeypatch.setattr(Trainer, "evaluate", evaluate)
    with pytest.raises(TrainingDiverged, match=r"validation loss is nan after epoch 2; the last "
                       r"good checkpoint .*\(epoch 1\) is intact"):
        trainer.fit()
    assert load_checkpoint(tmp_path / "run")["epoch"] == 1
    assert not (tmp_path / "run" / "model.pt").exists()
