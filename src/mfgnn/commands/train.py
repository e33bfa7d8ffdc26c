"""``mfgnn train CONFIG --out DIR [--resume] [--max-epochs N] [--max-time S]``"""

from __future__ import annotations

import argparse
import dataclasses

HELP = "train a model from a YAML run configuration"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="run configuration (YAML)")
    p.add_argument("--out", required=True, help="run folder to write")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its last checkpoint")
    p.add_argument("--max-epochs", type=int, help="override train.max_epochs")
    p.add_argument("--max-time", type=float, help="override train.max_time (seconds)")


def run(args: argparse.Namespace) -> int:
    from ..config import load_config
    from ..metrics import format_metrics
    from ..training.build import train

    config = load_config(args.config)
    overrides = {k: v for k, v in (("max_epochs", args.max_epochs),
                                   ("max_time", args.max_time)) if v is not None}
    # dataclasses.replace checks the overrides like the file's own values
    config.train = dataclasses.replace(config.train, **overrides)
    metrics = train(config, args.out, resume=args.resume)
    print(f"model written to {args.out}/model.pt; test split:")
    print(format_metrics(metrics))
    return 0
