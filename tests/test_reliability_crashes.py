"""Crashes during training: ``kill -9`` of ``mfgnn train`` and ``--resume`` (no completed
epoch lost, the same end as an uninterrupted run, every piece of training state restored),
a process killed inside a write (atomic writes: write, fsync, rename, fsync of the folder;
leftover temporaries removed on resume) and a full disk (ENOSPC) when writing the
checkpoint or the model file.
"""

from __future__ import annotations

import csv
import errno
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from _reliability import REPO, error_line, h2co_spec, load_checkpoint, run_values, write_config

from mfgnn.cli import main
from mfgnn.config import config_from_dict
from mfgnn import fileio
from mfgnn.fileio import write_atomic, write_torch_atomic
from mfgnn.model_file import load_model
from mfgnn.training.setup import setup_run
from mfgnn.training.build import build_trainer

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture()
def spec(tmp_path, shared_data) -> Path:
    return h2co_spec(tmp_path, shared_data)


def metric_rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with path.open() as handle:
        return list(csv.DictReader(handle))


def comparable(rows: list[dict]) -> list[dict]:
    """metrics.csv rows without the wall-clock column."""
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


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
    first = build_trainer(setup_run(config_from_dict(values)), tmp_path / "run", log=None)
    first.finish = lambda: {}  # keep the in-loop state (finish() folds the EMA in)
    first.fit()
    # make the counters non-trivial, then write the checkpoint again
    first.bad_epochs, first.consecutive_bad = 2, 3
    first.scheduler.inner.num_bad_epochs = 1
    first.scheduler.inner._last_lr = [1.5e-3]
    first.optimizer.param_groups[0]["lr"] = 1.5e-3
    first.model.load_state_dict({k: v + 0.01 if v.is_floating_point() else v
                                 for k, v in first.model.state_dict().items()})
    first.folder.save_checkpoint(first.state_dict(), first.epoch)
    again = build_trainer(setup_run(config_from_dict(values), tmp_path / "run"), tmp_path / "run",
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
    write_torch_atomic(tmp_path / "checkpoint.pt", {"epoch": 1})
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
    write_torch_atomic(target, {"epoch": 1, "weights": torch.arange(1000.0)})
    before = target.read_bytes()
    pid = os.fork()
    if pid == 0:  # child: start replacing the checkpoint, die half-way through
        try:
            def half(handle):
                handle.write(before[: len(before) // 2])
                handle.flush()
                os.kill(os.getpid(), signal.SIGKILL)

            write_atomic(target, half)
        finally:
            os._exit(3)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    assert target.read_bytes() == before
    assert torch.load(target, weights_only=False)["epoch"] == 1
    assert len(temporaries(tmp_path)) == 1


def test_resume_removes_temporaries_of_interrupted_writes(spec, tmp_path):
    values = run_values(spec, epochs=1)
    build_trainer(setup_run(config_from_dict(values)), tmp_path / "run", log=None).fit()
    run = tmp_path / "run"
    for name in (".checkpoint.pt.x1y2.tmp", ".metrics.csv.abc.tmp", ".notes.txt.1.tmp"):
        (run / name).write_bytes(b"half a file")
    build_trainer(setup_run(config_from_dict(values), run), run, resume=True, log=None)
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
