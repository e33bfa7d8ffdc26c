"""``mfgnn data summary SPEC [--json FILE]`` and
``mfgnn data pack SPEC --out DIR [--chunk-rows N] [--force]``."""

from __future__ import annotations

import argparse
import sys

HELP = "dataset tools"


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="data_command", required=True)
    s = sub.add_parser("summary", help="structures, labels, elements and self-energies, "
                                       "per dataset and per fidelity")
    s.add_argument("spec", help="dataset spec (YAML)")
    s.add_argument("--json", help="also write the summary to this JSON file")
    k = sub.add_parser("pack", help="write a dataset spec's rows as flat memory-mapped "
                                    "arrays (atomic, resumable) for training on large data")
    k.add_argument("spec", help="dataset spec (YAML): npz, ANI HDF5 or extxyz files")
    k.add_argument("--out", required=True, help="pack folder to write (DIR.partial holds "
                                                "the work in progress; rerun to resume)")
    k.add_argument("--chunk-rows", type=int, default=50_000,
                   help="structures read and written at once (bounds memory; default 50000)")
    k.add_argument("--force", action="store_true",
                   help="repack even if DIR or DIR.partial was made from other sources")


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    if args.data_command == "summary":
        from ..data.summary import run_summary

        return run_summary(args.spec, args.json)
    if args.data_command == "pack":
        from ..data.pack import pack_dataset
        from ..errors import ConfigError

        if args.chunk_rows < 1:
            raise ConfigError(f"--chunk-rows must be >= 1, got {args.chunk_rows}")
        pack_dataset(args.spec, args.out, chunk_rows=args.chunk_rows, force=args.force,
                     log=_stderr)
        return 0
    raise AssertionError(args.data_command)
