#!/usr/bin/env python
"""Data-layer speed and memory benchmark (prints measured figures; a few minutes on 2 cores).

1. rMD17 aspirin (1000 frames, 21 atoms): load, then a full pass over all ``Data`` items
   with edges at 6.5 Å, and per-batch graph construction for DataLoader batches.
2. ``radius_graph`` time per atom on random systems of 500 / 2000 / 5000 atoms (density
   0.1 atoms/Å^3, cutoff 6.5 Å): cell list vs all pairs (plus 20000 and 50000 atoms, cell
   list only).
3. Peak memory while opening and reading an ANI-layout HDF5 file of 1 M conformers
   (4-atom molecules in 10 groups) made on the fly in a temporary folder, compared with a
   100 k-conformer file: each measurement runs in a fresh process (``ru_maxrss`` and
   ``tracemalloc``), reading 5000 random and 5000 sequential items.

Usage: python benchmarks/data_speed.py [--data ../shared/data] [--quick] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import _common
from _common import CUTOFF, DENSITY, SHARED_DATA, Table, time_call


def bench_rmd17(data: Path) -> None:
    from torch_geometric.loader import DataLoader

    from mfgnn.data import load_dataset, radius_graph

    path = data / "rmd17" / "rmd17_aspirin_train_01.npz"
    spec = {"fidelities": {
        "pbe": {"path": str(path), "energy_unit": "kcal/mol"},
        "md17": {"path": str(path), "energy_unit": "kcal/mol",
                 "keys": {"energy": "old_energies", "forces": "old_forces"}}}}
    t0 = time.perf_counter()
    ds = load_dataset(spec, cutoff=CUTOFF)
    t_load = time.perf_counter() - t0
    t0 = time.perf_counter()
    n_edges = sum(ds[i].edge_index.shape[1] for i in range(len(ds)))
    t_pass = time.perf_counter() - t0
    print("## rMD17 aspirin (1000 frames x 21 atoms, 2 fidelities, cutoff 6.5 Å)")
    print(f"load (npz read, checks, unit conversion):  {t_load * 1e3:8.1f} ms")
    print(f"full pass, 1000 Data with edges:           {t_pass * 1e3:8.1f} ms "
          f"({t_pass / len(ds) * 1e6:.0f} µs/item, {n_edges / len(ds):.0f} edges/structure)")
    plain = load_dataset(spec)
    t0 = time.perf_counter()
    batches = list(DataLoader(plain, batch_size=64))
    t_collate = time.perf_counter() - t0
    t_graph = time_call(lambda: [radius_graph(b.pos, CUTOFF, b.batch) for b in batches], 3).min
    print(f"full pass without edges + collate (B=64):  {t_collate * 1e3:8.1f} ms")
    print(f"radius_graph on those 16 batches:          {t_graph * 1e3:8.1f} ms "
          f"({t_graph / 16 * 1e3:.2f} ms per batch of 64 x 21 atoms)")
    print()


def bench_radius(sizes: list[int]) -> None:
    from mfgnn.data.graph import radius_graph_all_pairs, radius_graph_cell_list

    print("## radius_graph, one random structure (0.1 atoms/Å^3, cutoff 6.5 Å), best of 3")
    table = Table(("atoms", ">7", "d"), ("edges/atom", ">10", ".1f"),
                  ("cell list µs/atom", ">18", ".1f"), ("ns/edge", ">8", ".0f"),
                  ("all pairs µs/atom", ">18", ".1f"))
    print(table.header())
    for n in sizes:
        g = torch.Generator().manual_seed(n)
        pos = torch.rand(n, 3, generator=g) * (n / DENSITY) ** (1 / 3)
        e = radius_graph_cell_list(pos, CUTOFF)
        t_cell = time_call(lambda: radius_graph_cell_list(pos, CUTOFF), 3).min
        t_all = None
        if n <= 5000:
            t_all = time_call(lambda: radius_graph_all_pairs(pos, CUTOFF), 2).min / n * 1e6
            assert torch.equal(radius_graph_all_pairs(pos, CUTOFF), e)
        print(table.row(n, e.shape[1] / n, t_cell / n * 1e6, t_cell / e.shape[1] * 1e9, t_all))
    print("(edges/atom grows with size: fewer atoms sit near the box surface)")
    print()


def make_ani_file(path: Path, n_conformers: int, n_groups: int = 10) -> None:
    import h5py

    rng = np.random.default_rng(0)
    rows = n_conformers // n_groups
    base = np.array([[0.0, 0.0, 0.0], [1.2, 0.0, 0.0], [-0.5, 0.9, 0.0], [-0.5, -0.9, 0.0]])
    with h5py.File(path, "w") as f:
        for g in range(n_groups):
            grp = f.create_group(f"C1H2O1_{g:02d}")
            grp["atomic_numbers"] = np.array([6, 8, 1, 1], dtype=np.uint8)
            grp["coordinates"] = (base + rng.normal(0, 0.05, (rows, 4, 3))).astype(np.float32)
            grp["wb97x_dz.energy"] = -114.5 + rng.normal(0, 0.01, rows)
            grp["wb97x_dz.forces"] = rng.normal(0, 0.02, (rows, 4, 3)).astype(np.float32)
            cc = -114.3 + rng.normal(0, 0.01, rows)
            cc[::10] = np.nan
            grp["ccsd(t)_cbs.energy"] = cc


_CHILD = r"""
import json, sys, time, tracemalloc
import numpy as np
from mfgnn.data import load_dataset

