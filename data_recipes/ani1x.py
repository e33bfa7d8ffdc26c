#!/usr/bin/env python
"""Download ANI-1x / ANI-1ccx (one HDF5 release) and write a multi-fidelity dataset spec.

Source: Smith et al., "The ANI-1ccx and ANI-1x data sets, coupled-cluster and density
functional theory properties for molecules", Sci. Data 2020, 7, 134
(doi 10.1038/s41597-020-0473-z); file ``ani1x-release.h5`` from figshare
(doi 10.6084/m9.figshare.10047041.v1), CC0. About 4.9 M conformers grouped by formula;
energies in hartree, forces in hartree/Å, NaN = missing. The ``ccsd(t)_cbs.energy`` level
(ANI-1ccx) exists for about 0.5 M conformers; ``wb97x_dz`` (energy and forces) for all.

The download is verified against the size and MD5 published by figshare. The loader
reads the HDF5 file lazily, so the spec can point at the release as is. ``--require
LEVEL`` additionally writes a smaller copy with only the conformers that have LEVEL's
energy (e.g. the ANI-1ccx subset) and only the chosen levels' datasets.

Usage:
  python data_recipes/ani1x.py --out data/ani1x                  # download (5.6 GB)
  python data_recipes/ani1x.py --out specs/ --local ani1x-release.h5 \\
      --levels wb97x_dz "ccsd(t)_cbs" --require "ccsd(t)_cbs"
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import h5py
import numpy as np

from mfgnn.data.download import download, verify_file
from mfgnn.data import load_dataset, parse_spec

URL = "https://springernature.figshare.com/ndownloader/files/18112775"
FILENAME = "ani1x-release.h5"
MD5 = "98090dd6679106da861f52bed825ffb7"  # published by figshare for file 18112775
SIZE = 5_590_846_027
DEFAULT_LEVELS = ("wb97x_dz", "ccsd(t)_cbs")


def _groups(f: h5py.File) -> list[str]:
    out: list[str] = []
    f.visititems(lambda name, obj: out.append(name)
                 if isinstance(obj, h5py.Group) and "coordinates" in obj else None)
    return out


def available_levels(path: Path) -> dict[str, bool]:
    """level -> has forces, for every ``<level>.energy`` in the file's groups."""
    levels: dict[str, bool] = {}
    with h5py.File(path, "r") as f:
        for g in _groups(f):
            for key in f[g]:
                if key.endswith(".energy"):
                    level = key[: -len(".energy")]
                    levels[level] = levels.get(level, False) or f"{level}.forces" in f[g]
    return levels


def filter_copy(src: Path, dest: Path, levels: list[str], require: str) -> int:
    """Copy the conformers that have ``require``'s energy, with only ``levels``' datasets,
    to ``dest`` (atomically). Returns the number of conformers written."""
    tmp = dest.with_name(f".{dest.name}.tmp")
    total = 0
    try:
        with h5py.File(src, "r") as fin, h5py.File(tmp, "w") as fout:
            for g in _groups(fin):
                gin = fin[g]
                if f"{require}.energy" not in gin:
                    continue
                keep = np.isfinite(gin[f"{require}.energy"][()])
                if not keep.any():
                    continue
                gout = fout.create_group(g)
                gout.create_dataset("atomic_numbers", data=gin["atomic_numbers"][()])
                names = ["coordinates"] + [f"{lv}.{q}" for lv in levels for q in ("energy", "forces")]
                for name in names:
                    if name in gin:
                        gout.create_dataset(name, data=gin[name][()][keep])
                total += int(keep.sum())
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return total


def write_spec(h5: Path, out: Path, levels: list[str], name: str) -> Path:
    """Write ``<name>.yaml`` in ``out`` with one fidelity per level (lowest first)."""
    present = available_levels(h5)
    missing = [lv for lv in levels if lv not in present]
    if missing:
        raise SystemExit(f"{h5}: no level(s) {', '.join(missing)}; available: "
                         f"{', '.join(sorted(present))}")
    fids = {}
    for lv in levels:
        fids[lv] = {"path": str(h5.resolve()), "format": "ani-h5", "energy_unit": "hartree",
                    "keys": {"energy": f"{lv}.energy",
                             "forces": f"{lv}.forces" if present[lv] else None}}
    spec = parse_spec({"name": name, "description": "ANI-1x / ANI-1ccx (Smith et al., Sci. "
                       "Data 2020, doi 10.1038/s41597-020-0473-z), CC0", "fidelities": fids})
    return spec.save(out / f"{name}.yaml")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True,
                        help="folder for the spec (and the download)")
    parser.add_argument("--local", type=Path, help="use this HDF5 file instead of downloading")
    parser.add_argument("--levels", nargs="+", default=list(DEFAULT_LEVELS),
                        help="levels, lowest first (default: %(default)s)")
    parser.add_argument("--require", help="also write a copy with only the conformers that "
                        "have this level's energy (e.g. ccsd(t)_cbs for ANI-1ccx)")
    parser.add_argument("--name", default="ani1x", help="spec name (default: %(default)s)")
    parser.add_argument("--md5", help="expected MD5 (default for a download: the published "
                        "one; a --local file is verified only when given)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.local:
        h5 = args.local
        if not h5.is_file():
            raise SystemExit(f"file not found: {h5}")
        digests = verify_file(h5, md5=args.md5)
        print(f"{h5}: md5 {digests['md5']}{' (verified)' if args.md5 else ''}")
    else:
        h5 = download(URL, args.out / FILENAME, md5=args.md5 or MD5,
                      size=None if args.md5 else SIZE)
        print(f"{h5}: size and md5 verified")
    if args.require:
        if args.require not in args.levels:
            raise SystemExit(f"--require {args.require} must be one of --levels")
        sub = args.out / f"{args.name}_{args.require.replace('(', '').replace(')', '')}.h5"
        n = filter_copy(h5, sub, args.levels, args.require)
        print(f"{sub}: {n} conformers with {args.require}")
        h5 = sub
    spec = write_spec(h5, args.out, args.levels, args.name)
    ds = load_dataset(spec)
    n_e = np.isfinite(ds.energies).sum(axis=0)
    print(f"{spec}: {len(ds)} conformers; " +
          ", ".join(f"{f} {k} energies" for f, k in zip(ds.fidelities, n_e)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
