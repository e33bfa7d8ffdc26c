"""``mfgnn evaluate RUN_DIR [--data SPEC] [--split test] [--json FILE]``"""

from __future__ import annotations

import argparse

HELP = "energy and force errors of a trained run"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", help="run folder (holds model.pt, config.yaml, split.json)")
    p.add_argument("--data", help="dataset spec to evaluate on (all rows) instead of the run's split")
    p.add_argument("--split", default="test", choices=["train", "valid", "test"])
    p.add_argument("--json", help="also write the metrics to this JSON file")


def format_by_dataset(metrics: dict) -> str:
    """The ``by_dataset`` entries of :func:`~mfgnn.training.evaluation.evaluate_run`'s
    metrics as a table per fidelity (empty when the data holds one dataset)."""
    lines: list[str] = []

    def fmt(x) -> str:
        return f"{x:>10.2f}" if x is not None else f"{'-':>10}"

    for fid, m in metrics.items():
        parts = m.get("by_dataset")
        if not parts:
            continue
        width = max(12, *(len(name) + 2 for name in parts))
        lines.append(f"{fid} by dataset (E in meV, F in meV/Å):")
        lines.append(f"  {'dataset':<{width}}{'E RMSE':>10}{'E MAE':>10}{'F RMSE':>10}"
                     f"{'F MAE':>10}{'n_E':>8}{'n_F':>8}")
        for name, e in parts.items():
            lines.append(f"  {name:<{width}}{fmt(e.get('energy_rmse'))}{fmt(e.get('energy_mae'))}"
                         f"{fmt(e.get('forces_rmse'))}{fmt(e.get('forces_mae'))}"
                         f"{e.get('n_energy', 0):>8}{e.get('n_forces', 0):>8}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from ..metrics import format_metrics
    from ..training.evaluation import evaluate_run

    metrics = evaluate_run(args.run_dir, data=args.data, split=args.split, json_path=args.json)
    print(format_metrics(metrics))
    by_dataset = format_by_dataset(metrics)
    if by_dataset:
        print(by_dataset)
    return 0
