#!/usr/bin/env python
"""Does denser sampling of the high-energy tail let the models learn it? H2O2, RHF → MP2.

On the shared wide-range set the bin more than 10 eV above the minimum (25 of the 1000
test rows; 36 of the 1000 training rows) keeps the oracle SF-mp2/EF and the MF model
MF-hf/EF-mp2/E several times above the raw HF-vs-MP2 force gap at every budget measured.
This script asks whether that is a question of data: it samples ``--extra`` more geometries
of the set's own tail-producing kind (random Cartesian displacements of the HF/cc-pVDZ
reference with a per-component σ drawn in [0.20, 0.25] Å, the top of the set's σ range,
rigid motion projected out, no pair closer than 0.6 Å), labels them with the set's own
generator (``generate_h2o2.py`` beside the shared file: one RHF with its fallback ladder
and stability check, RHF and MP2/cc-pVDZ energies and analytic forces; needs ``pip install
pyscf``, version 2.14 made the shared file), adds the first N of them to the training
split of the seed-0 1000 / 200 / 1000 split, and trains the oracle and the MF model on
each point of ``--points`` with the same validation and test rows. It prints the MP2
force RMSE of the test split (meV/Å), all rows and by energy above the minimum, next to
the raw gap, with the training rows in each bin and the epochs each run trained.

    python benchmarks/widerange_tail.py --out runs/widerange_tail --extra 1200 \
        --points 0,600,1200 --max-time 360

Labelling is resumable (``OUT/tail_rows.npz``, written every 20 rows); re-running with
the same ``--out`` reuses finished runs. ``--label-only`` stops after the labels.
"""

from __future__ import annotations

import argparse
import copy
import importlib
import multiprocessing
import re
import sys
from pathlib import Path

import numpy as np
import yaml

import _common
from hard_data import NEW, run_quietly
from lfhe_curve import epochs_of

from mfgnn.data import Split, make_split
from mfgnn.experiment import ExperimentSettings
from mfgnn.experiment.plan import Experiment

SIGMA = (0.20, 0.25)
SEED = 2026
ORACLE, MF = "SF-mp2/EF", "MF-hf/EF-mp2/E[independent]"
LABELS = ("E_hf", "F_hf", "E_mp2", "F_mp2")
SIZES = (1000, 200, 1000)
SHARED = "h2o2_hf_mp2.npz"


def generator():
    """The shared set's own generator module (``generate_h2o2.py``)."""
    folder = str(_common.shared_data("widerange"))
    if folder not in sys.path:  # importable by name, so that worker processes find it
        sys.path.insert(0, folder)
    return importlib.import_module("generate_h2o2")


def reference_internals(provenance: str) -> dict:
    """The HF/cc-pVDZ reference geometry's internal coordinates from the shared file's
    provenance text (O-O, O-H, O-O-H and H-O-O-H)."""
    m = re.search(r"O-O ([\d.]+) A, O-H ([\d.]+)/([\d.]+) A, OOH ([\d.]+)/([\d.]+) deg, "
                  r"HOOH ([\d.]+) deg", provenance)
    if m is None:
        raise SystemExit(f"{SHARED}: no 'Reference geometry' in its provenance")
    r_oo, r_oh1, r_oh2, a1, a2, phi = map(float, m.groups())
    return dict(r_oo=r_oo, r_oh1=r_oh1, r_oh2=r_oh2, a1=a1, a2=a2, phi=phi)


def sample(gen, n: int, internals: dict) -> tuple[np.ndarray, np.ndarray]:
    """``n`` displaced geometries (Å) and their σ; row ``i`` is drawn from its own seeded
    stream (:data:`SEED`, ``i``), so the first rows do not depend on ``n``."""
    ref = gen.build_h2o2(**internals)
    geometries, sigmas = [], []
    for i in range(n):
        rng = np.random.default_rng([SEED, i])
        sigma = rng.uniform(*SIGMA)
        geometries.append(gen._accept(rng, lambda: gen.displace(rng, ref, sigma), "tail"))
        sigmas.append(sigma)
    return np.array(geometries), np.array(sigmas)


