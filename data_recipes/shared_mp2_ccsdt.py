#!/usr/bin/env python
"""Write ready dataset specs for the MP2 / CCSD(T) / CCSD(T)-F12 sets of H2CO, HCOOH, CH3OH.

Source: Käser, Richardson & Meuwly, J. Chem. Theory Comput. 2021, 17, 3687
(doi 10.1021/acs.jctc.1c00249), MIT licence. Each molecule has the same geometries row by
row in every level file, energies relative to free atoms in eV (different atomic
references per method) and forces in eV/Å. ``meuwly_db_CH3OH_MP2.npz`` pads to 7 atoms
with atomic number 0; the loader strips the padding.

Fidelities (lowest level first): ``mp2``, ``ccsdt`` and, where available, ``f12``.
Writes ``h2co.yaml``, ``hcooh.yaml``, ``ch3oh.yaml`` into ``--out`` (paths relative to the
spec), atomically, and checks that each spec loads.

Usage: python data_recipes/shared_mp2_ccsdt.py --out specs/ [--data DIR] [--no-check]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mfgnn.data import load_dataset, parse_spec

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "mp2_ccsdt"

#: molecule -> fidelity -> file (lowest level first).
MOLECULES: dict[str, dict[str, str]] = {
    "h2co": {"mp2": "ch2o_mp2_avtz_3601.npz", "ccsdt": "ch2o_cc_avtz_3601.npz",
             "f12": "ch2o_ccf12_avtz_3601.npz"},
    "hcooh": {"mp2": "meuwly_db_HCOOH_MP2.npz", "ccsdt": "hcooh_cc_avtz_5401.npz",
              "f12": "meuwly_db_HCOOH_CCSDT_F12.npz"},
    "ch3oh": {"mp2": "meuwly_db_CH3OH_MP2.npz", "ccsdt": "ch3oh_cc_avtz_7201.npz"},
}
KEYS = {"positions": "R", "numbers": "Z", "energy": "E", "forces": "F"}


def write_specs(data: Path, out: Path, molecules: list[str] | None = None,
                check: bool = True) -> list[Path]:
    """Write one spec per molecule into ``out``; returns the spec paths."""
    data = data.resolve()
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for mol in molecules or list(MOLECULES):
        if mol not in MOLECULES:
            raise SystemExit(f"unknown molecule {mol!r}; choose from {', '.join(MOLECULES)}")
        fids = {}
        for fid, name in MOLECULES[mol].items():
            if not (data / name).is_file():
                raise SystemExit(f"missing data file {data / name}")
            fids[fid] = {"path": str(data / name), "format": "npz", "energy_unit": "eV",
                         "keys": dict(KEYS)}
        spec = parse_spec({
            "name": f"{mol}-mp2-ccsdt",
            "description": f"{mol.upper()} at {', '.join(fids)} (Kaeser, Richardson & Meuwly, "
                           "JCTC 2021, doi 10.1021/acs.jctc.1c00249; MIT licence)",
            "fidelities": fids,
        })
        path = spec.save(out / f"{mol}.yaml")
        if check:
            ds = load_dataset(path)
            print(f"{path}: {len(ds)} structures, fidelities {', '.join(ds.fidelities)}")
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the specs")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA,
                        help="folder with the npz files (default: %(default)s)")
    parser.add_argument("--molecules", nargs="*", choices=list(MOLECULES), default=None)
    parser.add_argument("--no-check", action="store_true", help="do not load each spec")
    args = parser.parse_args(argv)
    write_specs(args.data, args.out, args.molecules, check=not args.no_check)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
