"""Memory of a training run does not grow with the size of a packed dataset.

Two synthetic ANI-1x-layout files (:func:`mfgnn.data.synthetic.write_synthetic_ani`), the
second 10× the first, are packed (``mfgnn data pack``) and trained on for 200 steps
(``mfgnn train``, a tiny model, the memory-mapped batch store forced with
``cache_structures: 0``, a fixed validation sample), each command in a fresh process.
The parent polls the child's ``/proc/PID/status`` every 5 ms for its anonymous resident
memory (``RssAnon``: what the process allocates; file-backed pages of the pack's memory
maps are page cache, shared and reclaimable) and reads the child's own ``ru_maxrss``
(``os.wait4``), which includes the mapped pages.

Sizes: 100 k and 1 M conformers; 20 k and 200 k in CI or with ``MFGNN_SMOKE=1`` (under
a minute on 2 cores). Bound: the larger run's peak anonymous memory is below 1.15× the
smaller run's plus :data:`ALLOWANCE_MB`. A per-row Python object (≥ 50 bytes) would
add ≥ 45 MB at 1 M rows; the per-row numpy tables the run does keep (atom counts, dataset
index, split indices, the store's 16 bytes per row, a pass's shuffled order: ≈ 50 bytes
per row) add ≈ 45 MB at 1 M rows, which the allowance covers.

Resumable packing after ``kill -9`` and the refusal of a changed source are tested in
tests/test_pack.py (``test_kill_9_mid_pack_resumes_to_the_uninterrupted_result``,
``test_a_crash_then_a_changed_source_is_refused_naming_the_file``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import SMOKE
from mfgnn.data.synthetic import synthetic_spec, write_synthetic_ani

SIZES = (20_000, 200_000) if SMOKE else (100_000, 1_000_000)
ALLOWANCE_MB = 64.0
RELATIVE = 0.15


def status_kb(pid: int) -> dict[str, int]:
    """Memory fields (kB) of ``/proc/PID/status`` ({} once the process is gone)."""
    out = {}
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key in ("RssAnon", "RssFile", "VmHWM"):
                    out[key] = int(value.split()[0])
    except (OSError, ValueError, IndexError):
        pass
    return out


def run_measured(args: list[str], timeout: float = 600) -> dict[str, float]:
    """Run ``python -m mfgnn ARGS`` in a fresh process; returns the peak anonymous RSS
    (MB, polled), its ``ru_maxrss`` (MB) and the wall time (s). Fails on a nonzero exit."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "mfgnn", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    peak_anon = 0
    while True:
        pid, code, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        peak_anon = max(peak_anon, status_kb(proc.pid).get("RssAnon", 0))
        if time.perf_counter() - t0 > timeout:
            proc.kill()
        time.sleep(0.005)
    proc.returncode = os.waitstatus_to_exitcode(code)
    output = proc.stdout.read().decode(errors="replace")
    proc.stdout.close()
    assert proc.returncode == 0, output[-4000:]
    return {"anon_mb": peak_anon / 1e3, "maxrss_mb": usage.ru_maxrss / 1e3,
            "seconds": time.perf_counter() - t0}


def run_config(pack: Path) -> dict:
    return {
        "data": str(pack),
        "labels": {"wb97x_dz": ["energy", "forces"], "ccsd(t)_cbs": ["energy"]},
        "split": {"train": 0.9, "valid": 0.05, "test": 256, "seed": 0},
        "model": {"n_features": 16, "n_interactions": 1, "n_atom_layers": 1,
                  "n_sensitivities": 8, "tensor_order": 0},
        "train": {"max_steps": 200, "steps_per_epoch": 100, "max_epochs": 1000,
                  "valid_sample": 256, "cache_structures": 0, "batch_size": 64,
                  "eval_batch_size": 128, "device": "cpu", "progress_every": 0,
                  "patience": None},
    }


def pack_and_train(folder: Path, n: int) -> dict:
    folder.mkdir()
    info = write_synthetic_ani(folder / "ani.h5", n, seed=n)
    spec = folder / "spec.yaml"
    spec.write_text(yaml.safe_dump(synthetic_spec(folder / "ani.h5")))
    pack = run_measured(["data", "pack", str(spec), "--out", str(folder / "pack")])
    (folder / "ani.h5").unlink()  # the pack is all training reads
    config = folder / "run.yaml"
    config.write_text(yaml.safe_dump(run_config(folder / "pack")))
    train = run_measured(["train", str(config), "--out", str(folder / "run")])
    assert (folder / "run" / "model.pt").is_file()
    return {"n": n, "atoms": info["atoms"], "pack": pack, "train": train,
            "pack_mb": sum(p.stat().st_size for p in (folder / "pack").iterdir()) / 1e6}


def test_training_memory_does_not_grow_with_the_pack(tmp_path):
    small, large = (pack_and_train(tmp_path / f"n{n}", n) for n in SIZES)
    for r in (small, large):
        print(f"{r['n']:>9} conformers, pack {r['pack_mb']:.0f} MB: pack peak anon "
              f"{r['pack']['anon_mb']:.0f} MB (maxrss {r['pack']['maxrss_mb']:.0f} MB); "
              f"train peak anon {r['train']['anon_mb']:.0f} MB (maxrss "
              f"{r['train']['maxrss_mb']:.0f} MB), {r['train']['seconds']:.0f} s")
    assert large["pack_mb"] > 8 * small["pack_mb"]
    bound = (1 + RELATIVE) * small["train"]["anon_mb"] + ALLOWANCE_MB
    assert large["train"]["anon_mb"] < bound, (small, large)
    assert small["train"]["anon_mb"] > 100  # the polling saw the process (torch alone)
