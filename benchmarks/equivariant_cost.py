"""Cost of the optional E(3)-equivariant trunk block (mfgnn.nn.equivariant).

    python benchmarks/equivariant_cost.py [--steps 10] [--threads 1] [--lmax 2] [--channels 32]
                                          [--layers 1] [--quick]

For every model and batch it prints the median wall-clock time (and process CPU time) of

* one training step: energies of two fidelities + forces of the first with
  ``create_graph`` (``model(batch, forces=[...], training=True)``), an energy + force
  + hierarchicality loss, backward (a double backward through the forces) and an Adam
  step;
* one energy + forces call (``model(batch, forces=True)``, no graph kept),

on real geometries: 32 H2CO molecules (4 atoms each, ``mp2_ccsdt/ch2o_mp2_avtz_3601.npz``)
and 64 aspirin molecules (21 atoms, ``rmd17/rmd17_aspirin_train_01.npz``), float32, radius
graph at 6.5 Å built once per batch outside the timing.

Models (n_features 64, 2 interaction blocks, 3 atom layers, 20 sensitivities, two
fidelities): HIP-NN (tensor_order 0), HIP-NN-TS (tensor_order 2), and each of them with
the equivariant block after the last interaction block. The "× base" column is the
time relative to HIP-NN without the block on the same batch.

Use ``--threads 1`` (the default) on a shared machine: "cpu ms" is then close to the
uncontended time even when wall-clock times are inflated by other jobs.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
H2CO = DATA / "mp2_ccsdt" / "ch2o_mp2_avtz_3601.npz"
ASPIRIN = DATA / "rmd17" / "rmd17_aspirin_train_01.npz"
KCAL = 0.0433641  # eV per kcal/mol


def _batch(z_rows, pos_rows, energies, forces):
    """A PyG batch with a 6.5 Å radius graph and two-fidelity labels (eV, eV/Å)."""
    from torch_geometric.data import Batch, Data

    from mfgnn.data.graph import radius_graph

    data = [Data(z=torch.as_tensor(z, dtype=torch.long), pos=torch.as_tensor(p, dtype=torch.float32))
            for z, p in zip(z_rows, pos_rows)]
    b = Batch.from_data_list(data)
    b.edge_index = radius_graph(b.pos, 6.5, b.batch)
    e = torch.as_tensor(energies, dtype=torch.float64)
    b.energy = torch.stack([e, e + 0.1], 1)
    b.forces = torch.as_tensor(np.concatenate(forces), dtype=torch.float32)
    return b


def h2co_batches(n: int, size: int):
    d = np.load(H2CO)
    out = []
    for k in range(n):
        rows = range(k * size, (k + 1) * size)
        keep = [d["Z"][r] > 0 for r in rows]
        e = d["E"][list(rows)]
        out.append(_batch([d["Z"][r][m] for r, m in zip(rows, keep)], [d["R"][r][m] for r, m in zip(rows, keep)],
                          e - e.mean(), [d["F"][r][m] for r, m in zip(rows, keep)]))
    return out


def aspirin_batches(n: int, size: int):
    d = np.load(ASPIRIN)
    z = d["nuclear_charges"].astype(np.int64)
    out = []
    for k in range(n):
        rows = list(range(k * size, (k + 1) * size))
        e = d["energies"][rows] * KCAL
        out.append(_batch([z] * size, [d["coords"][r] for r in rows], e - e.mean(),
                          [d["forces"][r] * KCAL for r in rows]))
    return out


def make_model(tensor_order: int, equivariant: dict | None, features: int = 64):
    from mfgnn.nn import HIPNNConfig, MultiFidelityHIPNN

    torch.manual_seed(0)
    cfg = HIPNNConfig(n_features=features, n_interactions=2, n_atom_layers=3, n_sensitivities=20,
                      tensor_order=tensor_order, equivariant=equivariant)
    return MultiFidelityHIPNN(cfg, ["low", "high"], (1, 6, 8)).float()


def _timed(fn, steps: int, warmup: int = 2) -> tuple[float, float]:
    """Median wall-clock and process-CPU seconds of ``fn``."""
    for _ in range(warmup):
        fn()
    wall, cpu = [], []
    for _ in range(steps):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return float(np.median(wall)), float(np.median(cpu))


def measure(model, batches, steps: int) -> dict[str, float]:
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    counter = iter(range(10**9))

    def train_step():
        b = batches[next(counter) % len(batches)]
        out = model(b, forces=["low"], training=True)
        loss = (out["energy"] - b.energy).square().mean() + (out["forces"][:, 0] - b.forces).square().mean()
        loss = loss + 1e-3 * model.hierarchicality(out).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def energy_forces():
        b = batches[next(counter) % len(batches)]
        model(b, forces=True)

    train_wall, train_cpu = _timed(train_step, steps)
    ef_wall, ef_cpu = _timed(energy_forces, steps)
    return {"train_ms": 1e3 * train_wall, "train_cpu_ms": 1e3 * train_cpu,
            "ef_ms": 1e3 * ef_wall, "ef_cpu_ms": 1e3 * ef_cpu}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=10, help="timed repetitions per case (median)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--lmax", type=int, default=2)
    parser.add_argument("--channels", type=int, default=32)
    parser.add_argument("--layers", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="3 timed steps")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    steps = 3 if args.quick else args.steps
    eq = {"lmax": args.lmax, "channels": args.channels, "layers": args.layers, "position": "after"}
    tag = f"+ equivariant (lmax {args.lmax}, {args.channels} ch, {args.layers} layer{'s' * (args.layers > 1)})"
    models = [("HIP-NN (tensor_order 0)", 0, None), ("HIP-NN-TS (tensor_order 2)", 2, None),
              (f"HIP-NN {tag}", 0, eq), (f"HIP-NN-TS {tag}", 2, eq)]
    sets = [("H2CO x 32", h2co_batches(4, 32)), ("aspirin x 64", aspirin_batches(3, 64))]
    print(f"torch {torch.__version__}, {args.threads} thread(s), float32, n_features 64, median of {steps} steps")
    for name, batches in sets:
        pairs = batches[0].edge_index.shape[1]
        print(f"\n{name}: {batches[0].num_nodes} atoms, {pairs} directed pairs (6.5 Å)")
        head = f"{'model':<62} {'params':>8} {'train ms':>9} {'cpu ms':>8} {'x base':>7} {'E+F ms':>8} {'cpu ms':>8} {'x base':>7}"
        print(head)
        print("-" * len(head))
        base = None
        for label, order, equi in models:
            model = make_model(order, equi)
            n_par = sum(p.numel() for p in model.parameters())
            r = measure(model, batches, steps)
            base = base or r
            print(f"{label:<62} {n_par:>8d} {r['train_ms']:>9.1f} {r['train_cpu_ms']:>8.1f} "
                  f"{r['train_cpu_ms'] / base['train_cpu_ms']:>7.2f} {r['ef_ms']:>8.1f} {r['ef_cpu_ms']:>8.1f} "
                  f"{r['ef_cpu_ms'] / base['ef_cpu_ms']:>7.2f}")


if __name__ == "__main__":
    main()
