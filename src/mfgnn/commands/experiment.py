"""``mfgnn experiment --data SPEC --low NAME --high NAME --train N --valid N --test N
--out DIR [--paradigms mfl,tl,frozen,delta,reptile]``: the paper's experiment matrix
(:mod:`mfgnn.experiment.matrix`) and, with ``--paradigms``, transfer learning,
Δ-learning and Reptile at the same budget (:mod:`mfgnn.experiment.paradigms`)."""

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
    p.add_argument("--config", help="base run configuration: model, loss and train sections "
                   "(keys override the presets'), energy_only (train keys of the runs "
                   "without forces), meta, delta, finetune")
    p.add_argument("--max-epochs", type=int, help="override train.max_epochs")
    p.add_argument("--max-time", type=float, help="seconds of training per run")
    p.add_argument("--heads", default="independent,delta,tethered",
                   help="head modes of the MF experiments, comma separated")
    p.add_argument("--experiments",
                   help="run only these experiments of the matrix, comma separated, e.g. "
                        "'SF-f12/E,MF-mp2/EF-f12/E[delta]'")
    p.add_argument("--paradigms", default="mfl",
                   help="training paradigms, comma separated: mfl (the SF/MF matrix), tl "
                        "(pre-train low E+F, fine-tune high E), frozen (the same with the "
                        "trunk frozen: a linear correction on low-level features), delta "
                        "(low model + correction), reptile (Reptile over both levels, then fine-tune); "
                        "options from the --config sections finetune:, delta:, meta:")
    p.add_argument("--out", required=True, help="output folder (re-running resumes)")


#: How every experiment name starts: a comma before anything else is part of a name
#: (``Reptile-k5-mp2/EF,f12/E``).
_NAME_STARTS = ("SF-", "MF-", "TL-", "Frozen-", "Δ-", "Reptile-")


def _names(text: str | None, experiments: bool = False) -> tuple[str, ...] | None:
    """Comma-separated names; with ``experiments`` a piece that does not start an
    experiment name continues the one before."""
    if not text:
        return None
    names: list[str] = []
    for piece in (n.strip() for n in text.split(",")):
        if experiments and names and piece and not piece.startswith(_NAME_STARTS):
            names[-1] += "," + piece
        elif piece:
            names.append(piece)
    return tuple(names)


def run(args: argparse.Namespace) -> int:
    from ..experiment.matrix import ExperimentSettings, run_experiment

    settings = ExperimentSettings(
        data=args.data, low=args.low, high=args.high, train=args.train, valid=args.valid,
        test=args.test, out=args.out, seeds=args.seeds, base=args.config,
        max_epochs=args.max_epochs, max_time=args.max_time,
        heads=_names(args.heads) or (), experiments=_names(args.experiments, experiments=True),
        paradigms=_names(args.paradigms) or ())
    return run_experiment(settings)
