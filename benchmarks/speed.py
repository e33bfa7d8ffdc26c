"""Speed and memory of the multi-fidelity HIP-NN (mfgnn.nn).

    python benchmarks/speed.py [--device cpu|cuda] [--steps 8] [--batch 64] [--quick]

Prints, each case run in a fresh subprocess so that peak memory is its own:

1. training throughput on rMD17 aspirin batches (energy + force loss with create_graph,
   backward, Adam step): steps/s and molecules/s, n_features 128, 2 interactions,
   3 atom layers, 20 sensitivities, tensor_order 0 and 2, two fidelities (energies of
   both, forces of the lower one);
2. energy + forces of one 1000-atom H/C/N/O structure at liquid-like density;
3. the environment sum env_{i,ν,b} = Σ_j s^ν(r_ij) z_{j,b} of one interaction layer in
   a force-training step (forward, forces with create_graph, backward) for the
   formulations tried: naive (pairs × ν × b tensor + index_add), one index_add per
   sensitivity, torch.sparse COO matmul, and the padded-neighbour bmm used by mfgnn.nn;
   gradients are compared with the naive ones.

Times are medians of wall-clock time; "cpu ms" is the process CPU time (all threads),
which on a shared machine with --threads 1 approximates the uncontended time. Peak
memory: CUDA max_memory_allocated, else the growth of the process's peak resident set
(ru_maxrss) over the resident set before the measured work.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys

import numpy as np
import torch

import _common
from _common import CUTOFF, HCNO, Table, aspirin_batches, build_model, model_config, synchronize, time_call


# ---------------------------------------------------------------- measurement helpers
def _rss_mb() -> float:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return float(line.split()[1]) / 1024.0
    except OSError:
        pass
    return _peak_mb()


def _peak_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024.0 if sys.platform != "darwin" else peak / 2**20


class Memory:
    """Peak memory (MiB) of the work between start() and stop()."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def start(self) -> None:
        synchronize(self.device)
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        else:
            self.base = _rss_mb()

    def stop(self) -> float:
        synchronize(self.device)
        if self.device.type == "cuda":
            return (torch.cuda.max_memory_allocated() - self.base) / 2**20
        return _peak_mb() - self.base


# ---------------------------------------------------------------- inputs
def liquid_cluster(n_side: int = 10, spacing: float = 2.15, seed: int = 0):
    """n_side³ H/C/N/O atoms on a jittered cubic grid, ~0.1 atoms/Å³ (organic liquid)."""
    g = torch.Generator().manual_seed(seed)
    grid = torch.stack(torch.meshgrid(*[torch.arange(n_side)] * 3, indexing="ij"), -1).reshape(-1, 3)
    pos = grid * spacing + 0.3 * torch.randn(grid.shape, generator=g)
    z = torch.tensor(HCNO)[torch.multinomial(torch.tensor([0.5, 0.3, 0.1, 0.1]), len(grid), True, generator=g)]
    return z, pos


def make_model(tensor_order: int, features: int, device):
    return build_model(model_config(n_features=features, tensor_order=tensor_order), device=device)


# ---------------------------------------------------------------- cases (run in a subprocess)
def case_train(args, device) -> dict:
    model = make_model(args.tensor_order, args.features, device)
    batches, graph_s = aspirin_batches(args.steps + 2, args.batch, device=device)
    step = _common.training_step(model, batches)
    mem = Memory(device)
    step()
    mem.start()
    t = time_call(step, args.steps, warmup=1, device=device)
    peak = mem.stop()
    return {"step_s": t.median, "best_s": t.min, "steps_per_s": 1 / t.median,
            "mol_per_s": args.batch / t.median, "peak_mb": peak, "graph_ms": graph_s * 1e3,
            "cpu_s": t.cpu_median}


