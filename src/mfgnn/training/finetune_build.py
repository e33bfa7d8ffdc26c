"""``mfgnn finetune``: a trained model, new data, and the fine-tuning parts handed to the
same :class:`~mfgnn.training.trainer.Trainer` (see :mod:`mfgnn.training.finetune`)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from ..config import RunConfig, load_config
from ..data import Split, load_dataset
from ..errors import CheckpointError, ConfigError
from ..loss import MultiFidelityLoss
from ..model_file import load_model, read_model_file, save_model
from ..nn import MultiFidelityHIPNN
from .batches import BatchSource, ReplayMix, TrainingData
from .build import build_optimizer, build_scheduler, loss_parameter_groups, pick_device
from .ema import ExponentialMovingAverage
from .evaluation import check_elements, evaluate_model
from .finetune import (FinetuneConfig, discriminative_groups, effective_head_rows, freeze,
                       set_effective_head_rows)
from .head_refit import refit_finishers
from .progress import STDERR, EpochProgress, say
from .run_folder import RunFolder
from .setup import RunSetup, setup_run
from .trainer import Trainer


def model_levels(base: MultiFidelityHIPNN, config: RunConfig, data_order) -> list[str]:
    """The base model's levels, then the new data's trained levels it lacks (in the
    data's order): a new level sits above the base's. The data may not order two base
    levels the other way round."""
    shared = [f for f in data_order if f in base.fidelities]
    if shared != [f for f in base.fidelities if f in shared]:
        raise ConfigError(f"the data orders the base model's levels {shared} unlike the "
                          f"model ({list(base.fidelities)})")
    new = [f for f in data_order if f not in base.fidelities and config.labels.get(f)]
    return list(base.fidelities) + new


def extended_model(base: MultiFidelityHIPNN, levels: list[str], setup: RunSetup,
                   ft: FinetuneConfig) -> MultiFidelityHIPNN:
    """A copy of ``base`` with one head per level of ``levels``: the base's levels keep
    their heads, self-energies and target shifts; a new level's head starts as a copy of
    ``ft.init_from``'s (or zero), its self-energies and shift are fitted on the new
    training rows (``refit_self_energies`` refits the base's levels present too)."""
    model = MultiFidelityHIPNN(base.config, levels, base.elements)
    state = {k: v for k, v in base.state_dict().items()
             if not k.startswith("heads.") and k not in ("self_energies", "target_shift",
                                                         "target_scale")}
    model.load_state_dict(state, strict=False)
    if ft.init_from is not None and ft.init_from not in base.fidelities:
        raise ConfigError(f"finetune.init_from: {ft.init_from!r} is not a level of the base "
                          f"model ({', '.join(base.fidelities)})")
    old = effective_head_rows(base.heads)
    rows = []
    for w_old, b_old in old:
        w = w_old.new_zeros(len(levels), w_old.shape[1])
        b = b_old.new_zeros(len(levels))
        for t, name in enumerate(levels):
            src = name if name in base.fidelities else ft.init_from
            if src is not None:
                w[t], b[t] = w_old[base.fidelities.index(src)], b_old[base.fidelities.index(src)]
        rows.append((w, b))
    set_effective_head_rows(model.heads, rows)
    se = torch.zeros(len(levels), len(base.elements), dtype=torch.float64)
    shift = torch.zeros(len(levels), dtype=torch.float64)
    for t, name in enumerate(levels):
        refit = name not in base.fidelities or (ft.refit_self_energies and name in setup.fidelities)
        if not refit:
            k = base.fidelities.index(name)
            se[t], shift[t] = base.self_energies[k], base.target_shift[k]
            continue
        if name not in setup.fidelities or "energy" not in setup.config.labels.get(name, []):
            raise ConfigError(f"level {name!r}: new or refitted self-energies need its energies "
                              "in labels")
        # fitted on the training rows by setup_run, in the data's element order
        values = setup.self_energies[setup.fidelities.index(name)]
        for k, z in enumerate(base.elements):
            if z in setup.dataset.elements:
                se[t, k] = float(values[setup.dataset.elements.index(z)])
        if setup.target_scales is not None and name in setup.target_scales.fidelities:
            shift[t] = float(setup.target_scales.shift[setup.target_scales.fidelities.index(name)])
    model.self_energies.copy_(se)
    model.set_target_scales(shift, base.target_scale[:1].expand(len(levels)).clone())
    return model


def replay_source(ft: FinetuneConfig, base_path: Path, config: RunConfig, levels, labels,
                  settings) -> tuple[BatchSource, BatchSource]:
    """Replay rows (training) and rows to report the old levels on, with the base
    model's labels: the base run's data and training / validation split (``data: base``),
    or every row of another spec (and a seeded sample of 500 of them)."""
    if ft.replay.data == "base":
        run = base_path if base_path.is_dir() else base_path.parent
        if not (run / "config.yaml").is_file() or not (run / "split.json").is_file():
            raise ConfigError(f"finetune.replay.data: base needs BASE to be a run folder with "
                              f"config.yaml and split.json; {run} has none")
        base_config = load_config(run / "config.yaml")
        dataset = load_dataset(base_config.resolved_data(), cutoff=config.model.cutoff)
        split = Split.load(run / "split.json")
        pool, report = split.train, split.valid
    else:
        path = Path(ft.replay.data)
        path = path if path.is_absolute() else Path(config.base_dir) / path
        dataset = load_dataset(str(path), cutoff=config.model.cutoff)
        pool = np.arange(len(dataset))
        report = np.random.default_rng(0).permutation(pool)[:500]
    columns = [dataset.fidelities.index(f) if f in dataset.fidelities else None for f in levels]
    kinds = [set(labels.get(f, [])) for f in levels]

    def source(rows, size, shuffle):
        return BatchSource(dataset, rows, columns, size, shuffle=shuffle, seed=settings.seed,
                           cache_limit=settings.cache_structures, kinds=kinds)

    return (source(pool, settings.batch_size, True),
            source(report, settings.eval_batch_size, False))


def build_finetune_trainer(base: str | Path, config: RunConfig, out_dir: str | Path,
                           resume: bool = False, log=STDERR) -> Trainer:
    """The trainer that fine-tunes the model at ``base`` (a run folder or a model file)
    on the data of ``config`` (whose ``finetune:`` section sets the parts)."""
    base_path = Path(base)
    payload = read_model_file(base_path)
    base_model = load_model(base_path)
    if not isinstance(base_model, MultiFidelityHIPNN):
        raise ConfigError(f"{base_path}: a {type(base_model).__name__} cannot be fine-tuned "
                          "(fine-tuning extends a MultiFidelityHIPNN's heads)")
    ft = config.finetune or FinetuneConfig()
    config = dataclasses.replace(config, model=base_model.config)
    setup = setup_run(config, Path(out_dir))
    config = setup.config  # with what the setup chose (batch_size: auto)
    for rows in (setup.split.train, setup.split.valid, setup.split.test):
        check_elements(base_model, setup.dataset, rows, base_path)
    levels = model_levels(base_model, config, setup.dataset.fidelities)
    torch.manual_seed(config.train.seed)
    model = extended_model(base_model, levels, setup, ft)
    frozen = freeze(model, ft.freeze)
    settings = config.train
    device = pick_device(settings.device)
    model = model.to(device)
    base_labels = {f: list(v) for f, v in base_model.metadata.get("trained_labels", {}).items()}
    labels = {f: list(config.labels.get(f, [])) for f in levels}
    if ft.replay is not None:
        for f, kinds in base_labels.items():
            labels[f] = sorted(set(labels.get(f, [])) | set(kinds))
    columns = [setup.dataset.fidelities.index(f) if f in setup.dataset.fidelities else None
               for f in levels]
    kinds = [set(config.labels.get(f, [])) for f in levels]

    def source(rows, shuffle):
        return BatchSource(setup.dataset, rows, columns,
                           settings.batch_size if shuffle else settings.eval_batch_size,
                           shuffle=shuffle, seed=settings.seed,
                           cache_limit=settings.cache_structures, kinds=kinds)

    data = TrainingData(source(setup.split.train, True), source(setup.split.valid, False),
                        source(setup.split.test, False))
    report = None
    if ft.replay is not None and ft.replay.fraction > 0:
        pool, report = replay_source(ft, base_path, config, levels, base_labels, settings)
        data.train = ReplayMix(data.train, pool, ft.replay.fraction)
    scales = model.target_scale.cpu() if base_model.config.scale_targets else None
    loss = MultiFidelityLoss(levels, labels, config.loss, scales)
    optimizer = build_optimizer(discriminative_groups(model, settings.lr, ft.lr_decay)
                                + loss_parameter_groups(loss, settings, device), settings)
    lineage = {"base": str(base_path), "base_sha256": payload.get("state_sha256"),
               "base_levels": list(base_model.fidelities),
               "new_levels": [f for f in levels if f not in base_model.fidelities],
               "frozen_groups": list(ft.freeze), "frozen_parameters": len(frozen),
               "lr_decay": ft.lr_decay,
               "replay": dataclasses.asdict(ft.replay) if ft.replay else None}
    provenance = list(getattr(setup.dataset, "provenance", []))

    def write_model(path, trained, info):
        save_model(path, trained.cpu(), labels,
                   {**info, "provenance": provenance, "finetuned_from": lineage})
        trained.to(device)

    folder = RunFolder(out_dir, config.to_dict(), setup.split)
    if folder.checkpoint.is_file() and not resume:
        raise CheckpointError(f"{folder.path} already holds a run (checkpoint.pt); pass "
                              "--resume to continue it or choose another output folder")
    for note in setup.notes:
        say(log, note)
    trainer = Trainer(
        model, loss, optimizer,
        build_scheduler(optimizer, settings), data, folder, settings,
        ema=ExponentialMovingAverage(model, settings.ema_decay) if settings.ema_decay > 0 else None,
        callbacks=[EpochProgress(levels, log)], write_model=write_model,
        finishers=refit_finishers(labels, settings, config.loss.per_atom_energy),
        device=device, log=log)
    trainer.replay_report, trainer.replay_before = report, None
    trainer.base_levels = base_model.fidelities
    if report is not None:  # the untrained copy predicts the base levels as the base does
        _, trainer.replay_before = evaluate_model(model, report.batches())
    if resume and folder.checkpoint.is_file():
        trainer.restore()
    return trainer


def finetune(base: str | Path, config: RunConfig | str | Path, out_dir: str | Path,
             resume: bool = False, log=STDERR) -> dict:
    """Fine-tune ``base`` on ``config``'s data into ``out_dir``; returns the test metrics.
    With replay, also writes ``replay_metrics.json``: the base levels' errors on the
    replay report rows before (base model) and after fine-tuning."""
    if not isinstance(config, RunConfig):
        config = load_config(config)
    trainer = build_finetune_trainer(base, config, out_dir, resume=resume, log=log)
    result = trainer.fit()
    if trainer.replay_report is not None:
        _, after = evaluate_model(trainer.model, trainer.replay_report.batches())
        levels = trainer.base_levels
        trainer.folder.write_json("replay_metrics.json", {
            "before": {f: m for f, m in trainer.replay_before.items() if f in levels},
            "after": {f: m for f, m in after.items() if f in levels}})
    return result
