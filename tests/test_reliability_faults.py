"""Faults: kill -9 during training, crashes inside a write, a full disk, non-finite losses
and gradients, and damaged or incompatible model files."""

from __future__ import annotations

import csv
import errno
import json
import math
import os
import random
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch
import yaml
from torch_geometric.data import Data

import mfgnn
from mfgnn.data import fileio
from mfgnn.cli import main
from mfgnn.config import LossConfig, config_from_dict
from mfgnn.errors import CheckpointError, MfgnnError
from mfgnn.io import MODEL_FORMAT_VERSION, atomic_torch_save, atomic_write, load_model
from mfgnn.loss import MultiFidelityLoss
from mfgnn.training.setup import setup_run
from mfgnn.training.trainer import Trainer, TrainingDiverged

TINY_MODEL = {"n_features": 16, "n_interactions": 1, "n_atom_layers": 1,
              "n_sensitivities": 8, "tensor_order": 1, "heads": "delta"}
REPO = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture()
def spec(tmp_path, shared_data) -> Path:
    folder = shared_data / "mp2_ccsdt"
    path = tmp_path / "h2co.yaml"
    path.write_text(yaml.safe_dump({"fidelities": {
        "mp2": {"path": str(folder / "ch2o_mp2_avtz_3601.npz"), "energy_unit": "eV"},
        "f12": {"path": str(folder / "ch2o_ccf12_avtz_3601.npz"), "energy_unit": "eV"},
    }}, sort_keys=False))  # the order of the fidelities matters: lowest level first
    return path


def run_values(spec: Path, epochs: int, rows=(48, 16, 16), **train) -> dict:
    return {
        "data": str(spec),
        "labels": {"mp2": ["energy", "forces"], "f12": ["energy"]},
        "split": {"train": rows[0], "valid": rows[1], "test": rows[2], "seed": 1},
        "model": dict(TINY_MODEL),
        "train": {"max_epochs": epochs, "batch_size": 16, "lr": 3e-3, "seed": 0,
                  "device": "cpu", **train},
    }


def write_config(path: Path, values: dict) -> Path:
    path.write_text(yaml.safe_dump(values, sort_keys=False))
    return path


def metric_rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with path.open() as handle:
        return list(csv.DictReader(handle))


def comparable(rows: list[dict]) -> list[dict]:
    """metrics.csv rows without the wall-clock column."""
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


def load_checkpoint(run: Path) -> dict:
    return torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=False)


def error_line(err: str) -> str:
    """The CLI's error message: the last line of stderr (progress lines come before it),
    with no traceback anywhere."""
    assert "Traceback" not in err, err
    return err.strip().splitlines()[-1]


def temporaries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


# --------------------------------------------------------------------------- kill -9


