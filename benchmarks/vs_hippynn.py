"""Speed and memory of mfgnn's HIP-NN against the reference code hippynn 0.1.3.

    python benchmarks/vs_hippynn.py [--quick] [--threads 1] [--hippynn-kernels pytorch]

Both codes build the same architecture: n_features 64 or 128, 2 interaction blocks of 3
atom layers, 20 sensitivities, soft_min 0.75 Å, soft_max 5.5 Å, cutoff 6.5 Å, tensor order
0, two energy heads (fidelities) on one trunk. A training step is: energies of both
fidelities, forces of the first with create_graph, loss = energy MSE + force MSE +
1e-3 × hierarchicality, backward (a double backward), Adam step; on rMD17 aspirin frames
(21 atoms, eV and eV/Å). Rounds of the two codes alternate in one process, and the
tables print the times and the ratio hippynn / mfgnn (> 1: mfgnn is faster).

Sections: (1) training step, F = 64 aspirin × 64 and F = 128 aspirin × 256, on the CPU
and, when torch.cuda.is_available(), on the GPU (hippynn with its Triton kernels);
(2) one-molecule energy + forces latency; (3) energy + forces of 1000- and 8000-atom
H/C/N/O clusters (~0.1 atoms/Å³); (4) training throughput (atom-steps/s) against batch
size; (5) memory per atom: the bytes autograd keeps for the backward of a training step
(torch.autograd.graph.saved_tensors_hooks, unique storages, parameters excluded; mfgnn's
per-thread scratch buffers of a few MiB are not in it) and the growth of the peak
resident set (VmHWM, reset through /proc/self/clear_refs) over a training step in a fresh
subprocess per code, from a baseline after glibc's malloc_trim; on the GPU
torch.cuda.max_memory_allocated.

Timing: on the CPU the process CPU time per call (one thread: about the uncontended wall
time on a shared machine), on the GPU the wall time; medians over all rounds. What each
code does in its own way is kept: mfgnn's data pipeline builds the radius graph once per
structure (its time per batch is printed, not in the step), hippynn finds pairs inside
its graph every call; in the latency and cluster cases both start from bare positions.
hippynn's kernels default to ``pytorch`` (its CPU default without numba: torch.compile'd
envsum; the dynamo cache limit is raised so new batch shapes do not fall back to eager);
``--hippynn-kernels numba`` uses numba (install it; slower here), ``_pytorch_raw`` eager.
Needs ``pip install hippynn==0.1.3`` (the ``bench`` extra); without it this prints how
to install it and exits.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import warnings

import numpy as np
import torch

import _common
from _common import ASPIRIN, Table, aspirin_batches, build_model, model_config, time_call

HINT = "pip install hippynn==0.1.3   (or: pip install -e '.[bench]')"
SOFT = {"soft_min": 0.75, "soft_max": 5.5, "cutoff": 6.5, "tensor_order": 0, "n_interactions": 2,
        "n_atom_layers": 3, "n_sensitivities": 20}
os.environ.setdefault("HIPPYNN_USE_CUSTOM_KERNELS", "False")  # chosen below, per device
os.environ.setdefault("TORCHINDUCTOR_COMPILE_THREADS", "1")
try:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import hippynn
except ImportError:
    hippynn = None


# ---------------------------------------------------------------- the two models
def mfgnn_model(features: int, device):
    return build_model(model_config(n_features=features, **SOFT), device=device)


class Hippynn:
    """The same HIP-NN built with hippynn's graph API: species/positions inputs, a Hipnn
    network (its own open-boundary pair finder), two HEnergy heads and the forces of the
    first; ``module(Z, R)`` returns (E_0, E_1, F_0, hierarchicality_0, hierarchicality_1)."""

    def __init__(self, features: int, device) -> None:
        from hippynn.graphs import GraphModule, inputs, networks, physics, targets

        torch.manual_seed(0)
        species, positions = inputs.SpeciesNode(db_name="Z"), inputs.PositionsNode(db_name="R")
        net = networks.Hipnn("net", (species, positions), module_kwargs=dict(
            possible_species=[0, 1, 6, 7, 8], n_features=features, n_sensitivities=20,
            dist_soft_min=SOFT["soft_min"], dist_soft_max=SOFT["soft_max"],
            dist_hard_max=SOFT["cutoff"], n_interaction_layers=2, n_atom_layers=3))
        heads = [targets.HEnergyNode(f"E{t}", net) for t in (0, 1)]
        force = physics.GradientNode("F0", (heads[0], positions), sign=-1)
        self.module = GraphModule([species, positions], [heads[0].mol_energy, heads[1].mol_energy, force,
                                                        heads[0].hierarchicality, heads[1].hierarchicality])
        self.module.to(device)

    def __call__(self, z, r):
        return self.module(z, r.detach().requires_grad_(True))


def set_hippynn_kernels(name: str, device) -> str:
    """Activate hippynn's envsum kernels ``name`` (on a GPU: Triton when it is available)."""
    if torch.device(device).type == "cuda" and name in ("auto", "pytorch"):
        hippynn.custom_kernels.populate_custom_kernel_availability()
        if "triton" in hippynn.custom_kernels.CUSTOM_KERNELS_AVAILABLE:
            name = "triton"
    active = hippynn.custom_kernels.set_custom_kernels(name)
    hippynn.settings.WARN_LOW_DISTANCES = False
    if active == "pytorch":
        import torch._dynamo as dynamo

        dynamo.config.cache_size_limit = max(dynamo.config.cache_size_limit, 64)
    return active