def status(field):  # kB, Linux only
    try:
        for line in open("/proc/self/status"):
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return -1

try:  # reset the RSS high-water mark after the imports (Linux >= 4.0)
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")
except OSError:
    pass
rss0 = status("VmRSS")
path = sys.argv[1]
spec = {"fidelities": {lv: {"path": path, "format": "ani-h5", "energy_key": f"{lv}.energy"}
                       for lv in ("wb97x_dz", "ccsd(t)_cbs")}}
tracemalloc.start()
t0 = time.perf_counter()
ds = load_dataset(spec)
t_open = time.perf_counter() - t0
held, peak_open = tracemalloc.get_traced_memory()
tracemalloc.reset_peak()
idx = np.random.default_rng(0).integers(0, len(ds), 5000)
t0 = time.perf_counter()
for i in idx:
    ds[int(i)]
t_rand = time.perf_counter() - t0
t0 = time.perf_counter()
for i in range(5000):
    ds[i]
t_seq = time.perf_counter() - t0
_, peak_read = tracemalloc.get_traced_memory()
tracemalloc.stop()
print(json.dumps({"n": len(ds), "t_open": t_open, "t_rand": t_rand, "t_seq": t_seq,
                  "held": held, "peak_open": peak_open, "peak_read": peak_read,
                  "rss0": rss0, "hwm": status("VmHWM")}))
"""


def bench_h5_memory(sizes: list[int]) -> None:
    print("## lazy ANI-layout HDF5 (4-atom molecules, 2 fidelities): memory (fresh process each)")
    table = Table(("conformers", ">10", "d"), ("file MB", ">8", ".1f"),
                  ("coords+forces MB", ">17", ".1f"), ("open s", ">7", ".2f"),
                  ("held MB", ">8", ".1f"), ("open peak MB", ">13", ".1f"),
                  ("read peak MB", ">13", ".1f"), ("RSS peak MB", ">12", ".1f"),
                  ("random µs/item", ">15", ".0f"), ("seq µs/item", ">12", ".0f"))
    print(table.header())
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            path = Path(tmp) / f"ani_{n}.h5"
            make_ani_file(path, n)
            out = subprocess.run([sys.executable, "-c", _CHILD, str(path)], check=True,
                                 capture_output=True, text=True).stdout
            r = json.loads(out.strip().splitlines()[-1])
            arrays = n * 4 * 3 * 4 * 2 / 1e6
            rss = (r["hwm"] - r["rss0"]) / 1e3 if r["hwm"] > 0 else float("nan")
            print(table.row(r["n"], path.stat().st_size / 1e6, arrays, r["t_open"],
                            r["held"] / 1e6, r["peak_open"] / 1e6, r["peak_read"] / 1e6, rss,
                            r["t_rand"] / 5000 * 1e6, r["t_seq"] / 5000 * 1e6))
            path.unlink()
    print("held: python/numpy memory kept after opening (the (n, F) energy table, per-row "
          "flags, atom counts); open peak: transient maximum while opening; read peak: "
          "maximum while reading 5000 random + 5000 sequential items; RSS peak: growth of "
          "the process high-water mark after imports (includes HDF5 library buffers)")
    print()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=SHARED_DATA,
                        help="shared data folder (default: $MFGNN_SHARED_DATA or ../shared/data)")
    parser.add_argument("--quick", action="store_true", help="smaller sizes (smoke test)")
    _common.add_threads_argument(parser)
    args = parser.parse_args(argv)
    _common.set_threads(args.threads)
    print(f"{_common.describe_machine()}\n")
    t0 = time.perf_counter()
    bench_rmd17(args.data)
    bench_radius([500, 2000] if args.quick else [500, 2000, 5000, 20000, 50000])
    bench_h5_memory([10_000, 100_000] if args.quick else [100_000, 1_000_000])
    print(f"total {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
