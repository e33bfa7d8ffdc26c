"""``mfgnn experiment --data SPEC --low NAME --high NAME --train N --valid N --test N
--out DIR``: the paper's experiment matrix (:mod:`mfgnn.experiment.matrix`)."""

from __future__ import annotations

import argparse

HELP = "the paper's experiment matrix: which labels give the best high level"


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


def _names(text: str | None) -> tuple[str, ...] | None:
    if not text:
        return None
    return tuple(n.strip() for n in text.split(",") if n.strip())


def run(args: argparse.Namespace) -> int:
    from ..experiment.matrix import ExperimentSettings, run_experiment

    settings = ExperimentSettings(
        data=args.data, low=args.low, high=args.high, train=args.train, valid=args.valid,
        test=args.test, out=args.out, seeds=args.seeds, base=args.config,
        max_epochs=args.max_epochs, max_time=args.max_time,
        heads=_names(args.heads) or (), experiments=_names(args.experiments))
    return run_experiment(settings)
