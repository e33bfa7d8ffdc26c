"""Arguments of ``mfgnn experiment`` and the entry point that runs the matrix."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="dataset spec (YAML)")
    p.add_argument("--low", required=True, help="low-level fidelity (energies + forces)")
    p.add_argument("--high", required=True, help="high-level fidelity")
    p.add_argument("--train", type=int, required=True, help="training structures")
    p.add_argument("--valid", type=int, required=True, help="validation structures")
    p.add_argument("--test", type=int, required=True, help="test structures")
    p.add_argument("--seeds", type=int, default=3, help="seeds per experiment")
    p.add_argument("--config", help="base run configuration (model, loss, train sections)")
    p.add_argument("--max-epochs", type=int, help="override train.max_epochs")
    p.add_argument("--max-time", type=float, help="seconds of training per run")
    p.add_argument("--heads", default="independent,delta,tethered",
                   help="head modes of the MF experiments, comma separated")
    p.add_argument("--experiments",
                   help="run only these experiments of the matrix, comma separated, e.g. "
                        "'SF-f12/E,MF-mp2/EF-f12/E[delta]'")
    p.add_argument("--out", required=True, help="output folder (re-running resumes)")


def run_from_args(args) -> int:
    from .matrix import run_experiment

    return run_experiment(args)
