#!/usr/bin/env python
"""Training throughput: the data path against the model's training step (one thread).

On the shared H2CO set (MP2 → CCSD(T)-F12) and rMD17 aspirin (PBE → original MD17),
1000 training rows each, batches of 64, cutoff 6.5 Å:

(a) one epoch of batches through the PyG path (``SelectColumns`` on every
    ``dataset[row]`` with its radius graph, cached as ``BatchSource`` caches them, then
    collated by PyG's ``DataLoader`` with shuffling) against
    :class:`~mfgnn.data.collate.StructureStore` (built once, then ``batch(positions)``
    through ``store.loader``); the first epoch includes building the items / the store;
(b) the model's training step alone, ``SMALL_MODEL`` (soft_min 0.75 Å instead of
    "auto"): forward with the forces of the low level, ``MultiFidelityLoss`` (low E+F,
    high E), backward, Adam step; the data path's overhead is its steady epoch time as a
    percent of the epoch's model steps (target ≤ 20 %);
(c) loader throughput of :class:`~mfgnn.data.collate_mapped.MappedStructureStore`
    over a pack of each set (made in a temporary folder), random batches of 256 with 0,
    1 and 2 workers (worker start-up included), and the PyG path over the same pack
    (``PackedDataset`` items, in-process) for comparison;
(d) ``mfgnn train`` itself (the trainer: batches, steps, EMA, validation on 200 rows,
    checkpoint) in steady seconds per epoch against 16 model steps, on the CPU and, when
    there is one, on the GPU.

Prints figures only (no timing asserts). Usage:
    OMP_NUM_THREADS=1 python benchmarks/train_throughput.py [--quick] [--data DIR]
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

import _common
from _common import CUTOFF, Table, describe_machine, set_threads

BATCH = 64
MAPPED_BATCH = 256


def specs(data: Path) -> dict[str, dict]:
    """Two-level dataset specs of the shared sets: low level first."""
    h2co, asp = data / "mp2_ccsdt", data / "rmd17" / "rmd17_aspirin_train_01.npz"
    return {
        "H2CO": {"fidelities": {
            "mp2": {"path": str(h2co / "ch2o_mp2_avtz_3601.npz"), "energy_unit": "eV"},
            "f12": {"path": str(h2co / "ch2o_ccf12_avtz_3601.npz"), "energy_unit": "eV"}}},
        "aspirin": {"fidelities": {
            "pbe": {"path": str(asp), "energy_unit": "kcal/mol"},
            "md17": {"path": str(asp), "energy_unit": "kcal/mol",
                     "keys": {"energy": "old_energies", "forces": "old_forces"}}}},
    }


def pyg_epochs(dataset, rows, columns, epochs: int) -> list[float]:
    """Seconds of each epoch of the PyG path; the first builds the cached items."""
    from torch_geometric.loader import DataLoader

    from mfgnn.training.batches import SelectColumns

    times, items = [], None
    for epoch in range(epochs):
        t0 = time.perf_counter()
        if items is None:
            select = SelectColumns(columns)
            items = [select(dataset[int(r)]) for r in rows]
        g = torch.Generator().manual_seed(epoch)
        for _ in DataLoader(items, batch_size=BATCH, shuffle=True, generator=g):
            pass
        times.append(time.perf_counter() - t0)
    return times


def store_epochs(dataset, rows, columns, epochs: int) -> list[float]:
    """Seconds of each epoch through a StructureStore; the first includes building it."""
    from mfgnn.data.collate import StructureStore, loader_order

    times, store = [], None
    for epoch in range(epochs):
        t0 = time.perf_counter()
        if store is None:
            store = StructureStore(dataset, rows, columns)
        g = torch.Generator().manual_seed(epoch)
        for _ in store.loader(loader_order(len(store), BATCH, shuffle=True, generator=g)):
            pass
        times.append(time.perf_counter() - t0)
    return times


def model_step_seconds(dataset, rows, repeats: int, device: str = "cpu") -> float:
    """Median seconds of one training step (SMALL_MODEL, batch of 64, low-level forces)
    on ``device`` (batches already there)."""
    from mfgnn.data.collate import StructureStore, loader_order
    from mfgnn.loss import MultiFidelityLoss
    from mfgnn.nn import MultiFidelityHIPNN
    from mfgnn.presets import SMALL_MODEL

    low, high = dataset.fidelities
    torch.manual_seed(0)
    model = MultiFidelityHIPNN({**SMALL_MODEL, "soft_min": 0.75}, [low, high],
                               dataset.elements).to(device)
    loss_fn = MultiFidelityLoss([low, high], {low: ["energy", "forces"], high: ["energy"]})
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    store = StructureStore(dataset, rows, [0, 1])
    batches = [store.batch(p) for p in loader_order(len(store), BATCH)]
    batches = [b.to(device) for b in batches if b.num_graphs == BATCH]
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

    def step(batch) -> None:
        out = model(batch, forces=[low], training=True)
        loss = loss_fn(out, batch, model.hierarchicality(out), model.head_regularization()).total
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    step(batches[0])  # warm-up
    times = []
    for k in range(repeats):
        sync()
        t0 = time.perf_counter()
        step(batches[k % len(batches)])
        sync()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def train_epoch_seconds(spec: dict, device: str, epochs: int, folder: Path,
                        n_rows: int) -> float:
    """Steady seconds per epoch of ``mfgnn train`` (the trainer: batches, steps, EMA,
    validation, checkpoint) on 1000 training rows (fewer when the set has fewer than
    1220) and 200 validation rows, batch 64."""
    import yaml

    from mfgnn.presets import SMALL_MODEL
    from mfgnn.training.build import train

    low, high = list(spec["fidelities"])
    config = {"data": spec, "labels": {low: ["energy", "forces"], high: ["energy"]},
              "split": {"train": min(1000, n_rows - 210), "valid": 200, "test": 10,
                        "seed": 0},
              "model": {**SMALL_MODEL, "soft_min": 0.75},
              "train": {"max_epochs": epochs, "batch_size": BATCH, "device": device,
                        "patience": None, "progress_every": 0}}
    path = folder / f"{device.replace(':', '')}.yaml"
    path.write_text(yaml.safe_dump(config))
    train(path, folder / f"run_{device.replace(':', '')}", log=None)
    lines = (folder / f"run_{device.replace(':', '')}" / "metrics.csv").read_text().splitlines()
    column = lines[0].split(",").index("seconds")
    return min(float(line.split(",")[column]) for line in lines[2:])


def mapped_rate(store, n_batches: int, workers: int) -> tuple[float, float]:
    """(structures per second after the first batch, seconds to the first batch, worker
    start-up included) of ``n_batches`` random batches."""
    g = torch.Generator().manual_seed(workers)
    order = [torch.randint(len(store), (MAPPED_BATCH,), generator=g) for _ in range(n_batches)]
    t0 = time.perf_counter()
    loader = iter(store.loader(order, num_workers=workers))
    next(loader)
    t1 = time.perf_counter()
    count = sum(b.num_graphs for b in loader)
    return count / (time.perf_counter() - t1), t1 - t0


def pyg_pack_rate(packed, n_batches: int) -> float:
    """Structures per second of the PyG path over the pack (items read one by one)."""
    from torch_geometric.loader import DataLoader

    g = torch.Generator().manual_seed(0)
    t0, count = time.perf_counter(), 0
    for k, b in enumerate(DataLoader(packed, batch_size=MAPPED_BATCH, shuffle=True, generator=g)):
        count += b.num_graphs
        if k + 1 == n_batches:
            break
    return count / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=_common.SHARED_DATA)
    parser.add_argument("--quick", action="store_true", help="fewer epochs, steps and batches")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = parser.parse_args()
    set_threads(args.threads)
    epochs, steps, mapped = (2, 4, 8) if args.quick else (4, 16, 40)
    warnings.simplefilter("ignore", UserWarning)

    from mfgnn.data import PackedDataset, load_dataset, pack_dataset
    from mfgnn.data.collate_mapped import MappedStructureStore

    print(f"# Training throughput ({describe_machine()})")
    print(f"1000 training rows, batches of {BATCH}, cutoff {CUTOFF} Å; epoch times in ms "
          f"(first epoch builds the items / the store; steady = best later epoch)\n")
    table = Table(("data", "<8", ""), ("path", "<13", ""), ("first", ">8", ".1f"),
                  ("steady", ">8", ".1f"), ("step ms", ">8", ".1f"),
                  ("model epoch", ">11", ".0f"), ("overhead", ">9", ".1f"))
    print(table.header() + "  (overhead: steady data epoch / model epoch, %)")
    print(table.rule())
    sets = specs(args.data)
    loaded = {}
    for name, spec in sets.items():
        dataset = load_dataset(spec, cutoff=CUTOFF)
        loaded[name] = dataset
        rows = np.random.default_rng(0).permutation(len(dataset))[:1000]
        step = model_step_seconds(dataset, rows, steps)
        model_epoch = step * -(-len(rows) // BATCH)
        for path, fn in (("PyG", pyg_epochs), ("StructureStore", store_epochs)):
            t = fn(dataset, rows, [0, 1], epochs)
            steady = min(t[1:])
            print(table.row(name, path, t[0] * 1e3, steady * 1e3, step * 1e3, model_epoch * 1e3,
                            100 * steady / model_epoch))

    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    print("\n## `mfgnn train`: steady seconds per epoch (1000 training rows, 790 of aspirin's "
          f"1000; batches of {BATCH}; validation on 200) against the epoch's model steps; "
          f"devices: {', '.join(devices)}")
    train_table = Table(("data", "<8", ""), ("device", "<7", ""), ("epoch s", ">9", ".3f"),
                        ("steps s", ">9", ".3f"), ("loop share %", ">13", ".1f"))
    print(train_table.header())
    print(train_table.rule())
    with tempfile.TemporaryDirectory() as tmp:
        for name, spec in sets.items():
            for device in devices:
                folder = Path(tmp) / f"{name}_{device}"
                folder.mkdir()
                epoch = train_epoch_seconds(spec, device, 3 if args.quick else 5, folder,
                                            len(loaded[name]))
                rows = np.random.default_rng(0).permutation(len(loaded[name]))[:1000]
                n_steps = -(-min(1000, len(loaded[name]) - 210) // BATCH)
                model = n_steps * model_step_seconds(loaded[name], rows, steps, device)
                print(train_table.row(name, device, epoch, model, 100 * (epoch - model) / epoch))
    if not torch.cuda.is_available():
        print("(no CUDA device here: the GPU rows are missing)")

    print(f"\n## Loaders over a pack: random batches of {MAPPED_BATCH}, structures/s after "
          f"the first batch ({mapped} batches; PyG: {max(mapped // 4, 2)}); in brackets the "
          "seconds to the first batch (worker start-up)")
    rate_table = Table(("data", "<8", ""), ("PyG, 0 workers", ">15", ".0f"),
                       *[(f"mapped, {w} worker{'s' * (w != 1)}", ">25", "") for w in (0, 1, 2)])
    print(rate_table.header())
    print(rate_table.rule())
    with tempfile.TemporaryDirectory() as tmp:
        for name, spec in sets.items():
            pack_dataset(spec, Path(tmp) / name)
            packed = PackedDataset(Path(tmp) / name, cutoff=CUTOFF)
            store = MappedStructureStore(packed, np.arange(len(packed)), [0, 1])
            rates = [mapped_rate(store, mapped, w) for w in (0, 1, 2)]
            print(rate_table.row(name, pyg_pack_rate(packed, max(mapped // 4, 2)),
                                 *[f"{r:.0f} ({s:.2f} s)" for r, s in rates]))


if __name__ == "__main__":
    main()
