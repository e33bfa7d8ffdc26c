"""The ``mfgnn`` command.

    mfgnn train CONFIG --out DIR [--resume]
    mfgnn evaluate RUN_DIR [--data SPEC] [--split test] [--json FILE]
    mfgnn data summary SPEC [--json FILE]
    mfgnn experiment --data SPEC --low NAME --high NAME --train N ... --out DIR
    mfgnn demo [--out DIR] [--max-epochs N] [--max-time S]

Errors caused by input (bad files, keys, units) print one message and exit with status
2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import sys

from . import __version__
from .errors import MfgnnError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mfgnn", description="Multi-fidelity machine-learning interatomic potentials.")
    parser.add_argument("--version", action="version", version=f"mfgnn {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a model from a YAML run configuration")
    p.add_argument("config", help="run configuration (YAML)")
    p.add_argument("--out", required=True, help="run folder to write")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its last checkpoint")
    p.add_argument("--max-epochs", type=int, help="override train.max_epochs")
    p.add_argument("--max-time", type=float, help="override train.max_time (seconds)")

    p = sub.add_parser("evaluate", help="energy and force errors of a trained run")
    p.add_argument("run_dir", help="run folder (holds model.pt, config.yaml, split.json)")
    p.add_argument("--data", help="dataset spec to evaluate on (all rows) instead of the run's split")
    p.add_argument("--split", default="test", choices=["train", "valid", "test"])
    p.add_argument("--json", help="also write the metrics to this JSON file")

    p = sub.add_parser("data", help="dataset tools")
    data_sub = p.add_subparsers(dest="data_command", required=True)
    s = data_sub.add_parser("summary", help="structures, labels, elements and self-energies")
    s.add_argument("spec", help="dataset spec (YAML)")
    s.add_argument("--json", help="also write the summary to this JSON file")

    p = sub.add_parser("experiment",
                       help="the paper's experiment matrix: which labels give the best high level")
    from .experiment.command import add_arguments as add_experiment_arguments
    add_experiment_arguments(p)

    p = sub.add_parser("demo", help="multi- vs single-fidelity training on the bundled H2CO data")
    p.add_argument("--out", default="runs/demo", help="folder for the two runs")
    p.add_argument("--max-epochs", type=int, default=None)
    p.add_argument("--max-time", type=float, default=None,
                   help="seconds of training per model")
    p.add_argument("--resume", action="store_true", help="continue unfinished demo runs")
    return parser


def _dispatch(args) -> int:
    if args.command == "train":
        from .config import load_config
        from .run import format_metrics, train

        config = load_config(args.config)
        if args.max_epochs is not None:
            config.train.max_epochs = args.max_epochs
        if args.max_time is not None:
            config.train.max_time = args.max_time
        metrics = train(config, args.out, resume=args.resume)
        print(f"model written to {args.out}/model.pt; test split:")
        print(format_metrics(metrics))
        return 0
    if args.command == "evaluate":
        from .run import evaluate_run, format_metrics

        metrics = evaluate_run(args.run_dir, data=args.data, split=args.split,
                               json_path=args.json)
        print(format_metrics(metrics))
        return 0
    if args.command == "data":
        from .data.summary import run_summary

        return run_summary(args.spec, args.json)
    if args.command == "experiment":
        from .experiment.command import run_from_args

        return run_from_args(args)
    if args.command == "demo":
        from .quickstart import run_demo

        return run_demo(args.out, max_epochs=args.max_epochs, max_time=args.max_time,
                        resume=args.resume)
    raise AssertionError(args.command)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _dispatch(args)
    except MfgnnError as exc:
        if args.debug:
            raise
        print(f"mfgnn: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a file that cannot be read or written, outside the checks
        if args.debug:
            raise
        where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        print(f"mfgnn: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mfgnn: interrupted; rerun with --resume to continue", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
