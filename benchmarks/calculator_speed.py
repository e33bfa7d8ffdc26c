"""Latency of one energy + forces call of the ASE calculator (mfgnn.calculator).

    python benchmarks/calculator_speed.py [--dtype float64|float32] [--threads N]
                                          [--sizes 100 1000 3000] [--device cpu|cuda]

Systems: the first frame of rMD17 aspirin (21 atoms, ``../shared/data/rmd17``) and
random H/C/N/O clusters at liquid-like density (0.1 atoms/Å³, no two atoms closer than
1 Å) of 100, 1000 and 3000 atoms, all non-periodic. Each call is a fresh
``get_forces`` after moving one atom, so nothing is cached: radius graph (cell list above
128 atoms), one trunk pass for every fidelity, one backward pass for the forces of the
calculator's fidelity.

Model: an untrained model of the benchmark architecture (n_features 128, 2 interactions,
3 atom layers, 20 sensitivities, tensor_order 2, cutoff 6.5 Å, two fidelities) with
elements H, C, N, O; the cost does not depend on the weights.

Prints per system: atoms, directed edges (and per atom), median latency of the call and
of the radius graph alone (ms), and the latency per atom and per edge (µs). At fixed
density the cost is linear in the number of edges; edges per atom still grow from 100 to
3000 atoms because a smaller cluster has a larger share of surface atoms, so µs/edge is
the size-independent figure and µs/atom approaches it times the bulk coordination.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from ase import Atoms

import _common
from _common import ASPIRIN, DENSITY, HCNO, Table, build_model, model_config, time_call
from mfgnn.calculator import MFGNNCalculator
from mfgnn.data.graph import radius_graph

MIN_DISTANCE = 1.0  # Å
#: the benchmark architecture with tensor_order 2
MODEL = model_config(tensor_order=2)


def aspirin() -> Atoms:
    data = np.load(ASPIRIN)
    return Atoms(numbers=data["nuclear_charges"], positions=data["coords"][0])


def cluster(n: int, seed: int = 0) -> Atoms:
    """``n`` random H/C/N/O atoms in a cube at DENSITY, pairwise distances > MIN_DISTANCE."""
    rng = np.random.default_rng(seed)
    side = (n / DENSITY) ** (1.0 / 3.0)
    cell = MIN_DISTANCE  # hash grid of side MIN_DISTANCE: only 27 cells to check
    grid: dict[tuple[int, int, int], list[int]] = {}
    pos = np.empty((n, 3))
    count = 0
    while count < n:
        p = rng.uniform(0.0, side, 3)
        key = tuple((p // cell).astype(int))
        near = [j for dx in (-1, 0, 1) for dy in (-1, 0, 1) for dz in (-1, 0, 1)
                for j in grid.get((key[0] + dx, key[1] + dy, key[2] + dz), ())]
        if near and np.min(np.linalg.norm(pos[near] - p, axis=1)) <= MIN_DISTANCE:
            continue
        grid.setdefault(key, []).append(count)
        pos[count] = p
        count += 1
    numbers = rng.choice(HCNO, size=n, p=[0.5, 0.25, 0.1, 0.15])
    return Atoms(numbers=numbers, positions=pos)


def measure(calc: MFGNNCalculator, atoms: Atoms, repeats: int) -> dict:
    atoms = atoms.copy()
    atoms.calc = calc
    step = [0]

    def call():
        step[0] += 1
        atoms.positions[0, 0] += 1e-4 * (-1) ** step[0]  # invalidates the cache
        atoms.get_forces()

    pos = torch.as_tensor(atoms.positions, dtype=calc.dtype, device=calc.device)
    edges = radius_graph(pos, calc.cutoff).shape[1]
    graph = 1e3 * time_call(lambda: radius_graph(pos, calc.cutoff), repeats, warmup=2,
                            device=calc.device).median
    total = 1e3 * time_call(call, repeats, warmup=2, device=calc.device).median
    return {"atoms": len(atoms), "edges": edges, "ms": total, "graph_ms": graph,
            "us_per_atom": 1e3 * total / len(atoms), "us_per_edge": 1e3 * total / max(edges, 1)}


TABLE = Table(("system", "<26", ""), ("atoms", ">7", "d"), ("edges", ">10", "d"),
              ("edges/atom", ">11", ".1f"), ("call ms", ">11", ".1f"), ("graph ms", ">10", ".2f"),
              ("µs/atom", ">10", ".1f"), ("µs/edge", ">9", ".2f"), sep="")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", choices=["float64", "float32"], default="float64")
    parser.add_argument("--device", default="cpu")
    _common.add_threads_argument(parser)
    parser.add_argument("--sizes", type=int, nargs="*", default=[100, 1000, 3000])
    parser.add_argument("--repeats", type=int, default=None, help="default: 20 / 10 / 5 / 3 by size")
    args = parser.parse_args()
    _common.set_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    calc = MFGNNCalculator(build_model(MODEL), fidelity="high", device=args.device, dtype=dtype)

    systems = [("aspirin (rMD17 frame 0)", aspirin())]
    systems += [(f"H/C/N/O cluster {n}", cluster(n)) for n in args.sizes]
    print(f"mfgnn calculator, energy + forces, {args.dtype}, {_common.describe_machine(args.device)}")
    print("model: n_features 128, 2 interactions, 3 atom layers, tensor_order 2, cutoff 6.5 Å, "
          "2 fidelities, untrained")
    print(TABLE.header())
    for name, atoms in systems:
        n = len(atoms)
        repeats = args.repeats or (20 if n < 100 else 10 if n <= 100 else 5 if n <= 1000 else 3)
        r = measure(calc, atoms, repeats)
        print(TABLE.row(name, r["atoms"], r["edges"], r["edges"] / r["atoms"], r["ms"],
                        r["graph_ms"], r["us_per_atom"], r["us_per_edge"]))


if __name__ == "__main__":
    main()