def label(out: Path, n: int, workers: int) -> dict:
    """Labels of the first ``n`` sampled geometries, resumed from ``out/tail_rows.npz``;
    rows whose SCF failed are dropped. {key: array} of the labelled rows."""
    gen = generator()
    shared = np.load(_common.shared_data("widerange", SHARED))
    ref_int = reference_internals(str(shared["provenance"]))
    geometries, sigmas = sample(gen, n, ref_int)
    path = out / "tail_rows.npz"
    done = dict(np.load(path)) if path.is_file() else {"idx": np.zeros(0, int)}
    stored = done["idx"][done["idx"] < n]
    if len(stored) and not np.allclose(done["R"][:len(stored)], geometries[stored]):
        raise SystemExit(f"{path}: its geometries are not the ones this script draws "
                         "(another seed or σ range?); use another --out")
    rows = {int(i): {k: done[k][j] for k in LABELS} for j, i in enumerate(done["idx"])}
    todo = [(i, geometries[i]) for i in range(n) if i not in rows]
    opts = dict(threads=1, ref_R=gen.build_h2o2(**ref_int).tolist(), stability=True)

    def save() -> None:
        idx = np.array(sorted(rows), dtype=int)
        arrays = {k: np.array([rows[i][k] for i in idx]) for k in LABELS}
        tmp = out / "tail_rows.tmp.npz"
        np.savez(tmp, idx=idx, R=geometries[idx], **arrays)
        tmp.replace(path)

    if todo:
        print(f"labelling {len(todo)} geometries ({len(rows)} stored), {workers} workers",
              flush=True)
        context = multiprocessing.get_context("spawn")
        with context.Pool(workers, initializer=gen._worker_init, initargs=(opts, True)) as pool:
            for k, row in enumerate(pool.imap_unordered(gen.label_one, todo), 1):
                rows[int(row["idx"])] = {key: row[key] for key in LABELS}
                if k % 20 == 0 or k == len(todo):
                    save()
                    print(f"  {k}/{len(todo)} labelled", flush=True)
    idx = np.array([i for i in sorted(rows) if i < n
                    and all(np.all(np.isfinite(rows[i][k])) for k in LABELS)], dtype=int)
    print(f"{len(idx)} of {n} tail geometries labelled ({n - len(idx)} failed SCF dropped)")
    return {"R": geometries[idx], "sigma": sigmas[idx],
            **{k: np.array([rows[i][k] for i in idx]) for k in LABELS}}


