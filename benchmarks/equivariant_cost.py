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

import torch

import _common
from _common import Table, aspirin_batches, build_model, h2co_batches, model_config, time_call


def make_model(tensor_order: int, equivariant: dict | None, features: int = 64):
    config = model_config(n_features=features, tensor_order=tensor_order, equivariant=equivariant)
    return build_model(config, (1, 6, 8), dtype=torch.float32)


def measure(model, batches, steps: int) -> dict[str, float]:
    count = iter(range(10**9))

    def energy_forces():
        model(batches[next(count) % len(batches)], forces=True)

    train = time_call(_common.training_step(model, batches), steps, warmup=2)
    ef = time_call(energy_forces, steps, warmup=2)
    return {"train_ms": 1e3 * train.median, "train_cpu_ms": 1e3 * train.cpu_median,
            "ef_ms": 1e3 * ef.median, "ef_cpu_ms": 1e3 * ef.cpu_median}


TABLE = Table(("model", "<62", ""), ("params", ">8", "d"), ("train ms", ">9", ".1f"),
              ("cpu ms", ">8", ".1f"), ("x base", ">7", ".2f"), ("E+F ms", ">8", ".1f"),
              ("cpu ms", ">8", ".1f"), ("x base", ">7", ".2f"))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=10, help="timed repetitions per case (median)")
    _common.add_threads_argument(parser, default=1)
    parser.add_argument("--lmax", type=int, default=2)
    parser.add_argument("--channels", type=int, default=32)
    parser.add_argument("--layers", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="3 timed steps")
    args = parser.parse_args(argv)
    _common.set_threads(args.threads)
    steps = 3 if args.quick else args.steps
    eq = {"lmax": args.lmax, "channels": args.channels, "layers": args.layers, "position": "after"}
    tag = f"+ equivariant (lmax {args.lmax}, {args.channels} ch, {args.layers} layer{'s' * (args.layers > 1)})"
    models = [("HIP-NN (tensor_order 0)", 0, None), ("HIP-NN-TS (tensor_order 2)", 2, None),
              (f"HIP-NN {tag}", 0, eq), (f"HIP-NN-TS {tag}", 2, eq)]
    sets = [("H2CO x 32", h2co_batches(4, 32)), ("aspirin x 64", aspirin_batches(3, 64)[0])]
    print(f"{_common.describe_machine()}, float32, n_features 64, median of {steps} steps")
    for name, batches in sets:
        pairs = batches[0].edge_index.shape[1]
        print(f"\n{name}: {batches[0].num_nodes} atoms, {pairs} directed pairs (6.5 Å)")
        print(TABLE.header())
        print(TABLE.rule())
        base = None
        for label, order, equi in models:
            model = make_model(order, equi)
            r = measure(model, batches, steps)
            base = base or r
            print(TABLE.row(label, _common.n_parameters(model), r["train_ms"], r["train_cpu_ms"],
                            r["train_cpu_ms"] / base["train_cpu_ms"], r["ef_ms"], r["ef_cpu_ms"],
                            r["ef_cpu_ms"] / base["ef_cpu_ms"]))


if __name__ == "__main__":
    main()
