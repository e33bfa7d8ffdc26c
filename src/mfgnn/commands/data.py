"""``mfgnn data summary SPEC [--json FILE]``"""

from __future__ import annotations

import argparse

HELP = "dataset tools"


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="data_command", required=True)
    s = sub.add_parser("summary", help="structures, labels, elements and self-energies, "
                                       "per dataset and per fidelity")
    s.add_argument("spec", help="dataset spec (YAML)")
    s.add_argument("--json", help="also write the summary to this JSON file")


def run(args: argparse.Namespace) -> int:
    from ..data.summary import run_summary

    if args.data_command == "summary":
        return run_summary(args.spec, args.json)
    raise AssertionError(args.data_command)
