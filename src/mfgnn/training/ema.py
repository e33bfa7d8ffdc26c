"""Exponential moving average of model weights (evaluate with the averaged weights)."""

from __future__ import annotations

import contextlib

import torch


class ExponentialMovingAverage:
    """θ_ema ← d·θ_ema + (1 − d)·θ after every optimiser step, with the warm-up
    d_k = min(decay, (1 + k)/(10 + k)) so early averages are not dominated by the
    random initialisation.

    Only trained parameters are averaged: buffers (self-energies, target scales) and
    frozen parameters keep their exact values (an average of a constant is not always
    bit-identical to it)."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = float(decay)
        self.steps = 0
        self.shadow = {k: v.detach().clone() for k, v in model.named_parameters()
                       if v.requires_grad and v.is_floating_point()}

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        self.steps += 1
        d = min(self.decay, (1.0 + self.steps) / (10.0 + self.steps))
        for k, v in model.state_dict().items():
            if k in self.shadow:
                self.shadow[k].mul_(d).add_(v.detach(), alpha=1.0 - d)

    @contextlib.contextmanager
    def applied(self, model: torch.nn.Module):
        """Temporarily load the averaged weights into ``model``."""
        backup = {k: v.detach().clone() for k, v in model.state_dict().items()
                  if k in self.shadow}
        model.load_state_dict(self.shadow, strict=False)
        try:
            yield model
        finally:
            model.load_state_dict(backup, strict=False)

    def state_dict(self) -> dict:
        return {"decay": self.decay, "steps": self.steps, "shadow": self.shadow}

    def load_state_dict(self, state: dict) -> None:
        self.decay = state["decay"]
        self.steps = state["steps"]
        for k, v in state["shadow"].items():
            if k in self.shadow:  # checkpoints of older versions also hold buffers
                self.shadow[k].copy_(v)
