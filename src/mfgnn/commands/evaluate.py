"""``mfgnn evaluate RUN_DIR [--data SPEC] [--split test] [--json FILE]``"""

from __future__ import annotations

import argparse

HELP = "energy and force errors of a trained run"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", help="run folder (holds model.pt, config.yaml, split.json)")
    p.add_argument("--data", help="dataset spec to evaluate on (all rows) instead of the run's split")
    p.add_argument("--split", default="test", choices=["train", "valid", "test"])
    p.add_argument("--json", help="also write the metrics to this JSON file")


def run(args: argparse.Namespace) -> int:
    from ..metrics import format_metrics
    from ..training.evaluation import evaluate_run

    metrics = evaluate_run(args.run_dir, data=args.data, split=args.split, json_path=args.json)
    print(format_metrics(metrics))
    return 0
