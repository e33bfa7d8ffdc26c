"""Synthetic ANI-1x-layout HDF5 files (random CHNO molecules) for scale tests and benchmarks.

:func:`write_synthetic_ani` writes a file with the group and dataset names and dtypes of
``ani1x-release.h5`` (the file ``data_recipes/ani1x.py`` converts): one group per
molecular formula (named like ``C4H9N1O1``), each holding

    atomic_numbers       (N,)       uint8    heavy atoms (C, N, O sorted) then hydrogens
    coordinates          (n, N, 3)  float32  Å
    wb97x_dz.energy      (n,)       float64  hartree
    wb97x_dz.forces      (n, N, 3)  float32  hartree/Å
    ccsd(t)_cbs.energy   (n,)       float64  hartree, NaN except on ``cc_fraction`` rows

so a spec with ``format: ani-h5, energy_unit: hartree`` (as the recipe writes) applies.

Size distribution (what the generator draws; ANI-1x has CHNO molecules of mostly 1-8
heavy atoms, about 15 atoms per conformer on average, up to ~60 atoms):

* heavy atoms k: with probability ``1 - large_fraction`` (default 0.95) k ∈ 1..8 with
  weights ∝ (1, 2, 4, 7, 10, 13, 16, 18) (mean 6.0); otherwise k ∈ 9..20 uniformly (the
  larger molecules of ANI-1x; ``large_fraction=0`` keeps every molecule at ≤ 8 heavy atoms);
* each heavy atom is C, N or O with probabilities 0.60, 0.15, 0.25;
* hydrogens: a saturated tree (every free valence C 4, N 3, O 2 holds an H) minus 2u,
  u ∈ {0, 1, 2} with probabilities 0.5, 0.3, 0.2 (as far as hydrogens remain) — about
  2.4 k + 0.6 atoms, so ≈ 15 atoms per conformer on average and at most 62;
* conformers per group: log-normal around ``group_size`` (default n/200 clipped to
  20..1600; ANI-1x averages ~1600 per formula), σ = 0.8 in log space, 1..8·group_size;
  a group holds 1-4 isomers (same formula and atom order, other bonding tree/torsions).

Geometry: each isomer is a tree grown on tetrahedral directions (heavy–heavy 1.45 Å,
X–H 1.09 Å); a placement closer than 2.0 Å to a non-bonded heavy atom, or 1.5 Å for a
hydrogen, is redrawn, so every pair of an isomer is ≥ 1.09 Å apart. A conformer adds a
Gaussian displacement (σ = 0.03 Å) clipped to ±0.05 Å per component, so no pair is
closer than 1.09 − 2·0.05·√3 ≈ 0.92 Å.

Labels: E = Σ_atoms e_Z + isomer offset (σ 5 mHa) + ½ κ Σ |Δx|², F = −κ Δx with
κ = 1 hartree/Å² (Δx the displacement from the isomer; force RMS ≈ 0.03 hartree/Å ≈
0.8 eV/Å), e_Z close to ωB97x/6-31G* atomic energies. CCSD(T) energies use other
per-element energies plus the same conformational term and a 1 mHa noise.

Memory: rows are generated and written ``chunk_rows`` at a time, group by group, so a
4.9 M-conformer file (≈ 2 GB) needs tens of MB, not the file's size.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np

#: The file's level names (as in ani1x-release.h5).
LOW, HIGH = "wb97x_dz", "ccsd(t)_cbs"
#: Per-element energies (hartree) of the two levels: Z -> (ωB97x-like, CCSD(T)-like).
ATOM_ENERGY = {1: (-0.5009, -0.5991), 6: (-37.8303, -38.0399), 7: (-54.5736, -54.6823),
               8: (-75.0435, -75.1628)}
VALENCE = {6: 4, 7: 3, 8: 2}
HEAVY = np.array([6, 7, 8])
HEAVY_P = np.array([0.60, 0.15, 0.25])
SMALL_K_WEIGHTS = np.array([1, 2, 4, 7, 10, 13, 16, 18], dtype=np.float64)
LARGE_K = (9, 20)
BOND_HEAVY, BOND_H = 1.45, 1.09
JITTER_SIGMA, JITTER_CLIP = 0.03, 0.05
KAPPA = 1.0  # hartree / Å²
TETRA = np.arccos(-1.0 / 3.0)


def _unit(rng: np.random.Generator) -> np.ndarray:
    v = rng.normal(size=3)
    return v / np.linalg.norm(v)


def _slots(back: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
    """Three tetrahedral directions at 109.5° from ``back`` (unit), randomly rotated."""
    e1 = np.cross(back, [1.0, 0.0, 0.0] if abs(back[0]) < 0.9 else [0.0, 1.0, 0.0])
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(back, e1)
    phi = rng.uniform(0, 2 * np.pi) + 2 * np.pi * np.arange(3) / 3
    return [np.cos(TETRA) * back + np.sin(TETRA) * (np.cos(p) * e1 + np.sin(p) * e2)
            for p in phi]


def _grow(heavy: np.ndarray, n_h: int, rng: np.random.Generator,
          tries: int = 200) -> np.ndarray | None:
    """Positions (k + n_h, 3) Å of heavy atoms ``heavy`` (k,) then ``n_h`` hydrogens on a
    random tree, every pair ≥ BOND_H apart (centred); None when no placement was found."""
    k = len(heavy)
    for _ in range(tries):
        u = _unit(rng)
        pos = [np.zeros(3)]
        free = [[u, *_slots(u, rng)][: VALENCE[int(heavy[0])]]]
        for a in range(1, k):
            choices = [(p, s) for p in range(a) for s in range(len(free[p]))]
            placed = False
            for j in rng.permutation(len(choices))[:20]:
                p, s = choices[j]
                d = free[p][s]
                x = pos[p] + BOND_HEAVY * d
                others = [q for i, q in enumerate(pos) if i != p]
                if not others or np.linalg.norm(np.array(others) - x, axis=1).min() >= 2.0:
                    pos.append(x)
                    free[p].pop(s)
                    free.append(_slots(-d, rng)[: VALENCE[int(heavy[a])] - 1])
                    placed = True
                    break
            if not placed:
                break
        if len(pos) < k:
            continue
        slots = [(p, d) for p in range(k) for d in free[p]]
        hs: list[np.ndarray] = []
        for j in rng.permutation(len(slots)) if n_h else ():
            p, d = slots[j]
            x = pos[p] + BOND_H * d
            others = pos[:p] + pos[p + 1:] + hs
            if not others or np.linalg.norm(np.array(others) - x, axis=1).min() >= 1.5:
                hs.append(x)
                if len(hs) == n_h:
                    break
        if len(hs) < n_h:
            continue
        out = np.array(pos + hs)
        if len(out) > 1:
            d = np.linalg.norm(out[:, None] - out[None], axis=-1)
            d[np.diag_indices(len(out))] = np.inf
            if d.min() < BOND_H - 1e-9:
                continue
        return out - out.mean(axis=0)
    return None


def _formula(rng: np.random.Generator, large_fraction: float) -> tuple[np.ndarray, int]:
    """(sorted heavy atomic numbers (k,), number of hydrogens) of a random molecule."""
    if rng.random() < large_fraction:
        k = int(rng.integers(LARGE_K[0], LARGE_K[1] + 1))
    else:
        k = int(rng.choice(np.arange(1, 9), p=SMALL_K_WEIGHTS / SMALL_K_WEIGHTS.sum()))
    heavy = np.sort(rng.choice(HEAVY, size=k, p=HEAVY_P))
    n_h = int(sum(VALENCE[int(z)] for z in heavy) - 2 * (k - 1))
    u = int(rng.choice(3, p=[0.5, 0.3, 0.2]))
    n_h = max(n_h - 2 * u, 0 if k > 1 else 1)
    return heavy, n_h


def formula_name(z: np.ndarray) -> str:
    """ANI-style group name ``C{c}H{h}N{n}O{o}`` of atomic numbers ``z``."""
    return "".join(f"{s}{int(np.count_nonzero(z == n))}"
                   for s, n in (("C", 6), ("H", 1), ("N", 7), ("O", 8)))


def _group_sizes(n: int, group_size: int, rng: np.random.Generator) -> list[int]:
    sizes, total = [], 0
    while total < n:
        s = int(np.clip(round(group_size * rng.lognormal(-0.32, 0.8)), 1, 8 * group_size))
        s = min(s, n - total)
        sizes.append(s)
        total += s
    return sizes


def _write_group(grp: h5py.Group, z: np.ndarray, isomers: list[np.ndarray], n: int,
                 rng: np.random.Generator, cc_fraction: float, chunk_rows: int) -> None:
    n_atoms = len(z)
    grp.create_dataset("atomic_numbers", data=z.astype(np.uint8))
    coords = grp.create_dataset("coordinates", (n, n_atoms, 3), dtype=np.float32)
    forces = grp.create_dataset(f"{LOW}.forces", (n, n_atoms, 3), dtype=np.float32)
    e_low = np.empty(n, dtype=np.float64)
    e_high = np.empty(n, dtype=np.float64)
    ref = np.array([sum(ATOM_ENERGY[int(a)][t] for a in z) for t in (0, 1)])
    offset = rng.normal(0, 0.005, (len(isomers), 2))
    base = np.stack(isomers)  # (I, N, 3)
    for lo in range(0, n, chunk_rows):
        hi = min(lo + chunk_rows, n)
        iso = rng.integers(0, len(isomers), hi - lo)
        dx = np.clip(rng.normal(0, JITTER_SIGMA, (hi - lo, n_atoms, 3)), -JITTER_CLIP,
                     JITTER_CLIP)
        coords[lo:hi] = (base[iso] + dx).astype(np.float32)
        forces[lo:hi] = (-KAPPA * dx).astype(np.float32)
        strain = 0.5 * KAPPA * np.square(dx).sum(axis=(1, 2))
        e_low[lo:hi] = ref[0] + offset[iso, 0] + strain
        e_high[lo:hi] = ref[1] + offset[iso, 1] + strain + rng.normal(0, 0.001, hi - lo)
    e_high[rng.random(n) >= cc_fraction] = np.nan
    grp.create_dataset(f"{LOW}.energy", data=e_low)
    grp.create_dataset(f"{HIGH}.energy", data=e_high)


def write_synthetic_ani(path: str | os.PathLike, n_conformers: int, seed: int = 0, *,
                        group_size: int | None = None, large_fraction: float = 0.05,
                        cc_fraction: float = 0.1, max_isomers: int = 4,
                        chunk_rows: int = 65536,
                        progress: Callable[[int, int], None] | None = None) -> dict:
    """Write an ANI-1x-layout HDF5 file of ``n_conformers`` random CHNO conformers.

    Args:
        path: the file to write (replaced atomically: written as ``.<name>.tmp`` first).
        n_conformers: total rows over all groups.
        seed: random seed (same seed and arguments, same file contents).
        group_size: typical conformers per formula group (default ``n/200`` clipped to
            20..1600).
        large_fraction: share of molecules with 9-20 heavy atoms (else 1-8).
        cc_fraction: share of conformers with a ``ccsd(t)_cbs.energy`` (others NaN).
        max_isomers: isomers per group (1..max_isomers).
        chunk_rows: rows generated and written at once (bounds the memory).
        progress: called as ``progress(rows_done, n_conformers)`` after each group.

    Returns:
        ``{"n": rows, "groups": G, "atoms": ΣN, "mean_atoms": ΣN / n, "max_atoms": ...,
        "cc_rows": rows with a CCSD(T) energy}``.
    """
    n_conformers = int(n_conformers)
    if n_conformers < 1:
        raise ValueError(f"n_conformers must be >= 1, got {n_conformers}")
    rng = np.random.default_rng(seed)
    if group_size is None:
        group_size = int(np.clip(n_conformers // 200, 20, 1600))
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    done, atoms, max_atoms, cc_rows, names = 0, 0, 0, 0, set()
    try:
        with h5py.File(tmp, "w") as f:
            for size in _group_sizes(n_conformers, group_size, rng):
                while True:
                    heavy, n_h = _formula(rng, large_fraction)
                    z = np.concatenate([heavy, np.ones(n_h, dtype=heavy.dtype)])
                    name = formula_name(z)
                    if name in names:
                        name = f"{name}_{len(names)}"  # another draw of a formula: own group
                    first = _grow(heavy, n_h, rng)
                    if first is not None:
                        break
                isomers = [first]
                for _ in range(int(rng.integers(1, max_isomers + 1)) - 1):
                    other = _grow(heavy, n_h, rng)
                    if other is not None:
                        isomers.append(other)
                names.add(name)
                grp = f.create_group(name)
                _write_group(grp, z, isomers, size, rng, cc_fraction, chunk_rows)
                cc_rows += int(np.isfinite(grp[f"{HIGH}.energy"][()]).sum())
                done += size
                atoms += size * len(z)
                max_atoms = max(max_atoms, len(z))
                if progress is not None:
                    progress(done, n_conformers)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return {"n": done, "groups": len(names), "atoms": atoms, "mean_atoms": atoms / done,
            "max_atoms": max_atoms, "cc_rows": cc_rows}


def synthetic_spec(path: str | os.PathLike, cc: bool = True) -> dict:
    """The dataset spec of a synthetic file (as ``data_recipes/ani1x.py`` writes for the
    real one): ``wb97x_dz`` (energy, forces) and, with ``cc``, ``ccsd(t)_cbs`` (energy)."""
    levels = (LOW, HIGH) if cc else (LOW,)
    return {"fidelities": {lv: {"path": str(Path(path).resolve()), "format": "ani-h5",
                                "energy_unit": "hartree",
                                "keys": {"energy": f"{lv}.energy",
                                         "forces": f"{lv}.forces" if lv == LOW else None}}
                           for lv in levels}}
