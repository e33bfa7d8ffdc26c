"""Run configuration: a YAML file parsed into typed dataclasses.

Example::

    data: data.yaml          # a dataset spec: a path (relative to this file) or inline
    labels: {mp2: [energy, forces], f12: [energy]}
    split: {train: 1000, valid: 200, test: 1000, seed: 0}
    model: {n_features: 64, n_interactions: 2, n_atom_layers: 3, n_sensitivities: 20,
            cutoff: 6.5, tensor_order: 2, heads: delta, head_penalty: 1.0e-3}
    loss: {energy_weight: 1.0, forces_weight: 1.0, hierarchicality_weight: 0.01}
    train: {max_epochs: 500, batch_size: 64, lr: 1.0e-3, patience: 25, seed: 0}

Unknown keys raise :class:`~mfgnn.errors.ConfigError` naming the key and the closest
valid one.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import yaml

from .errors import ConfigError
from .nn import HIPNNConfig

#: Label kinds a fidelity can be trained on.
LABEL_KINDS = ("energy", "forces")

Number = Union[int, float]


@dataclass
class SplitConfig:
    """Random split of the dataset rows: counts (int) or fractions (float) per split.

    ``test: null`` puts every row not in train/valid into test. ``file`` loads a saved
    split (JSON written by a previous run) instead of drawing one.
    """

    train: Number = 0.8
    valid: Number = 0.1
    test: Number | None = None
    seed: int = 0
    file: str | None = None


@dataclass
class LossConfig:
    """Weights of the loss terms (paper Eq. 1).

    ``energy_weight`` w_E and ``forces_weight`` w_F multiply RMSE+MAE in eV and eV/Å; a
    float applies to every fidelity, a mapping ``{fidelity: weight}`` sets them one by
    one (missing fidelities get 1).

    ``hierarchicality_weight`` w_H is *relative*: the term added is
    w_H · L_H,t · sg(w_E L_E,t + w_F L_F,t), where sg stops the gradient. The regularizer
    is thus always w_H · L_H (L_H ≤ number of blocks) times the fidelity's error terms and
    can never swamp them, whatever the units; with the paper's absolute w_H = 1 it did
    (the model collapsed once errors were small).

    ``per_atom_energy`` divides each energy error by the number of atoms.
    """

    energy_weight: float | dict[str, float] = 1.0
    forces_weight: float | dict[str, float] = 1.0
    hierarchicality_weight: float = 0.01
    per_atom_energy: bool = False

    def weight(self, kind: str, fidelity: str) -> float:
        """The weight of ``kind`` ("energy" or "forces") for ``fidelity``."""
        w = self.energy_weight if kind == "energy" else self.forces_weight
        if isinstance(w, dict):
            return float(w.get(fidelity, 1.0))
        return float(w)


@dataclass
class TrainConfig:
    """Optimisation settings.

    Adam or AdamW with ReduceLROnPlateau on the validation loss, early stopping after
    ``patience`` epochs without improvement, an exponential moving average of the weights
    (``ema_decay``, 0 turns it off; validation and the saved model use the EMA weights),
    gradient-norm clipping (``grad_clip``, 0 turns it off), ``max_time`` seconds of
    wall-clock budget, and ``max_bad_steps`` consecutive non-finite losses before giving up.
    Splits of at most ``cache_structures`` structures keep their graphs in memory.
    """

    max_epochs: int = 500
    batch_size: int = 64
    eval_batch_size: int = 256
    lr: float = 1.0e-3
    optimizer: str = "adam"
    weight_decay: float = 0.0
    scheduler_patience: int = 10
    scheduler_factor: float = 0.5
    min_lr: float = 1.0e-6
    patience: int = 25
    ema_decay: float = 0.99
    grad_clip: float = 10.0
    seed: int = 0
    max_time: float | None = None
    max_bad_steps: int = 20
    device: str = "auto"
    cache_structures: int = 200_000


@dataclass
class RunConfig:
    """Everything that defines one training run."""

    data: str | dict[str, Any]
    labels: dict[str, list[str]]
    split: SplitConfig = field(default_factory=SplitConfig)
    model: HIPNNConfig = field(default_factory=HIPNNConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
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


def _closest(key: str, allowed: list[str]) -> str:
    match = difflib.get_close_matches(key, allowed, n=1, cutoff=0.5)
    return f"; did you mean {match[0]!r}?" if match else ""


def _build(cls, values: Any, where: str):
    """Make dataclass ``cls`` from a mapping, rejecting unknown keys."""
    if values is None:
        return cls()
    if isinstance(values, cls):
        return values
    if not isinstance(values, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(values).__name__}")
    names = [f.name for f in dataclasses.fields(cls)]
    for key in values:
        if key not in names:
            raise ConfigError(
                f"{where}: unknown key {key!r}{_closest(key, names)} "
                f"(allowed: {', '.join(names)})"
            )
    return cls(**values)


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
                    f"{_closest(str(kind), list(LABEL_KINDS))} (allowed: energy, forces)"
                )
        out[str(fidelity)] = kinds
    return out


def config_from_dict(values: dict[str, Any], base_dir: str | Path = ".",
                     where: str = "config") -> RunConfig:
    """Parse a configuration mapping; ``where`` names its source in error messages."""
    if not isinstance(values, dict):
        raise ConfigError(f"{where}: expected a mapping at the top level")
    top = [f.name for f in dataclasses.fields(RunConfig) if f.name != "base_dir"]
    for key in values:
        if key not in top and key != "base_dir":
            raise ConfigError(f"{where}: unknown key {key!r}{_closest(key, top)} "
                              f"(allowed: {', '.join(top)})")
    if "data" not in values:
        raise ConfigError(f"{where}: missing required key 'data' (a dataset spec)")
    if "labels" not in values:
        raise ConfigError(f"{where}: missing required key 'labels'")
    config = RunConfig(
        data=values["data"],
        labels=_check_labels(values["labels"], where),
        split=_build(SplitConfig, values.get("split"), f"{where}: split"),
        model=_build(HIPNNConfig, values.get("model"), f"{where}: model"),
        loss=_build(LossConfig, values.get("loss"), f"{where}: loss"),
        train=_build(TrainConfig, values.get("train"), f"{where}: train"),
        base_dir=str(values.get("base_dir", base_dir)),
    )
    if config.train.optimizer not in ("adam", "adamw"):
        raise ConfigError(f"{where}: train.optimizer must be 'adam' or 'adamw', "
                          f"got {config.train.optimizer!r}")
    return config


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
