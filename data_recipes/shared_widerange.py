#!/usr/bin/env python
"""Write a ready dataset spec for the wide-range H2O2 set (RHF → MP2/cc-pVDZ).

``widerange/h2o2_hf_mp2.npz``: 2500 geometries far from equilibrium (energies spanning
82 eV, atom pairs down to 0.6 Å), energies (eV) and forces (eV/Å) at both levels in one
file under the keys ``E_hf``/``F_hf`` and ``E_mp2``/``F_mp2``. Fidelities (lowest level
first): ``hf``, ``mp2``. Writes ``h2o2_widerange.yaml`` into ``--out``, atomically, and
checks that it loads.

Usage: python data_recipes/shared_widerange.py --out specs/ [--data DIR] [--no-check]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mfgnn.data import load_dataset, parse_spec

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "widerange"
FILE = "h2o2_hf_mp2.npz"
LEVELS = ("hf", "mp2")


def write_spec(data: Path, out: Path, check: bool = True) -> Path:
    """Write ``h2o2_widerange.yaml`` into ``out``; returns its path."""
    source = data.resolve() / FILE
    if not source.is_file():
        raise SystemExit(f"missing data file {source}")
    fids = {level: {"path": str(source), "format": "npz", "energy_unit": "eV",
                    "keys": {"positions": "R", "numbers": "Z", "energy": f"E_{level}",
                             "forces": f"F_{level}"}} for level in LEVELS}
    spec = parse_spec({"name": "h2o2-widerange-hf-mp2",
                       "description": "H2O2 far from equilibrium, RHF and MP2/cc-pVDZ "
                                      "energies and forces (PySCF; CC0)",
                       "fidelities": fids})
    out.mkdir(parents=True, exist_ok=True)
    path = spec.save(out / "h2o2_widerange.yaml")
    if check:
        ds = load_dataset(path)
        print(f"{path}: {len(ds)} structures, fidelities {', '.join(ds.fidelities)}")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the spec")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA,
                        help="folder with the npz file (default: %(default)s)")
    parser.add_argument("--no-check", action="store_true", help="do not load the spec")
    args = parser.parse_args(argv)
    write_spec(args.data, args.out, check=not args.no_check)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
