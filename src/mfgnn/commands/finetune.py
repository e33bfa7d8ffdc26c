"""``mfgnn finetune BASE CONFIG --out DIR [--resume]`` and ``mfgnn finetune BASE
--list-groups``: continue training a model (a run folder or ``model.pt``) on new data
(:mod:`mfgnn.training.finetune`)."""

from __future__ import annotations

import argparse
import dataclasses

HELP = "fine-tune a trained model on new data (new heads, frozen groups, replay)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("base", help="the trained model: a run folder or a model.pt file")
    p.add_argument("config", nargs="?", help="run configuration with a finetune: section")
    p.add_argument("--out", help="run folder to write")
    p.add_argument("--resume", action="store_true", help="continue an interrupted fine-tune")
    p.add_argument("--max-epochs", type=int, help="override train.max_epochs")
    p.add_argument("--max-time", type=float, help="override train.max_time (seconds)")
    p.add_argument("--list-groups", action="store_true",
                   help="list the parameter groups finetune.freeze accepts, and stop")


def run(args: argparse.Namespace) -> int:
    from ..config import load_config
    from ..errors import ConfigError
    from ..metrics import format_metrics
    from ..model_file import load_model
    from ..training.finetune import parameter_groups
    from ..training.finetune_build import finetune

    if args.list_groups:
        model = load_model(args.base)
        for name, params in parameter_groups(model).items():
            count = sum(dict(model.named_parameters())[p].numel() for p in params)
            print(f"{name:<28}{len(params):>4} tensors {count:>9} parameters")
        return 0
    if not args.config or not args.out:
        raise ConfigError("mfgnn finetune needs BASE, CONFIG and --out (or --list-groups)")
    config = load_config(args.config)
    overrides = {k: v for k, v in (("max_epochs", args.max_epochs),
                                   ("max_time", args.max_time)) if v is not None}
    config.train = dataclasses.replace(config.train, **overrides)
    metrics = finetune(args.base, config, args.out, resume=args.resume)
    print(f"model written to {args.out}/model.pt; test split:")
    print(format_metrics(metrics))
    return 0
