#!/usr/bin/env python
"""Write two-level dataset specs for revised MD17 (rMD17) npz files.

Source: Christensen & von Lilienfeld, "On the role of gradients for machine learning of
molecular energies and forces" (2020), revised MD17, CC0. Each npz holds the geometries
(``coords`` Å, ``nuclear_charges``) and two sets of labels on them:

* ``pbe``: ``energies`` / ``forces``, PBE/def2-SVP recomputation (kcal/mol, kcal/mol/Å);
* ``md17``: ``old_energies`` / ``old_forces``, the original MD17 labels (PBE+vdW-TS,
  another code; known to carry numerical noise).

One spec per npz file found (``rmd17_<molecule>*.npz``), both fidelities pointing at the
same file (read once). The source warns against training on more than 1000 frames of one
molecule (the frames are an MD time series).

Usage: python data_recipes/rmd17.py --out specs/ [--data DIR] [--molecules aspirin ...]
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from mfgnn.data import load_dataset, parse_spec

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "rmd17"
GEOMETRY = {"positions": "coords", "numbers": "nuclear_charges"}
FIDELITIES = {
    "pbe": {"energy": "energies", "forces": "forces"},
    "md17": {"energy": "old_energies", "forces": "old_forces"},
}


def spec_dict(path: Path, name: str) -> dict:
    """The two-level spec of one rMD17 npz file (absolute path)."""
    return {
        "name": name,
        "description": "rMD17 (Christensen & von Lilienfeld 2020, CC0): pbe = energies/forces, "
                       "md17 = old_energies/old_forces, kcal/mol",
        "fidelities": {
            fid: {"path": str(path.resolve()), "format": "npz", "energy_unit": "kcal/mol",
                  "keys": {**GEOMETRY, **keys}}
            for fid, keys in FIDELITIES.items()
        },
    }


def write_specs(data: Path, out: Path, molecules: list[str] | None = None,
                check: bool = True) -> list[Path]:
    """One spec per ``rmd17_*.npz`` in ``data`` (optionally only some molecules)."""
    files = sorted(data.glob("rmd17_*.npz"))
    if molecules:
        pattern = re.compile(r"rmd17_(" + "|".join(map(re.escape, molecules)) + r")(_|\.npz)")
        files = [f for f in files if pattern.match(f.name)]
    if not files:
        raise SystemExit(f"no rmd17_*.npz files{' for ' + ', '.join(molecules) if molecules else ''} "
                         f"in {data}")
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for f in files:
        spec = parse_spec(spec_dict(f, f.stem))
        path = spec.save(out / f"{f.stem}.yaml")
        if check:
            ds = load_dataset(path)
            print(f"{path}: {len(ds)} structures of {int(ds.n_atoms[0])} atoms, "
                  f"fidelities {', '.join(ds.fidelities)}")
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the specs")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA,
                        help="folder with rmd17_*.npz files (default: %(default)s)")
    parser.add_argument("--molecules", nargs="*", default=None,
                        help="e.g. aspirin ethanol (default: every file found)")
    parser.add_argument("--no-check", action="store_true", help="do not load each spec")
    args = parser.parse_args(argv)
    write_specs(args.data, args.out, args.molecules, check=not args.no_check)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
