"""Fine-tuning a trained model on new data: new heads for new levels, frozen parameter
groups, discriminative learning rates and replay of the pre-training data.

The ``finetune:`` section of a run configuration (the rest of the run configuration as
for ``mfgnn train``; the architecture comes from the base model)::

    finetune:
      init_from: mp2            # a new level's head starts as a copy of this head (null: 0)
      refit_self_energies: false
      freeze: [blocks.0]        # parameter groups (mfgnn finetune --list-groups);
                                # [trunk] trains the heads alone
      lr_decay: 5               # η of trunk depth l−1 = η_l / lr_decay; heads at train.lr
      replay: {data: base, fraction: 0.2}

Levels of the new data the model lacks get new heads (and self-energies fitted on their
training rows); levels it has keep theirs. The model's levels are the base model's and
the new ones in one low → high order (:func:`mfgnn.data.fidelity_order.merge_orders`).
Discriminative rates (Howard & Ruder; GM-NN's transfer learning): the heads train at
η = ``train.lr``, the last trunk step at η/d, the one before at η/d², … (d =
``lr_decay``). Frozen parameters are left out of the optimiser and keep their values
bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..config_checks import build_section, check_number
from ..errors import ConfigError


@dataclass
class ReplayConfig:
    """Replay of pre-training data: ``data`` is ``base`` (the base run's own data and
    training split, when BASE is a run folder) or a dataset spec path; ``fraction`` is
    the expected share of every batch drawn from it (with the base model's labels)."""

    data: str = "base"
    fraction: float = 0.2

    def __post_init__(self) -> None:
        if not isinstance(self.data, str) or not self.data:
            raise ConfigError(f"finetune.replay.data must be 'base' or a spec path, got {self.data!r}")
        check_number(self.fraction, "finetune.replay.fraction", minimum=0)
        if self.fraction >= 1:
            raise ConfigError(f"finetune.replay.fraction must be < 1, got {self.fraction}")


@dataclass
class FinetuneConfig:
    """The ``finetune:`` section (see the module doc)."""

    init_from: str | None = None
    refit_self_energies: bool = False
    freeze: list[str] = field(default_factory=list)
    lr_decay: float = 1.0
    replay: ReplayConfig | None = None

    def __post_init__(self) -> None:
        if self.replay is not None and not isinstance(self.replay, ReplayConfig):
            self.replay = build_section(ReplayConfig, self.replay, "finetune.replay")
        if isinstance(self.freeze, str):
            self.freeze = [self.freeze]
        if not all(isinstance(g, str) for g in self.freeze):
            raise ConfigError(f"finetune.freeze must list group names, got {self.freeze!r}")
        check_number(self.lr_decay, "finetune.lr_decay", minimum=1)
        if not isinstance(self.refit_self_energies, bool):
            raise ConfigError("finetune.refit_self_energies must be true or false")


def parameter_groups(model) -> dict[str, list[str]]:
    """Freezable groups of a model: ``sensitivities`` (every block's s^ν(r) centres and
    widths), ``blocks.K`` (trunk step K, 0-based), ``blocks.K.interaction``,
    ``blocks.K.atom_layers``, ``equivariant``, and ``trunk`` (every parameter outside
    the heads: freezing it leaves only the heads to train); name → parameter names. The
    heads are not a group: a new level's head lives in the same layers as the others."""
    groups: dict[str, list[str]] = {"sensitivities": [], "trunk": []}
    for name, _ in model.named_parameters():
        if not name.startswith("heads."):
            groups["trunk"].append(name)
        if ".sensitivity." in name:
            groups["sensitivities"].append(name)
        parts = name.split(".")
        if parts[0] == "blocks":
            groups.setdefault(f"blocks.{parts[1]}", []).append(name)
            groups.setdefault(f"blocks.{parts[1]}.{parts[2]}", []).append(name)
        elif parts[0] == "equivariant":
            groups.setdefault("equivariant", []).append(name)
    return {k: v for k, v in groups.items() if v}


def freeze(model, names: list[str]) -> list[str]:
    """Set ``requires_grad = False`` on the groups ``names``; returns the frozen
    parameter names. Unknown groups are a ConfigError listing the valid ones."""
    groups = parameter_groups(model)
    frozen: list[str] = []
    for name in names:
        if name not in groups:
            raise ConfigError(f"finetune.freeze: unknown group {name!r}; the model's groups "
                              f"are {', '.join(groups)}")
        frozen += [p for p in groups[name] if p not in frozen]
    params = dict(model.named_parameters())
    for name in frozen:
        params[name].requires_grad_(False)
    return frozen


def depth_of(name: str, n_steps: int) -> int:
    """Depth of a parameter: trunk step k (0-based) has depth k, the heads n_steps."""
    parts = name.split(".")
    if parts[0] == "blocks":
        return int(parts[1])
    if parts[0] == "equivariant":
        return n_steps - 1
    return n_steps


def discriminative_groups(model, lr: float, decay: float) -> list[dict]:
    """Optimiser parameter groups: depth l of L = n_steps (heads) trains at
    η / decay^(L − l); frozen parameters are left out."""
    n_steps = model.n_blocks
    by_depth: dict[int, list] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            by_depth.setdefault(depth_of(name, n_steps), []).append(p)
    return [{"params": params, "lr": lr / decay ** (n_steps - depth), "depth": depth}
            for depth, params in sorted(by_depth.items())]


def effective_head_rows(heads) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per block, the (F, features) effective weights and (F,) biases of every level."""
    return list(zip([w.detach().clone() for w in heads.effective_weights()],
                    [b.detach().clone() for b in heads.effective_biases()]))


def set_effective_head_rows(heads, rows) -> None:
    """Set every level's effective head weights and biases (inverse of
    :func:`effective_head_rows`; delta mode stores differences of consecutive levels)."""
    with torch.no_grad():
        for lin, (w, b) in zip(heads.linears, rows):
            if heads.mode == "delta":
                w = torch.cat([w[:1], w[1:] - w[:-1]])
                b = torch.cat([b[:1], b[1:] - b[:-1]])
            lin.weight.copy_(w)
            lin.bias.copy_(b)
