#!/usr/bin/env python
"""ANI-1x scale: packing, loading and training on a synthetic 4.9 M-conformer file.

All on a synthetic ANI-1x-layout HDF5 file (:func:`mfgnn.data.synthetic.write_synthetic_ani`:
random CHNO molecules, ~15 atoms per conformer, ωB97x energies+forces, CCSD(T) energies on
~10 % of the rows) made in a temporary folder that is removed at the end:

(a) peak memory and wall time of making the file and of ``mfgnn data pack`` on it, each in
    a fresh process;
(b) loader throughput (structures/s) of random batches of 256 through the training batch
    path (:class:`~mfgnn.data.collate_mapped.MappedStructureStore` over the pack, radius
    graph at the model cutoff) with 0, 1 and 2 worker processes;
(c) peak memory and time per step of a 200-step ``mfgnn train`` run on the pack (one
    process), then of the same run under ``torchrun --nproc_per_node=2`` (gloo);
(d) with CUDA: time per step and GPU utilisation of the run on the GPU (else skipped).

Memory: "peak anon" is the largest anonymous resident memory of the process tree, polled
from /proc every 10 ms (what the processes allocate); "maxrss" is ``ru_maxrss`` of the
process (includes the pack's memory-mapped pages, which are page cache).

Usage: python benchmarks/scale.py [--n-conformers 4900000] [--quick] [--dir TMP]
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch
import yaml

import _common

STEPS = 200
MODEL = {"n_features": 64, "n_interactions": 2, "n_atom_layers": 2, "n_sensitivities": 16,
         "tensor_order": 0, "cutoff": 6.5}


def _status(pid: int, key: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants (from /proc/*/stat)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
                parents.setdefault(ppid, []).append(int(entry))
            except (OSError, ValueError, IndexError):
                pass
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(parents.get(p, []))
    return out


def run_measured(cmd: list[str], env: dict | None = None, poll=None) -> dict:
    """Run ``cmd``; returns wall seconds, peak anonymous RSS of its process tree (MB,
    polled) and its ``ru_maxrss`` (MB). ``poll()``, when given, is called at each poll."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out: list[bytes] = []
    reader = threading.Thread(target=lambda: out.append(proc.stdout.read()), daemon=True)
    reader.start()
    peak, polls = 0, 0
    while True:
        pid, code, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        tree = _tree(proc.pid) if polls % 10 == 0 else tree
        peak = max(peak, sum(_status(p, "RssAnon") for p in tree))
        if poll is not None:
            poll()
        polls += 1
        time.sleep(0.01)
    reader.join()
    proc.returncode = os.waitstatus_to_exitcode(code)
    text = b"".join(out).decode(errors="replace")
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{text[-4000:]}")
    return {"seconds": time.perf_counter() - t0, "anon_mb": peak / 1e3,
            "maxrss_mb": usage.ru_maxrss / 1e3, "output": text}


def make_file(folder: Path, n: int) -> dict:
    code = ("import sys; from mfgnn.data.synthetic import write_synthetic_ani; "
            "print(write_synthetic_ani(sys.argv[1], int(sys.argv[2])))")
    r = run_measured([sys.executable, "-c", code, str(folder / "ani.h5"), str(n)])
    print(f"(a) synthetic file: {n:,} conformers, {(folder / 'ani.h5').stat().st_size / 1e9:.2f} "
          f"GB, {r['seconds']:.0f} s, peak anon {r['anon_mb']:.0f} MB, maxrss "
          f"{r['maxrss_mb']:.0f} MB; {r['output'].strip().splitlines()[-1]}")
    return r


def pack(folder: Path) -> None:
    from mfgnn.data.synthetic import synthetic_spec

    spec = folder / "spec.yaml"
    spec.write_text(yaml.safe_dump(synthetic_spec(folder / "ani.h5")))
    r = run_measured([sys.executable, "-m", "mfgnn", "data", "pack", str(spec), "--out",
                      str(folder / "pack")])
    size = sum(p.stat().st_size for p in (folder / "pack").iterdir()) / 1e9
    print(f"(a) mfgnn data pack: {r['seconds']:.0f} s, peak anon {r['anon_mb']:.0f} MB, "
          f"maxrss {r['maxrss_mb']:.0f} MB, pack {size:.2f} GB")