def test_kill_9_during_train_then_resume_matches_the_uninterrupted_run(spec, tmp_path, capsys):
    """``mfgnn train`` in a subprocess is SIGKILLed at a random moment after its second
    epoch; ``mfgnn train --resume`` then finishes it. No completed epoch is lost, the
    checkpoint is always readable, and the resumed run ends exactly like an uninterrupted
    one with the same seed (metrics.csv, test_metrics.json and the weights of model.pt)."""
    moment = random.Random(int.from_bytes(os.urandom(4), "little"))
    delay = moment.uniform(0.0, 0.4)
    config = write_config(tmp_path / "run.yaml", run_values(spec, epochs=12, rows=(96, 32, 32)))
    killed, reference = tmp_path / "killed", tmp_path / "reference"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    argv = [sys.executable, "-m", "mfgnn.cli", "train", str(config), "--out", str(killed)]
    with open(tmp_path / "killed.log", "w") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO)
        try:
            deadline = time.monotonic() + 240
            while len(metric_rows(killed / "metrics.csv")) < 2:
                assert proc.poll() is None, (tmp_path / "killed.log").read_text()
                assert time.monotonic() < deadline, "the subprocess made no progress"
                time.sleep(0.01)
            time.sleep(delay)
            seen = len(metric_rows(killed / "metrics.csv"))
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL, f"finished before the kill (delay {delay:.3f} s)"
    # the uninterrupted reference, same seed, in this process
    assert main(["train", str(config), "--out", str(reference)]) == 0
    capsys.readouterr()
    assert not (killed / "model.pt").exists()
    state = load_checkpoint(killed)  # never corrupt
    assert state["epoch"] >= seen >= 2, (state["epoch"], seen, delay)
    assert len(state["history"]) == state["epoch"]
    assert len(metric_rows(killed / "metrics.csv")) in (state["epoch"] - 1, state["epoch"])

    # resume in this process (one interpreter start less; the state comes from the killed one)
    assert main(["train", str(config), "--out", str(killed), "--resume"]) == 0
    assert f"resumed {killed} after epoch {state['epoch']}" in capsys.readouterr().err
    assert temporaries(killed) == []
    a = comparable(metric_rows(reference / "metrics.csv"))
    b = comparable(metric_rows(killed / "metrics.csv"))
    assert len(a) == len(b) == 12
    assert a == b, f"delay {delay:.3f} s"
    assert (json.loads((reference / "test_metrics.json").read_text())
            == json.loads((killed / "test_metrics.json").read_text()))
    ref_model, res_model = load_model(reference), load_model(killed)
    for (name, x), (_, y) in zip(ref_model.state_dict().items(), res_model.state_dict().items()):
        assert torch.equal(x, y), name


def test_every_piece_of_training_state_survives_a_checkpoint(spec, tmp_path):
    """Optimizer, scheduler, EMA, best weights, early-stopping and bad-step counters,
    history: what the trainer held when it wrote the checkpoint is what a resumed trainer
    holds."""
    values = run_values(spec, epochs=2)
    first = Trainer(setup_run(config_from_dict(values)), tmp_path / "run", log=None)
    first.finish = lambda: {}  # keep the in-loop state (finish() folds the EMA in)
    first.fit()
    # make the counters non-trivial, then write the checkpoint again
    first.bad_epochs, first.consecutive_bad = 2, 3
    first.scheduler.num_bad_epochs = 1
    first.scheduler._last_lr = [1.5e-3]
    first.optimizer.param_groups[0]["lr"] = 1.5e-3
    first.model.load_state_dict({k: v + 0.01 if v.is_floating_point() else v
                                 for k, v in first.model.state_dict().items()})
    first._save_checkpoint()
    again = Trainer(setup_run(config_from_dict(values), tmp_path / "run"), tmp_path / "run",
                    resume=True, log=None)
    assert (again.epoch, again.best_valid, again.bad_epochs, again.consecutive_bad) == \
           (first.epoch, first.best_valid, 2, 3)
    assert again.history == first.history
    assert again.scheduler.state_dict() == first.scheduler.state_dict()
    assert again.optimizer.param_groups[0]["lr"] == 1.5e-3

    def same(a, b):
        if torch.is_tensor(a):
            return torch.equal(a, b)
        if isinstance(a, dict):
            return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
        if isinstance(a, (list, tuple)):
            return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
        return a == b

    assert same(again.optimizer.state_dict(), first.optimizer.state_dict())
    assert same(again.model.state_dict(), first.model.state_dict())
    assert same(again.ema.state_dict(), first.ema.state_dict()) and again.ema.steps == 6
    assert same(again.best_state, first.best_state)


# --------------------------------------------------------------------------- atomic writes