def case_large(args, device) -> dict:
    from torch_geometric.data import Data

    from mfgnn.data.graph import radius_graph

    model = make_model(args.tensor_order, args.features, device).eval()
    z, pos = liquid_cluster()
    data = Data(z=z, pos=pos).to(device)
    graph_ms = 1e3 * time_call(lambda: radius_graph(data.pos, CUTOFF), 1, device=device).min
    data.edge_index = radius_graph(data.pos, CUTOFF)
    mem = Memory(device)
    model(data, forces=True)
    mem.start()
    t = time_call(lambda: model(data, forces=True), max(args.steps // 2, 3), device=device)
    return {"ef_s": t.median, "cpu_s": t.cpu_median, "peak_mb": mem.stop(), "graph_ms": graph_ms,
            "pairs": int(data.edge_index.shape[1]), "atoms": int(z.numel())}


def _envsum_variants():
    def naive(s, z, i, j, n):
        return torch.zeros(n, s.shape[1], z.shape[1], dtype=z.dtype, device=z.device).index_add(
            0, i, s[:, :, None] * z[j][:, None, :])

    def loop(s, z, i, j, n):
        zj = z[j]
        return torch.stack([torch.zeros(n, z.shape[1], dtype=z.dtype, device=z.device).index_add(0, i, s[:, v, None] * zj)
                            for v in range(s.shape[1])], 1)

    def sparse(s, z, i, j, n):
        nu = s.shape[1]
        rows = (i[:, None] * nu + torch.arange(nu, device=z.device)).reshape(-1)
        mat = torch.sparse_coo_tensor(torch.stack([rows, j.repeat_interleave(nu)]), s.reshape(-1), (n * nu, n))
        return torch.sparse.mm(mat, z).view(n, nu, -1)

    return {"naive": naive, "per_sensitivity": loop, "torch_sparse_coo": sparse}


def case_envsum(args, device) -> dict:
    from mfgnn.nn import InteractionLayer, build_pair_geometry

    b = aspirin_batches(1, args.batch, device=device)[0][0]
    n, feats = b.num_nodes, args.features
    torch.manual_seed(0)
    layer = InteractionLayer(feats, feats, n_sensitivities=20).to(device)
    z = (0.5 * torch.randn(n, feats)).to(device)
    weight = layer.int_weights.permute(0, 2, 1).reshape(-1, feats)  # V^ν_ab as a (ν·b, a) matrix

    def pre(pos):
        if args.variant == "padded_bmm":
            geom = build_pair_geometry(pos, b.edge_index, CUTOFF)
            env = layer.environment(z, layer.sensitivity(geom.r), geom)  # (N, ν, b)
        else:
            j, i = b.edge_index
            s = layer.sensitivity((pos[j] - pos[i]).norm(dim=-1))
            env = _envsum_variants()[args.variant](s, z, i, j, n)
        return torch.nn.functional.softplus(env.reshape(n, -1) @ weight)

    def step():
        layer.zero_grad(set_to_none=True)
        pos = b.pos.clone().requires_grad_(True)
        energy = pre(pos).sum()
        (grad,) = torch.autograd.grad(energy, pos, create_graph=True)
        grad.square().sum().backward()
        return layer.int_weights.grad, layer.sensitivity.mu.grad

    mem = Memory(device)
    step()
    mem.start()
    t = time_call(step, max(args.steps // 2, 3), device=device)
    peak = mem.stop()
    gv, _ = step()
    gv = torch.zeros_like(layer.int_weights) if gv is None else gv  # no gradient reached V at all
    return {"s": t.median, "cpu_s": t.cpu_median, "peak_mb": peak,
            "pairs": int(b.edge_index.shape[1]),
            "grad_V": gv.flatten()[:4096].double().cpu().tolist()}


CASES = {"train": case_train, "large": case_large, "envsum": case_envsum}


def run_case(name: str, args, **extra) -> dict:
    cmd = [sys.executable, __file__, "--case", name, "--device", args.device, "--steps", str(args.steps),
           "--batch", str(args.batch), "--features", str(args.features), "--threads", str(args.threads)]
    for key, value in extra.items():
        cmd += [f"--{key.replace('_', '-')}", str(value)]
    res = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    if res.returncode != 0:
        return {"error": (res.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(res.stdout.strip().splitlines()[-1])


def failed(table: Table, first, r: dict) -> str | None:
    """The row of a case that failed in its subprocess, else None."""
    return f"{table.row(first)} failed: {r['error']}" if "error" in r else None


def tensor_order_rows(name: str, args, table: Table, cells) -> dict:
    """Run case ``name`` for tensor orders 0 and 2, print a row each (``cells(result)``
    after the order); returns the last result."""
    print(table.header())
    r: dict = {}
    for order in (0, 2):
        r = run_case(name, args, tensor_order=order)
        print(failed(table, order, r) or table.row(order, *cells(r)))
    return r


TRAIN = Table(("tensor_order", ">12", "d"), ("step ms", ">9", ".1f"), ("best ms", ">9", ".1f"),
              ("cpu ms", ">9", ".1f"), ("steps/s", ">8", ".2f"), ("mol/s", ">8", ".1f"),
              ("peak MiB", ">9", ".1f"))
LARGE = Table(("tensor_order", ">12", "d"), ("E+F ms", ">9", ".1f"), ("cpu ms", ">9", ".1f"),
              ("graph ms", ">9", ".1f"), ("pairs", ">8", "d"), ("peak MiB", ">9", ".1f"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--steps", type=int, default=6, help="measured training steps per case")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--features", type=int, default=128)
    p.add_argument("--quick", action="store_true", help="skip the slow naive formulations")
    _common.add_threads_argument(p)
    p.add_argument("--case", help=argparse.SUPPRESS)
    p.add_argument("--tensor-order", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--variant", default="padded_bmm", help=argparse.SUPPRESS)
    args = p.parse_args()
    device = torch.device(args.device)
    _common.set_threads(args.threads)
    if args.case:
        print(json.dumps(CASES[args.case](args, device)))
        return

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"mfgnn.nn speed | {_common.describe_machine(device)} | load avg {load:.2f} | batch {args.batch} "
          f"aspirin (21 atoms) | n_features {args.features}, 2 interactions x 3 atom layers, "
          "20 sensitivities, 2 fidelities")
    print("\n1) training step: energies (2 fidelities) + forces (1) with create_graph, backward, Adam")
    r = tensor_order_rows("train", args, TRAIN, lambda r: (
        r["step_s"] * 1e3, r["best_s"] * 1e3, r["cpu_s"] * 1e3, r["steps_per_s"], r["mol_per_s"],
        r["peak_mb"]))
    print(f"   (radius graph of one batch, not in the step: {r.get('graph_ms', float('nan')):.1f} ms)")

    print("\n2) one 1000-atom H/C/N/O structure (~0.1 atoms/Å^3): energies + forces of both fidelities")
    tensor_order_rows("large", args, LARGE, lambda r: (
        r["ef_s"] * 1e3, r["cpu_s"] * 1e3, r["graph_ms"], r["pairs"], r["peak_mb"]))

    print("\n3) environment sum of one interaction layer (b = a = n_features, ν = 20), force-training step")
    variants = ["padded_bmm", "torch_sparse_coo"] + ([] if args.quick else ["per_sensitivity", "naive"])
    results = {v: run_case("envsum", args, variant=v) for v in variants}
    ref = results.get("naive", results["padded_bmm"])
    envsum = Table(("formulation", ">18", ""), ("ms", ">9", ".1f"), ("cpu ms", ">9", ".1f"),
                   ("peak MiB", ">9", ".1f"),
                   ("max rel err dL/dV vs " + ("naive" if "naive" in results else "padded"), ">28", ".2e"))
    print(envsum.header())
    for v in variants:
        r = results[v]
        if "error" in r:
            print(failed(envsum, v, r))
            continue
        gv, gr = np.asarray(r["grad_V"]), np.asarray(ref["grad_V"])
        err = float(np.abs(gv - gr).max() / np.abs(gr).max())
        flag = "  <- WRONG double backward" if err > 1e-3 else ""
        print(envsum.row(v, r["s"] * 1e3, r["cpu_s"] * 1e3, r["peak_mb"], err) + flag)
    print(f"   ({results['padded_bmm'].get('pairs', 0)} pairs; mfgnn.nn uses padded_bmm)")


if __name__ == "__main__":
    main()
