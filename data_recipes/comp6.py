#!/usr/bin/env python
"""Download COMP6v2 (wB97X/6-31G*) and write a dataset spec for it.

Source: COMP6v2, the extended COMP6 benchmark of Devereux et al., "Extending the
applicability of the ANI deep learning molecular potential to sulfur and halogens",
J. Chem. Theory Comput. 2020, 16, 4192 (doi 10.1021/acs.jctc.0c00121); release on Zenodo
(doi 10.5281/zenodo.10126157), file ``COMP6v2_wB97X-631Gd.tar.gz`` holding
``comp6v2_final_h5/COMP6v2_wB97X-631Gd.h5``.

Layout: HDF5 groups by atom count, each with ``coordinates`` (n, N, 3) Å, ``species``
(n, N) atomic numbers per row, ``energies`` (n,) hartree, ``forces`` (n, N, 3) hartree/Å —
the ANI layout with per-row atomic numbers, read lazily by the ``ani-h5`` loader with
``keys: {numbers: species, energy: energies, forces: forces}``.

Other levels of theory on the same geometries (other files of the release) can be added
with ``--extra NAME=FILE``; the loader verifies row by row that the geometries match.

Usage:
  python data_recipes/comp6.py --out data/comp6                 # download and extract
  python data_recipes/comp6.py --out specs/ --local COMP6v2_wB97X-631Gd.h5
"""

from __future__ import annotations

import argparse
import os
import tarfile
from pathlib import Path

from mfgnn.data.download import download, verify_file
from mfgnn.data import load_dataset, parse_spec

URL = "https://zenodo.org/records/10126157/files/COMP6v2_wB97X-631Gd.tar.gz"
ARCHIVE = "COMP6v2_wB97X-631Gd.tar.gz"
MEMBER = "COMP6v2_wB97X-631Gd.h5"
MD5 = "0a417148966022e72f54c135d8f3d4e7"  # tarball MD5 listed on the Zenodo record; --md5 overrides
KEYS = {"positions": "coordinates", "numbers": "species", "energy": "energies",
        "forces": "forces"}


def extract_h5(archive: Path, out: Path) -> Path:
    """Extract the single ``*.h5`` member of ``archive`` into ``out`` (atomically)."""
    with tarfile.open(archive) as tar:
        members = [m for m in tar.getmembers() if m.isfile() and m.name.endswith(".h5")]
        if not members:
            raise SystemExit(f"{archive}: no .h5 file inside")
        member = next((m for m in members if m.name.endswith(MEMBER)), members[0])
        dest = out / Path(member.name).name
        tmp = dest.with_name(f".{dest.name}.tmp")
        src = tar.extractfile(member)
        assert src is not None
        try:
            with src, open(tmp, "wb") as fh:
                while chunk := src.read(1 << 20):
                    fh.write(chunk)
            os.replace(tmp, dest)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    return dest


def write_spec(levels: dict[str, Path], out: Path, name: str) -> Path:
    """Spec with one ani-h5 fidelity per (name, file), lowest level first."""
    fids = {fid: {"path": str(p.resolve()), "format": "ani-h5", "energy_unit": "hartree",
                  "keys": dict(KEYS)} for fid, p in levels.items()}
    spec = parse_spec({"name": name, "description": "COMP6v2 (Devereux et al., JCTC 2020, "
                       "doi 10.1021/acs.jctc.0c00121; Zenodo 10.5281/zenodo.10126157)",
                       "fidelities": fids})
    return spec.save(out / f"{name}.yaml")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for spec and data")
    parser.add_argument("--local", type=Path,
                        help="use this .h5 (or the release .tar.gz) instead of downloading")
    parser.add_argument("--level-name", default="wb97x_631gd",
                        help="fidelity name of the main file (default: %(default)s)")
    parser.add_argument("--extra", action="append", default=[], metavar="NAME=FILE",
                        help="a higher level on the same geometries (repeatable)")
    parser.add_argument("--name", default="comp6v2", help="spec name (default: %(default)s)")
    parser.add_argument("--md5", help="expected MD5 of the downloaded tarball or --local file")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.local:
        if not args.local.is_file():
            raise SystemExit(f"file not found: {args.local}")
        digests = verify_file(args.local, md5=args.md5)
        print(f"{args.local}: md5 {digests['md5']}{' (verified)' if args.md5 else ''}")
        h5 = extract_h5(args.local, args.out) if args.local.name.endswith(
            (".tar.gz", ".tgz", ".tar")) else args.local
    else:
        archive = download(URL, args.out / ARCHIVE, md5=args.md5 or MD5)
        print(f"{archive}: md5 verified")
        h5 = extract_h5(archive, args.out)
    levels = {args.level_name: h5}
    for item in args.extra:
        fid, sep, path = item.partition("=")
        if not sep or not fid or not Path(path).is_file():
            raise SystemExit(f"--extra expects NAME=FILE with an existing file, got {item!r}")
        levels[fid] = Path(path)
    spec = write_spec(levels, args.out, args.name)
    ds = load_dataset(spec)
    print(f"{spec}: {len(ds)} conformers, {int(ds.n_atoms.min())}-{int(ds.n_atoms.max())} "
          f"atoms, fidelities {', '.join(ds.fidelities)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