# ---------------------------------------------------------------- inputs and steps
def aspirin_arrays(batch: int, n_batches: int, device):
    """Per batch: mfgnn's PyG batch and hippynn's (Z, R, E, F) tensors of the same frames."""
    mf, graph_s = aspirin_batches(n_batches, batch, device=device)
    d = np.load(ASPIRIN)
    z = torch.as_tensor(np.tile(d["nuclear_charges"].astype(np.int64), (batch, 1)), device=device)
    hip = [(z, torch.as_tensor(d["coords"][k * batch:(k + 1) * batch], dtype=torch.float32, device=device),
            b.energy.float(), b.forces.view(batch, -1, 3)) for k, b in enumerate(mf)]
    return mf, hip, graph_s


def hippynn_step(h: Hippynn, batches, lr: float = 1e-4, hierarchicality: float = 1e-3):
    """hippynn's counterpart of :func:`_common.training_step`."""
    optimizer = torch.optim.Adam(h.module.parameters(), lr=lr)
    count = [0]

    def step() -> None:
        z, r, energy, forces = batches[count[0] % len(batches)]
        count[0] += 1
        e0, e1, f0, h0, h1 = h(z, r)
        loss = ((torch.cat([e0, e1], 1) - energy).square().mean() + (f0 - forces).square().mean()
                + hierarchicality * (h0.mean() + h1.mean()))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def alternate(calls: dict, rounds: int, per_round: int, device, warmup: int = 2) -> dict:
    """Median seconds per call of each function, rounds of the functions alternating;
    ``warmup`` untimed calls each first (hippynn compiles for each new input shape)."""
    for fn in calls.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in calls}
    for _ in range(rounds):
        for name, fn in calls.items():
            t = time_call(fn, per_round, device=device)
            times[name] += t.cpu if torch.device(device).type == "cpu" else t.wall
    return {name: statistics.median(v) for name, v in times.items()}


def ratio_row(table: Table, label, t: dict, scale: float = 1e3, per=None):
    vals = [t["mfgnn"] * scale, t["hippynn"] * scale]
    if per is not None:
        vals = [per / t["mfgnn"], per / t["hippynn"]]
    return table.row(label, *vals, t["hippynn"] / t["mfgnn"])