def write_data(out: Path, tail: dict) -> Path:
    """The shared rows followed by the tail rows in one npz and its two-level spec."""
    shared = np.load(_common.shared_data("widerange", SHARED))
    merged = {k: np.concatenate([shared[k], tail[k]]) for k in ("R",) + LABELS}
    merged["Z"] = np.concatenate([shared["Z"], np.broadcast_to(shared["Z"][:1],
                                                               (len(tail["R"]), 4))])
    tmp = out / "h2o2_plus_tail.tmp.npz"  # two processes may write it at once
    np.savez(tmp, **merged)
    tmp.replace(out / "h2o2_plus_tail.npz")
    level = {"path": "h2o2_plus_tail.npz", "format": "npz", "energy_unit": "eV"}
    spec = {"name": "h2o2-widerange-plus-tail", "fidelities": {
        name: {**level, "keys": {"positions": "R", "numbers": "Z", "energy": f"E_{name}",
                                 "forces": f"F_{name}"}} for name in ("hf", "mp2")}}
    path = out / "h2o2_plus_tail.yaml"
    tmp.with_suffix(".yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    tmp.with_suffix(".yaml").replace(path)
    return path


def tail_split(n_shared: int, extra: int) -> Split:
    """The seed-0 1000 / 200 / 1000 split of the shared rows with the first ``extra`` tail
    rows (stored after them) added to its training rows only."""
    base = make_split(n_shared, *SIZES, seed=0)
    train = np.concatenate([base.train, n_shared + np.arange(extra)])
    return Split(train, base.valid, base.test, n=n_shared + extra, seed=0)


def run_point(out: Path, spec: Path, n_shared: int, extra: int, max_time: float,
              seeds: int) -> dict:
    """Oracle and MF trained on the seed-0 split's training rows plus the first ``extra``
    tail rows; results.json of the point."""
    folder = out / f"extra{extra}"
    folder.mkdir(parents=True, exist_ok=True)
    split = tail_split(n_shared, extra)
    split.save(folder / "split.json")
    train = split.train
    config = copy.deepcopy(NEW)
    config["train"]["max_epochs"] = 100_000  # the budget is the time
    settings = ExperimentSettings(
        data=str(spec), low="hf", high="mp2", train=len(train), valid=SIZES[1],
        test=SIZES[2], out=folder, seeds=seeds, base=config, max_time=max_time,
        heads=("independent",), experiments=(ORACLE, MF))
    return run_quietly(settings)


def training_bins(tail_energy: np.ndarray, shared_energy: np.ndarray, train: np.ndarray,
                  test: np.ndarray, edges=(0, 2, 5, 10)) -> list[int]:
    """Training rows per bin of energy above the test rows' minimum (the report's bins)."""
    e = np.concatenate([shared_energy, tail_energy])
    above = e[train] - e[test].min()
    bounds = list(edges) + [np.inf]
    return [int(((above >= lo) & (above < hi)).sum()) for lo, hi in zip(bounds, bounds[1:])]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--extra", type=int, default=1200, help="tail geometries to label")
    p.add_argument("--points", default="0,600,1200", help="tail rows added, comma separated")
    p.add_argument("--max-time", type=float, default=360.0, help="seconds per run")
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--workers", type=int, default=2, help="labelling processes")
    p.add_argument("--label-only", action="store_true")
    args = p.parse_args(argv)
    points = [int(x) for x in args.points.split(",") if x.strip()]
    if max(points) > args.extra:
        p.error(f"--points up to {max(points)} need --extra ≥ that")
    args.out.mkdir(parents=True, exist_ok=True)
    tail = label(args.out, args.extra, args.workers)
    if args.label_only:
        return 0
    _common.set_threads(1)
    spec = write_data(args.out, tail)
    shared_energy = np.load(_common.shared_data("widerange", SHARED))["E_mp2"]
    lines = []
    for extra in points:
        if extra > len(tail["R"]):
            raise SystemExit(f"only {len(tail['R'])} tail rows labelled; point {extra}")
        res = run_point(args.out, spec, len(shared_energy), extra, args.max_time, args.seeds)
        split = Split.load(args.out / f"extra{extra}" / "split.json")
        counts = training_bins(tail["E_mp2"], shared_energy, split.train, split.test)
        gap = res["baseline"]["by_energy"]
        for name in (ORACLE, MF):
            high = res["experiments"][name]["high"]
            cells = [high["forces_rmse"]["mean"]] + [
                high["by_energy"][b]["forces_rmse"]["mean"] for b in gap]
            runs = args.out / f"extra{extra}" / "runs" / Experiment(name, {}).folder
            lines.append(f"{extra:>6}  {name:<30}" + "".join(f"{c:>10.0f}" for c in cells)
                         + f"   epochs {epochs_of(runs)}, training rows per bin "
                         + "/".join(map(str, counts)))
        header = (f"{'extra':>6}  {'experiment':<30}{'all':>10}"
                  + "".join(f"{b:>10}" for b in gap))
        gap_line = (f"{'':>6}  {'raw gap':<30}{res['baseline']['forces_gap_rmse']:>10.0f}"
                    + "".join(f"{g['forces_rmse']:>10.0f}" for g in gap.values()))
        print(f"\nMP2 force RMSE on the 1000 test rows (meV/Å), {args.max_time:g} s per run, "
              f"{args.seeds} seed(s)\n{header}\n" + "\n".join(lines) + f"\n{gap_line}",
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