def loader_throughput(folder: Path, n_batches: int) -> None:
    from mfgnn.data.collate_mapped import MappedStructureStore
    from mfgnn.data.packed import PackedDataset

    ds = PackedDataset(folder / "pack", cutoff=MODEL["cutoff"])
    store = MappedStructureStore(ds, np.arange(len(ds)), [0, 1])
    rng = np.random.default_rng(0)
    for workers in (0, 1, 2):
        batches = [rng.integers(0, len(ds), 256) for _ in range(n_batches)]
        loader = iter(store.loader(batches, num_workers=workers))
        next(loader)  # workers started, first batch made
        t0 = time.perf_counter()
        atoms = sum(int(b.num_nodes) for b in loader)
        dt = time.perf_counter() - t0
        print(f"(b) loader, random batches of 256, {workers} workers: "
              f"{256 * (n_batches - 1) / dt:,.0f} structures/s ({atoms / dt:,.0f} atoms/s)")


def run_config(folder: Path, device: str) -> Path:
    config = {
        "data": str(folder / "pack"),
        "labels": {"wb97x_dz": ["energy", "forces"], "ccsd(t)_cbs": ["energy"]},
        "split": {"train": 0.9, "valid": 0.05, "test": 1024, "seed": 0},
        "model": MODEL,
        "train": {"max_steps": STEPS, "steps_per_epoch": 50, "max_epochs": 1000,
                  "valid_sample": 256, "cache_structures": 0, "batch_size": 64,
                  "eval_batch_size": 256, "device": device, "progress_every": 0,
                  "patience": None},
    }
    path = folder / f"run_{device}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def epoch_seconds(run: Path) -> float:
    with open(run / "metrics.csv", newline="") as fh:
        return sum(float(row["seconds"]) for row in csv.DictReader(fh))


def train(folder: Path, label: str, cmd_prefix: list[str], device: str = "cpu",
          env: dict | None = None, poll=None) -> None:
    out = folder / f"run_{label}"
    shutil.rmtree(out, ignore_errors=True)
    cmd = [*cmd_prefix, "-m", "mfgnn", "train", str(run_config(folder, device)), "--out", str(out)]
    r = run_measured(cmd, env=env, poll=poll)
    steps = epoch_seconds(out)
    print(f"(c) train {label}: {STEPS} steps, {steps / STEPS * 1e3:.0f} ms/step "
          f"(epochs incl. validation of 256 rows), wall {r['seconds']:.0f} s, peak anon "
          f"{r['anon_mb']:.0f} MB (process tree), maxrss {r['maxrss_mb']:.0f} MB")


def gpu(folder: Path) -> None:
    if not torch.cuda.is_available():
        print("(d) GPU: skipped (torch.cuda.is_available() is False)")
        return
    samples: list[float] = []

    def poll() -> None:
        try:
            samples.append(float(torch.cuda.utilization()))
        except Exception:  # pynvml missing: ask nvidia-smi
            q = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu",
                                "--format=csv,noheader,nounits"], capture_output=True, text=True)
            if q.returncode == 0 and q.stdout.strip():
                samples.append(float(q.stdout.split()[0]))

    train(folder, "cuda", [sys.executable], device="cuda", poll=poll)
    busy = [s for s in samples if s > 0]
    print(f"(d) GPU utilisation while training: mean {np.mean(busy) if busy else 0:.0f} % over "
          f"{len(busy)} busy samples of {len(samples)} ({torch.cuda.get_device_name(0)})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-conformers", type=int, default=4_900_000)
    parser.add_argument("--quick", action="store_true", help="100 k conformers (smoke test)")
    parser.add_argument("--dir", type=Path, help="folder for the temporary files")
    parser.add_argument("--no-torchrun", action="store_true", help="skip the 2-process run")
    args = parser.parse_args(argv)
    n = 100_000 if args.quick else args.n_conformers
    print(f"{_common.describe_machine()}\n")
    t0 = time.perf_counter()
    folder = Path(tempfile.mkdtemp(prefix="mfgnn_scale_", dir=args.dir))
    try:
        make_file(folder, n)
        pack(folder)
        (folder / "ani.h5").unlink()
        loader_throughput(folder, 20 if args.quick else 40)
        train(folder, "1 process", [sys.executable])
        if not args.no_torchrun:
            train(folder, "torchrun 2 processes (gloo)",
                  [sys.executable, "-m", "torch.distributed.run", "--standalone",
                   "--nproc_per_node=2"], env={"GLOO_SOCKET_IFNAME": "lo"})
        gpu(folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(f"total {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