# ---------------------------------------------------------------- sections
def section_train(args, device) -> None:
    table = Table(("F x batch", "<14", ""), ("mfgnn ms", ">10", ".1f"), ("hippynn ms", ">11", ".1f"),
                  ("hip/mf", ">7", ".2f"), ("graph ms", ">9", ".1f"))
    print(table.header())
    for features, batch in args.train_cases:
        mf, hip, graph_s = aspirin_arrays(batch, min(3, 1000 // batch), device)
        calls = {"mfgnn": _common.training_step(mfgnn_model(features, device), mf),
                 "hippynn": hippynn_step(Hippynn(features, device), hip)}
        t = alternate(calls, args.rounds, args.per_round, device, warmup=len(mf) + 1)
        print(ratio_row(table, f"{features} x {batch}", t) + f" {graph_s * 1e3:9.1f}")


def section_latency(args, device) -> None:
    from torch_geometric.data import Data

    d = np.load(ASPIRIN)
    z = torch.as_tensor(d["nuclear_charges"].astype(np.int64), device=device)
    r = torch.as_tensor(d["coords"][0], dtype=torch.float32, device=device)
    table = Table(("F", "<14", "d"), ("mfgnn ms", ">10", ".2f"), ("hippynn ms", ">11", ".2f"),
                  ("hip/mf", ">7", ".2f"))
    print(table.header())
    for features in args.latency_features:
        model, h = mfgnn_model(features, device).eval(), Hippynn(features, device)
        calls = {"mfgnn": lambda: model(Data(z=z, pos=r), forces=[model.fidelities[0]]),
                 "hippynn": lambda: h(z[None], r[None])}
        print(ratio_row(table, features, alternate(calls, args.rounds, 10 * args.per_round, device)))


def section_cluster(args, device) -> None:
    from torch_geometric.data import Data

    from speed import liquid_cluster

    table = Table(("atoms", "<14", "d"), ("mfgnn ms", ">10", ".1f"), ("hippynn ms", ">11", ".1f"),
                  ("hip/mf", ">7", ".2f"))
    print(table.header())
    model, h = mfgnn_model(args.cluster_features, device).eval(), Hippynn(args.cluster_features, device)
    for side in args.cluster_sides:
        z, r = (x.to(device) for x in liquid_cluster(side))
        r = r.float()
        calls = {"mfgnn": lambda: model(Data(z=z, pos=r), forces=[model.fidelities[0]]),
                 "hippynn": lambda: h(z[None], r[None])}
        print(ratio_row(table, side**3, alternate(calls, max(args.rounds // 2, 1), 1, device)))


def section_throughput(args, device) -> None:
    table = Table(("batch (atoms)", "<14", ""), ("mfgnn at-st/s", ">14", ".0f"),
                  ("hippynn at-st/s", ">16", ".0f"), ("hip/mf", ">7", ".2f"))
    print(table.header())
    for batch in args.throughput_batches:
        mf, hip, _ = aspirin_arrays(batch, min(3, 1000 // batch), device)
        calls = {"mfgnn": _common.training_step(mfgnn_model(args.throughput_features, device), mf),
                 "hippynn": hippynn_step(Hippynn(args.throughput_features, device), hip)}
        t = alternate(calls, args.rounds, args.per_round, device, warmup=len(mf) + 1)
        print(ratio_row(table, f"{batch} ({21 * batch})", t, per=21 * batch))


def saved_bytes(forward) -> int:
    """Bytes of the unique storages autograd saves while ``forward`` runs (parameters excluded)."""
    storages: dict = {}

    def pack(t):
        if not isinstance(t, torch.nn.Parameter):
            st = t.untyped_storage()
            storages[st.data_ptr()] = st.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = forward()
    del out
    return sum(storages.values())


def section_memory(args, device) -> None:
    features, batch = args.memory_case
    mf, hip, _ = aspirin_arrays(batch, 1, device)
    model, h = mfgnn_model(features, device), Hippynn(features, device)
    first = [model.fidelities[0]]
    atoms = 21 * batch
    table = Table(("measure", "<34", ""), ("mfgnn B/atom", ">13", ".0f"), ("hippynn B/atom", ">15", ".0f"),
                  ("hip/mf", ">7", ".2f"))
    print(table.header())
    for _ in range(2):  # warm-up, compilation
        model(mf[0], forces=first, training=True), h(*hip[0][:2])
    b = {"mfgnn": saved_bytes(lambda: model(mf[0], forces=first, training=True)) / atoms,
         "hippynn": saved_bytes(lambda: h(*hip[0][:2])) / atoms}
    print(ratio_row(table, "autograd saved tensors (train step)", b, scale=1))
    if torch.device(device).type == "cuda":
        peak = {}
        for name, step in (("mfgnn", _common.training_step(model, mf)), ("hippynn", hippynn_step(h, hip))):
            step()
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            step()
            torch.cuda.synchronize()
            peak[name] = (torch.cuda.max_memory_allocated() - base) / atoms
        print(ratio_row(table, "CUDA max_memory_allocated growth", peak, scale=1))
        return
    peak = {code: _rss_subprocess(code, features, batch, args) for code in ("mfgnn", "hippynn")}
    if all(v is not None for v in peak.values()):
        print(ratio_row(table, "peak RSS growth, fresh process", peak, scale=1))


def _status_kb(field: str) -> float:
    with open("/proc/self/status") as fh:
        return next(float(line.split()[1]) for line in fh if line.startswith(field + ":"))


def rss_case(code: str, features: int, batch: int, args) -> dict:
    """Peak resident-set growth (bytes/atom) over two training steps after two warm-up
    steps, from a baseline with the allocator's free memory handed back (glibc
    malloc_trim), so that memory one code keeps cached between steps is not hidden in it."""
    import ctypes

    mf, hip, _ = aspirin_arrays(batch, 1, "cpu")
    step = (_common.training_step(mfgnn_model(features, "cpu"), mf) if code == "mfgnn"
            else hippynn_step(Hippynn(features, "cpu"), hip))
    step(), step()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")  # reset VmHWM to the current RSS
    base = _status_kb("VmRSS")
    step(), step()
    return {"bytes_per_atom": (_status_kb("VmHWM") - base) * 1024 / (21 * batch)}


def _rss_subprocess(code: str, features: int, batch: int, args):
    cmd = [sys.executable, __file__, "--rss-case", f"{code}:{features}:{batch}", "--threads", str(args.threads),
           "--hippynn-kernels", args.hippynn_kernels]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        print(f"   ({code} peak RSS case failed: {(res.stderr.strip().splitlines() or ['?'])[-1]})")
        return None
    return json.loads(res.stdout.strip().splitlines()[-1])["bytes_per_atom"]


# ---------------------------------------------------------------- main
def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small cases, few rounds (a smoke run)")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    p.add_argument("--hippynn-kernels", default="pytorch",
                   help="hippynn envsum kernels on the CPU: pytorch (default), numba, _pytorch_raw")
    p.add_argument("--rss-case", help=argparse.SUPPRESS)
    args = p.parse_args()
    _common.set_threads(args.threads)
    warnings.filterwarnings("ignore")
    if hippynn is None:
        print(f"hippynn is not installed, so there is nothing to compare with: {HINT}")
        return 0
    if args.rss_case:
        set_hippynn_kernels(args.hippynn_kernels, "cpu")
        code, f, b = args.rss_case.split(":")
        print(json.dumps(rss_case(code, int(f), int(b), args)))
        return 0
    q = args.quick
    args.rounds, args.per_round = (2, 1) if q else (5, 2)
    args.train_cases = [(64, 16)] if q else [(64, 64), (128, 256)]
    args.latency_features = [64] if q else [64, 128]
    args.cluster_features, args.cluster_sides = 128, ([10] if q else [10, 20])
    args.throughput_features = 64
    args.throughput_batches = [4, 32] if q else [1, 4, 16, 64, 256, 512]
    args.memory_case = (64, 16) if q else (128, 64)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"mfgnn vs hippynn {hippynn.__version__} | {_common.describe_machine()} | load avg {load:.2f}"
          f"{' | --quick' if q else ''}")
    print("architecture: 2 interactions x 3 atom layers, 20 sensitivities, soft 0.75-5.5 A, cutoff 6.5 A, "
          "tensor order 0, 2 fidelities; times: CPU time per call on the CPU, wall on the GPU; "
          "hip/mf > 1: mfgnn faster")
    for device in devices:
        kernels = set_hippynn_kernels(args.hippynn_kernels, device)
        print(f"\n=== {device}: hippynn kernels '{kernels}' ===")
        print("\n1) training step (energies of 2 fidelities, forces of 1 with create_graph, double "
              "backward, Adam); graph ms: mfgnn's radius graph per batch, built once per structure")
        section_train(args, device)
        print("\n2) one aspirin molecule: energies + forces of the first fidelity, from bare positions")
        section_latency(args, device)
        print(f"\n3) H/C/N/O cluster (~0.1 atoms/A^3), F={args.cluster_features}: energies + forces, "
              "from bare positions (hippynn: its default all-pairs finder)")
        section_cluster(args, device)
        print(f"\n4) training throughput, F={args.throughput_features}, aspirin batches (atom-steps/s)")
        section_throughput(args, device)
        print(f"\n5) memory per atom of a training step, F={args.memory_case[0]} aspirin x {args.memory_case[1]}")
        section_memory(args, device)
    return 0


if __name__ == "__main__":
    sys.exit(main())
