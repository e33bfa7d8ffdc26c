#!/usr/bin/env python
"""Cut the bundled demo dataset: 1400 H2CO structures at MP2 and CCSD(T)-F12.

Source: the H2CO files of Käser, Richardson & Meuwly, J. Chem. Theory Comput. 2021, 17,
3687 (doi 10.1021/acs.jctc.1c00249), MIT licence: ``ch2o_mp2_avtz_3601.npz`` and
``ch2o_ccf12_avtz_3601.npz`` (same 3601 geometries row by row). The same randomly chosen
rows (fixed seed) are taken from both, the trailing atomic-number-0 padding column is
removed, and the cut is written as ``h2co_mp2.npz`` / ``h2co_f12.npz`` (keys R, Z, E, F in
float64; ``source_rows`` = rows of the original files) with ``h2co.yaml``, ``LICENSE``
and ``README.md``. Everything is written atomically.

Usage: python data_recipes/make_demo.py [--data DIR] [--out DIR] [--rows 1400] [--seed 2021]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from mfgnn.fileio import savez_atomic, write_text_atomic
from mfgnn.data import load_dataset

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "mp2_ccsdt"
DEFAULT_OUT = REPO / "src" / "mfgnn" / "demo"
LOW, HIGH = "ch2o_mp2_avtz_3601.npz", "ch2o_ccf12_avtz_3601.npz"
ROWS, SEED = 1400, 2021
MAX_BYTES = 1_000_000

SPEC = """\
name: h2co-demo
description: >-
  1400 H2CO geometries at MP2/aVTZ and CCSD(T)-F12/aVTZ (energies and forces at
  both levels), cut from Kaeser, Richardson & Meuwly, JCTC 2021. MIT licence.
fidelities:
  mp2:
    path: h2co_mp2.npz
    format: npz
    energy_unit: eV
    keys: {positions: R, numbers: Z, energy: E, forces: F}
  f12:
    path: h2co_f12.npz
    format: npz
    energy_unit: eV
    keys: {positions: R, numbers: Z, energy: E, forces: F}
"""

README = """\
# Bundled demo dataset: H2CO at MP2 and CCSD(T)-F12

{rows} geometries of formaldehyde (H2CO) with energies and forces at two levels of theory:

| file | level | keys |
|---|---|---|
| `h2co_mp2.npz` | MP2/aVTZ (low fidelity, `mp2`) | `R` (n, 4, 3) Å, `Z` (4,), `E` (n,) eV, `F` (n, 4, 3) eV/Å |
| `h2co_f12.npz` | CCSD(T)-F12/aVTZ (high fidelity, `f12`) | same |

`h2co.yaml` is the dataset spec (`mfgnn.data.demo_spec_path()` returns its path).
Energies are relative to free atoms, with different atomic references for each method, so
self-energies must be fitted per fidelity. Row k is the same geometry in both files.
`source_rows` holds the row of each structure in the original files.

## Source and citation

K\u00e4ser, S.; Richardson, J. O.; Meuwly, M. "Transfer learning to CCSD(T): accurate
anharmonic frequencies from machine learning models." J. Chem. Theory Comput. 2021, 17,
3687. doi:10.1021/acs.jctc.1c00249

Files `ch2o_mp2_avtz_3601.npz` and `ch2o_ccf12_avtz_3601.npz` as redistributed under the
MIT licence (see `LICENSE`).

## How it was cut

`python data_recipes/make_demo.py --rows {rows} --seed {seed}`: {rows} of the 3601 rows
drawn without replacement with `numpy.random.default_rng({seed})`, sorted, the same rows
from both files (their geometries verified equal), the trailing atomic-number-0 padding
column removed, saved with `numpy.savez_compressed` (float64).
"""


def cut(data: Path, out: Path, rows: int = ROWS, seed: int = SEED) -> list[Path]:
    """Write the demo files into ``out``; returns the paths written."""
    low, high = np.load(data / LOW), np.load(data / HIGH)
    R = low["R"]
    if not np.array_equal(R, high["R"]) or not np.array_equal(low["Z"], high["Z"]):
        raise SystemExit(f"{LOW} and {HIGH} do not hold the same geometries")
    Z = np.asarray(low["Z"])
    keep = (Z != 0).any(axis=0) if Z.ndim == 2 else Z != 0
    z_row = (Z[0] if Z.ndim == 2 else Z)[keep].astype(np.int64)
    if Z.ndim == 2 and not (Z[:, keep] == z_row).all():
        raise SystemExit("rows differ in composition; the demo expects one molecule")
    pick = np.sort(np.random.default_rng(seed).choice(len(R), size=rows, replace=False))
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for src, name in ((low, "h2co_mp2.npz"), (high, "h2co_f12.npz")):
        written.append(savez_atomic(
            out / name,
            R=src["R"][pick][:, keep].astype(np.float64),
            Z=z_row,
            E=src["E"][pick].astype(np.float64),
            F=src["F"][pick][:, keep].astype(np.float64),
            source_rows=pick.astype(np.int64),
        ))
    written.append(write_text_atomic(out / "h2co.yaml", SPEC))
    written.append(write_text_atomic(out / "LICENSE", (data / "LICENSE").read_text()))
    written.append(write_text_atomic(out / "README.md", README.format(rows=rows, seed=seed)))
    total = sum(p.stat().st_size for p in written)
    if total > MAX_BYTES:
        raise SystemExit(f"demo is {total} bytes, more than {MAX_BYTES}")
    load_dataset(out / "h2co.yaml")  # the spec must load
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA,
                        help="folder with the MP2/CCSD(T) npz files (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help="output folder (default: the package's demo folder)")
    parser.add_argument("--rows", type=int, default=ROWS)
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args(argv)
    written = cut(args.data, args.out, args.rows, args.seed)
    for p in written:
        print(f"{p}  {p.stat().st_size} bytes")
    print(f"total {sum(p.stat().st_size for p in written)} bytes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
