"""Run configuration: a YAML file parsed into typed dataclasses.

Example::

    data: data.yaml          # a dataset spec: a path (relative to this file) or inline
    labels: {mp2: [energy, forces], f12: [energy]}
    split: {train: 1000, valid: 200, test: 1000, seed: 0}
    model: {n_features: 64, n_interactions: 2, n_atom_layers: 3, n_sensitivities: 20,
            cutoff: 6.5, tensor_order: 2, heads: delta, head_penalty: 1.0e-3}
    loss: {energy_weight: 1.0, forces_weight: 1.0, hierarchicality_weight: 0.01}
    train: {max_epochs: 500, batch_size: 64, lr: 1.0e-3, patience: 25, seed: 0}

Each section is a typed dataclass that lives beside the code it configures
(:class:`~mfgnn.data.splits.SplitConfig`, :class:`~mfgnn.nn.HIPNNConfig`,
:class:`~mfgnn.loss.LossConfig`, :class:`~mfgnn.training.config.TrainConfig`) and checks
its values when it is made; unknown keys raise :class:`~mfgnn.errors.ConfigError` naming
the key and the closest valid one (:mod:`mfgnn.config_checks`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .config_checks import build_section, check_keys, closest
from .data.splits import SplitConfig
from .errors import ConfigError
from .loss import LossConfig
from .nn import HIPNNConfig
from .training.config import TrainConfig
from .training.finetune import FinetuneConfig

__all__ = ["LABEL_KINDS", "LossConfig", "RunConfig", "SplitConfig", "TrainConfig",
           "config_from_dict", "load_config"]

#: Label kinds a fidelity can be trained on.
LABEL_KINDS = ("energy", "forces")

@dataclass
class RunConfig:
    """Everything that defines one training run."""

    data: str | dict[str, Any]
    labels: dict[str, list[str]]
    split: SplitConfig = field(default_factory=SplitConfig)
    model: HIPNNConfig = field(default_factory=HIPNNConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    #: only for ``mfgnn finetune`` (see :mod:`mfgnn.training.finetune`)
    finetune: FinetuneConfig | None = None
    #: folder that relative paths in ``data`` are resolved against
    base_dir: str = "."

    def resolved_data(self):
        """The dataset spec: a path resolved against ``base_dir``, or an inline mapping
        parsed with its relative paths resolved against ``base_dir``."""
        if isinstance(self.data, str):
            path = Path(self.data)
            if not path.is_absolute():
                path = Path(self.base_dir) / path
            return str(path)
        from .data import parse_spec

        return parse_spec(dict(self.data), base_dir=self.base_dir)

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form (what ``from_dict`` reads)."""
        return dataclasses.asdict(self)


def _check_labels(labels: Any, where: str) -> dict[str, list[str]]:
    if not isinstance(labels, dict) or not labels:
        raise ConfigError(
            f"{where}: 'labels' must map fidelity names to label lists, "
            "e.g. {mp2: [energy, forces], ccsdt: [energy]}"
        )
    out: dict[str, list[str]] = {}
    for fidelity, kinds in labels.items():
        if isinstance(kinds, str):
            kinds = [kinds]
        kinds = list(kinds or [])
        for kind in kinds:
            if kind not in LABEL_KINDS:
                raise ConfigError(
                    f"{where}: labels.{fidelity}: unknown label {kind!r}"
                    f"{closest(str(kind), LABEL_KINDS)} (allowed: energy, forces)"
                )
        out[str(fidelity)] = kinds
    return out


def config_from_dict(values: dict[str, Any], base_dir: str | Path = ".",
                     where: str = "config") -> RunConfig:
    """Parse a configuration mapping; ``where`` names its source in error messages."""
    if not isinstance(values, dict):
        raise ConfigError(f"{where}: expected a mapping at the top level")
    check_keys(values, RunConfig, where)
    if "data" not in values:
        raise ConfigError(f"{where}: missing required key 'data' (a dataset spec)")
    if "labels" not in values:
        raise ConfigError(f"{where}: missing required key 'labels'")
    config = RunConfig(
        data=values["data"],
        labels=_check_labels(values["labels"], where),
        split=_section(SplitConfig, values.get("split"), where, "split"),
        model=_section(HIPNNConfig, values.get("model"), where, "model"),
        loss=_section(LossConfig, values.get("loss"), where, "loss"),
        train=_section(TrainConfig, values.get("train"), where, "train"),
        finetune=(_section(FinetuneConfig, values["finetune"], where, "finetune")
                  if values.get("finetune") is not None else None),
        base_dir=str(values.get("base_dir", base_dir)),
    )
    return config


def _section(cls, values, where: str, name: str):
    """A section built by :func:`~mfgnn.config_checks.build_section`; its own value
    errors are prefixed with the file they come from."""
    try:
        return build_section(cls, values, f"{where}: {name}")
    except ConfigError as exc:
        text = str(exc)
        raise ConfigError(text if text.startswith(where) else f"{where}: {text}") from None


def load_config(path: str | Path) -> RunConfig:
    """Read a YAML run configuration; relative paths in it are relative to the file."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config: {exc.strerror or exc}") from None
    try:
        values = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    return config_from_dict(values or {}, base_dir=path.resolve().parent, where=str(path))