def test_atomic_write_order_is_write_fsync_rename_fsync_folder(tmp_path, monkeypatch):
    calls = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        calls.append(("fsync", "dir" if os.path.isdir(f"/proc/self/fd/{fd}") else "file"))
        real_fsync(fd)

    def replace(a, b):
        calls.append(("replace", Path(b).name))
        real_replace(a, b)

    monkeypatch.setattr(fileio.os, "fsync", fsync)
    monkeypatch.setattr(fileio.os, "replace", replace)
    atomic_torch_save({"epoch": 1}, tmp_path / "checkpoint.pt")
    if not Path("/proc/self/fd").is_dir():
        calls = [(c[0], "?") if c[0] == "fsync" else c for c in calls]
        assert [c[0] for c in calls] == ["fsync", "replace", "fsync"]
    else:
        assert calls == [("fsync", "file"), ("replace", "checkpoint.pt"), ("fsync", "dir")]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_sigkill_inside_a_write_leaves_the_previous_file(tmp_path):
    """A process killed in the middle of writing a checkpoint leaves the old one intact
    (and a temporary file, which a resumed run removes)."""
    target = tmp_path / "checkpoint.pt"
    atomic_torch_save({"epoch": 1, "weights": torch.arange(1000.0)}, target)
    before = target.read_bytes()
    pid = os.fork()
    if pid == 0:  # child: start replacing the checkpoint, die half-way through
        try:
            def half(handle):
                handle.write(before[: len(before) // 2])
                handle.flush()
                os.kill(os.getpid(), signal.SIGKILL)

            atomic_write(target, half)
        finally:
            os._exit(3)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    assert target.read_bytes() == before
    assert torch.load(target, weights_only=False)["epoch"] == 1
    assert len(temporaries(tmp_path)) == 1


def test_resume_removes_temporaries_of_interrupted_writes(spec, tmp_path):
    values = run_values(spec, epochs=1)
    Trainer(setup_run(config_from_dict(values)), tmp_path / "run", log=None).fit()
    run = tmp_path / "run"
    for name in (".checkpoint.pt.x1y2.tmp", ".metrics.csv.abc.tmp", ".notes.txt.1.tmp"):
        (run / name).write_bytes(b"half a file")
    Trainer(setup_run(config_from_dict(values), run), run, resume=True, log=None)
    assert temporaries(run) == [".notes.txt.1.tmp"]  # only the run's own files are touched


# --------------------------------------------------------------------------- disk full


def _fail_writes_of(monkeypatch, name: str, after: int = 0) -> list[int]:
    """Make os.fsync raise ENOSPC for temporary files of ``name`` after ``after`` successes."""
    real = os.fsync
    seen = [0]

    def fsync(fd):
        target = os.readlink(f"/proc/self/fd/{fd}")
        if f"/.{name}." in target:
            seen[0] += 1
            if seen[0] > after:
                raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return seen


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc/self/fd")
def test_disk_full_through_the_cli(spec, tmp_path, monkeypatch, capsys):
    config = write_config(tmp_path / "run.yaml", run_values(spec, epochs=3))
    run = tmp_path / "run"
    # the second checkpoint cannot be written: the first one survives
    _fail_writes_of(monkeypatch, "checkpoint.pt", after=1)
    assert main(["train", str(config), "--out", str(run)]) == 2
    assert error_line(capsys.readouterr().err) == (
        f"mfgnn: error: could not write checkpoint {run / 'checkpoint.pt'} after epoch 2: "
        "No space left on device; the previous checkpoint is intact")
    assert load_checkpoint(run)["epoch"] == 1 and temporaries(run) == []
    # the model file cannot be written at the end: the message names it
    monkeypatch.undo()
    _fail_writes_of(monkeypatch, "model.pt")
    assert main(["train", str(config), "--out", str(run), "--resume"]) == 2
    assert error_line(capsys.readouterr().err).startswith(
        f"mfgnn: error: could not write {run / 'model.pt'}: No space left on device")
    assert load_checkpoint(run)["epoch"] == 3 and len(metric_rows(run / "metrics.csv")) == 3
    assert not (run / "model.pt").exists() and temporaries(run) == []
    # space freed: resuming writes the model without training again
    monkeypatch.undo()
    assert main(["train", str(config), "--out", str(run), "--resume"]) == 0
    assert load_model(run).metadata["epochs"] == 3
    # the very first checkpoint fails: nothing to fall back on, and the message says so
    _fail_writes_of(monkeypatch, "checkpoint.pt")
    assert main(["train", str(config), "--out", str(tmp_path / "fresh")]) == 2
    assert error_line(capsys.readouterr().err).endswith("no checkpoint was written yet")


# --------------------------------------------------------------------------- non-finite


def _inject(monkeypatch, bad: dict[int, float]) -> list[int]:
    """Replace the training loss of the chosen (0-based, global) steps by ``bad[step]``
    (NaN or inf); evaluation losses are left alone."""
    real = MultiFidelityLoss.__call__
    step = [0]

    def call(self, *args, **kwargs):
        terms = real(self, *args, **kwargs)
        if torch.is_grad_enabled():
            if step[0] in bad:
                terms.total = terms.total * 0.0 + bad[step[0]]
            step[0] += 1
        return terms

    monkeypatch.setattr(MultiFidelityLoss, "__call__", call)
    return step


def test_non_finite_losses_are_skipped_with_a_warning(spec, tmp_path, monkeypatch):
    values = run_values(spec, epochs=2, max_bad_steps=3)  # 3 steps per epoch
    trainer = Trainer(setup_run(config_from_dict(values)), tmp_path / "run", log=None)
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
    trainer = Trainer(setup_run(config_from_dict(values)), tmp_path / "run", log=None)
    real = MultiFidelityLoss.__call__
    weight = next(trainer.model.parameters())

    def call(self, *args, **kwargs):
        terms = real(self, *args, **kwargs)
        if torch.is_grad_enabled():  # + sqrt(0 * w): value 0, gradient 0 * inf = NaN
            terms.total = terms.total + torch.sqrt(weight.sum() * 0.0)
        return terms

    monkeypatch.setattr(MultiFidelityLoss, "__call__", call)
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
    trainer = Trainer(setup_run(config_from_dict(values)), tmp_path / "run", log=None)
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


# --------------------------------------------------------------------------- model files


@pytest.fixture(scope="module")
def model_file(tmp_path_factory, shared_data) -> Path:
    folder = tmp_path_factory.mktemp("model")
    d = shared_data / "mp2_ccsdt"
    spec = folder / "h2co.yaml"
    spec.write_text(yaml.safe_dump({"fidelities": {
        "mp2": {"path": str(d / "ch2o_mp2_avtz_3601.npz"), "energy_unit": "eV"},
        "f12": {"path": str(d / "ch2o_ccf12_avtz_3601.npz"), "energy_unit": "eV"}}},
        sort_keys=False))
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        Trainer(setup_run(config_from_dict(run_values(spec, epochs=1))), folder / "run",
                log=None).fit()
    finally:
        torch.set_num_threads(before)
    return folder / "run" / "model.pt"


def test_model_file_carries_version_and_metadata(model_file):
    payload = torch.load(model_file, map_location="cpu", weights_only=False)
    assert payload["format"] == "mfgnn-model"
    assert payload["format_version"] == MODEL_FORMAT_VERSION
    assert payload["mfgnn_version"] == mfgnn.__version__
    model = load_model(model_file)
    meta = model.metadata
    assert meta["fidelities"] == ["mp2", "f12"] and meta["elements"] == [1, 6, 8]
    assert meta["units"] == {"energy": "eV", "length": "Angstrom", "forces": "eV/Angstrom"}
    assert meta["trained_labels"] == {"mp2": ["energy", "forces"], "f12": ["energy"]}
    assert meta["forces_trained"] == ["mp2"]
    assert meta["mfgnn_version"] == mfgnn.__version__
    assert meta["format_version"] == MODEL_FORMAT_VERSION
    for t, fid in enumerate(meta["fidelities"]):
        for k, z in enumerate(meta["elements"]):
            assert meta["self_energies"][fid][str(z)] == float(model.self_energies[t, k])
    assert any(model.self_energies[t].abs().sum() > 0 for t in range(2))


def _rewrite(src: Path, dst: Path, change) -> Path:
    payload = torch.load(src, map_location="cpu", weights_only=False)
    change(payload)
    torch.save(payload, dst)
    return dst


def test_incompatible_model_version_names_both_versions(model_file, tmp_path, capsys):
    def future(payload):
        payload["format_version"] = MODEL_FORMAT_VERSION + 1
        payload["mfgnn_version"] = "9.0.0"

    path = _rewrite(model_file, tmp_path / "model.pt", future)
    with pytest.raises(CheckpointError) as info:
        load_model(path)
    message = str(info.value)
    assert str(path) in message
    assert f"format version {MODEL_FORMAT_VERSION + 1} (written by mfgnn 9.0.0)" in message
    assert f"this mfgnn ({mfgnn.__version__}) reads version {MODEL_FORMAT_VERSION}" in message
    for name in ("config.yaml", "split.json"):
        (tmp_path / name).write_bytes((model_file.parent / name).read_bytes())
    assert main(["evaluate", str(tmp_path)]) == 2
    err = error_line(capsys.readouterr().err)
    assert err.startswith("mfgnn: error: ") and "reads version" in err


def test_truncated_or_corrupt_model_file_fails_clearly(model_file, tmp_path):
    data = model_file.read_bytes()
    cases = {"empty": b"", "half": data[: len(data) // 2], "tail": data[:-40],
             "text": b"not a model\n"}
    for name, content in cases.items():
        path = tmp_path / f"{name}.pt"
        path.write_bytes(content)
        with pytest.raises(CheckpointError, match=rf"{name}\.pt: not a readable model file"):
            load_model(path)
    # damaged weights inside an intact archive: torch.load reads them, the checksum does not
    payload = torch.load(model_file, map_location="cpu", weights_only=False)
    weight = max((t for t in payload["state_dict"].values()
                  if t.is_floating_point() and t.numel() > 16 and float(t.std()) > 0),
                 key=lambda t: t.numel())
    needle = weight.numpy().tobytes()[:64]
    at = data.find(needle)
    assert at > 0
    damaged = bytearray(data)
    damaged[at:at + 16] = bytes(16)
    (tmp_path / "flipped.pt").write_bytes(bytes(damaged))
    with pytest.raises(CheckpointError, match=r"flipped\.pt: the weights do not match their "
                       r"checksum .* corrupt"):
        load_model(tmp_path / "flipped.pt")
    # hyper-parameters that do not fit the weights, a missing block, another format
    bad = _rewrite(model_file, tmp_path / "wide.pt",
                   lambda p: p["hparams"]["config"].update(n_features=32))
    with pytest.raises(CheckpointError, match=r"wide\.pt: the model file's hyper-parameters and "
                       r"weights do not fit together"):
        load_model(bad)
    bad = _rewrite(model_file, tmp_path / "nometa.pt", lambda p: p.pop("metadata"))
    with pytest.raises(CheckpointError, match=r"nometa\.pt: model file lacks metadata"):
        load_model(bad)
    torch.save({"epoch": 3}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match=r"other\.pt: not an mfgnn model file"):
        load_model(tmp_path / "other.pt")


def test_corrupt_checkpoint_on_resume_fails_clearly(spec, tmp_path, capsys):
    config = write_config(tmp_path / "run.yaml", run_values(spec, epochs=1))
    run = tmp_path / "run"
    assert main(["train", str(config), "--out", str(run)]) == 0
    data = (run / "checkpoint.pt").read_bytes()
    (run / "checkpoint.pt").write_bytes(data[: len(data) // 2])
    assert main(["train", str(config), "--out", str(run), "--resume"]) == 2
    err = error_line(capsys.readouterr().err)
    assert err.startswith(f"mfgnn: error: {run / 'checkpoint.pt'}: cannot resume") and "corrupt" in err
    # a checkpoint of another configuration (wider model) is refused the same way
    wide = run_values(spec, epochs=2)
    wide["model"]["n_features"] = 32
    (run / "checkpoint.pt").write_bytes(data)
    assert main(["train", str(write_config(tmp_path / "wide.yaml", wide)), "--out", str(run),
                 "--resume"]) == 2
    assert "cannot resume" in error_line(capsys.readouterr().err)
