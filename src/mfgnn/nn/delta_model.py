r"""Δ-learning as a model: a low-level network plus a network of the level difference.

Δ-learning (Ramakrishnan et al., JCTC 11, 2087 (2015)) trains one model on the low
level of theory and a second one on the difference between the high and the low level;
the high-level prediction is their sum:

.. math::  E_\mathrm{low}(x) = E^{\,\mathrm{low\ model}}(x), \qquad
           E_\mathrm{high}(x) = E^{\,\mathrm{low\ model}}(x) + \Delta E^{\,\mathrm{correction}}(x),
           \qquad \mathbf F_t = -\,\partial E_t / \partial \mathbf r .

This is a recipe of its own, distinct from the ``delta`` *head mode* of
:class:`~mfgnn.nn.MultiFidelityHIPNN` (one trunk, head rows as corrections): here the two
levels have separate networks, trained one after the other
(:func:`mfgnn.training.delta.train_delta`).

:class:`DeltaLearningModel` offers the interface the rest of the package uses from a
model (the fidelities, elements, ``forward``, the regularisers, ``hparams``), so
evaluation, :mod:`mfgnn.model_file` and the ASE calculator handle it like any other.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import torch
from torch import Tensor, nn

from mfgnn.errors import ModelError
from mfgnn.nn.config import HIPNNConfig
from mfgnn.nn.hipnn import MultiFidelityHIPNN

#: ``hparams()["kind"]`` of the two model kinds a model file can hold.
KIND_HIPNN = "hipnn"
KIND_DELTA = "delta"


class DeltaLearningModel(nn.Module):
    r"""The sum of a low-level model and a correction model.

    Args:
        low: a :class:`~mfgnn.nn.MultiFidelityHIPNN` with one head, the low level.
        correction: a :class:`~mfgnn.nn.MultiFidelityHIPNN` with one head named after the
            high level, trained on E_high − E_low; its self-energies are the fitted
            per-element difference of the two levels' reference energies.

    Both must accept the same elements (in the same order). Their architectures may
    differ (a smaller correction network is common); ``config.cutoff`` is the larger
    of the two cutoffs, so a graph built at it serves both (each drops the pairs beyond
    its own cutoff).

    Attributes:
        fidelities: ``(low, high)``.
        elements: atomic numbers accepted (the one-hot order of both networks).
        metadata: the model file's metadata once loaded (``{}`` for a fresh model).
    """

    kind = KIND_DELTA

    def __init__(self, low: MultiFidelityHIPNN, correction: MultiFidelityHIPNN) -> None:
        super().__init__()
        for name, model in (("low", low), ("correction", correction)):
            if not isinstance(model, MultiFidelityHIPNN):
                raise ModelError(f"the {name} model of a Δ-learning model must be a "
                                 f"MultiFidelityHIPNN, got {type(model).__name__}")
            if len(model.fidelities) != 1:
                raise ModelError(f"the {name} model of a Δ-learning model must have one head, "
                                 f"got fidelities {list(model.fidelities)}")
        if low.fidelities[0] == correction.fidelities[0]:
            raise ModelError(f"the low and high levels of a Δ-learning model must differ, "
                             f"both are {low.fidelities[0]!r}")
        if low.elements != correction.elements:
            raise ModelError(f"the low model accepts elements {list(low.elements)}, the "
                             f"correction model {list(correction.elements)}; they must agree")
        self.low = low
        self.correction = correction
        self.fidelities: tuple[str, str] = (low.fidelities[0], correction.fidelities[0])
        self.elements: tuple[int, ...] = tuple(low.elements)
        self.metadata: dict[str, Any] = {}

    # ------------------------------------------------------------------ description
    @property
    def config(self) -> HIPNNConfig:
        """The low model's architecture with ``cutoff`` the larger of the two networks'
        (what callers use to build graphs and describe the model)."""
        cutoff = max(float(self.low.config.cutoff), float(self.correction.config.cutoff))
        if cutoff == self.low.config.cutoff:
            return self.low.config
        return dataclasses.replace(self.low.config, cutoff=cutoff)

    @property
    def cutoff(self) -> float:
        return float(self.config.cutoff)

    @property
    def dtype(self) -> torch.dtype:
        return self.low.dtype

    @property
    def self_energies(self) -> Tensor:
        """(2, n_elements) float64 per-atom reference energies of (low, high) in eV:
        the low model's, and the low model's plus the correction's."""
        low = self.low.self_energies[0]
        return torch.stack([low, low + self.correction.self_energies[0].to(low.device)])

    def fidelity_index(self, name: str) -> int:
        """Column of fidelity ``name``; unknown names raise :class:`~mfgnn.errors.ModelError`."""
        try:
            return self.fidelities.index(name)
        except ValueError:
            raise ModelError(f"unknown fidelity {name!r}; the model's fidelities are "
                             f"{', '.join(self.fidelities)}") from None

    def species_index(self, z: Tensor) -> Tensor:
        """Atomic numbers → one-hot column (ModelError for elements the model lacks)."""
        return self.low.species_index(z)

    # ------------------------------------------------------------------ hyper-parameters
    def hparams(self) -> dict[str, Any]:
        """``{"kind": "delta", "low": {...}, "correction": {...}}`` (JSON-serialisable);
        each part is the :meth:`MultiFidelityHIPNN.hparams` of that network."""
        return {"kind": KIND_DELTA,
                "low": {"kind": KIND_HIPNN, **self.low.hparams()},
                "correction": {"kind": KIND_HIPNN, **self.correction.hparams()}}

    @classmethod
    def from_hparams(cls, hparams: Mapping[str, Any]) -> "DeltaLearningModel":
        """Rebuild from :meth:`hparams`; then ``load_state_dict`` restores the weights."""
        try:
            parts = hparams["low"], hparams["correction"]
        except KeyError as err:
            raise ModelError(f"Δ-learning model hyper-parameters lack the key {err}") from None
        return cls(*(MultiFidelityHIPNN.from_hparams(p) for p in parts))

    # ------------------------------------------------------------------ forward
    def _requested(self, forces: bool | str | Sequence[str] | None) -> list[int]:
        if forces is None or forces is False:
            return []
        if forces is True:
            return [0, 1]
        if isinstance(forces, str):
            forces = [forces]
        return sorted({self.fidelity_index(name) for name in forces})

    def forward(self, data, forces: bool | Sequence[str] = False,
                training: bool = False) -> dict[str, Tensor]:
        """Energies of both levels (and forces of the requested ones) of a batch.

        Args:
            data: PyG ``Data``/``Batch`` as for :meth:`MultiFidelityHIPNN.forward`
                (``edge_index``, when present, built with a cutoff ≥ ``config.cutoff``).
            forces: False, True (both levels) or fidelity names.
            training: keep the graph of the forces (create_graph).

        Returns:
            ``energy`` (B, 2) float64 eV: [E_low, E_low + ΔE];
            ``forces`` (ΣN, 2, 3) eV/Å in the model dtype when requested: −∂E_t/∂x of
            each column (F_high = F_low + F_Δ, the gradient of the sum), NaN in the
            columns not requested;
            ``hierarchical`` (N_max + 1, ΣN, 2): column 0 the low model's per-atom
            hierarchical energies, column 1 the correction's (each in its own units of
            σ; zero rows pad the shallower network).
            Detached as :meth:`MultiFidelityHIPNN.forward` detaches.
        """
        wanted = self._requested(forces)
        # the low level's forces enter both columns; the correction's only the high one
        low = self.low(data, forces=bool(wanted), training=training)
        corr = self.correction(data, forces=1 in wanted, training=training)
        e_low = low["energy"][:, 0]
        energy = torch.stack([e_low, e_low + corr["energy"][:, 0].to(e_low.device)], dim=1)
        out = {"energy": energy, "hierarchical": _side_by_side(low["hierarchical"],
                                                               corr["hierarchical"])}
        if wanted:
            f_low = low["forces"][:, 0]
            nan = torch.full_like(f_low, float("nan")).detach()
            f_high = f_low + corr["forces"][:, 0] if 1 in wanted else nan
            out["forces"] = torch.stack([f_low if 0 in wanted else nan, f_high], dim=1)
        return out

    # ------------------------------------------------------------------ regularisers
    def hierarchicality(self, out: Mapping[str, Tensor]) -> Tensor:
        """Zeros (2,): the two networks are trained separately, each with its own term."""
        return out["hierarchical"].new_zeros(2)

    def head_regularization(self) -> Tensor:
        """Zero: the networks have one head each (no head penalty between levels)."""
        return torch.zeros((), dtype=self.dtype, device=self.low.self_energies.device)

    def extra_repr(self) -> str:
        return f"fidelities={list(self.fidelities)}, elements={list(self.elements)}"


def _side_by_side(a: Tensor, b: Tensor) -> Tensor:
    """(n_a, ΣN, 1) and (n_b, ΣN, 1) → (max(n_a, n_b), ΣN, 2), zero rows padding."""
    depth = max(a.shape[0], b.shape[0])

    def pad(t: Tensor) -> Tensor:
        if t.shape[0] == depth:
            return t
        return torch.cat([t, t.new_zeros(depth - t.shape[0], *t.shape[1:])])

    b = b.to(a.device, a.dtype)
    return torch.cat([pad(a), pad(b)], dim=-1)


def model_from_hparams(hparams: Mapping[str, Any]) -> MultiFidelityHIPNN | DeltaLearningModel:
    """The untrained network that ``hparams`` describes: ``kind`` ``"hipnn"`` (also when
    absent: files written before model kinds existed) or ``"delta"``."""
    kind = hparams.get("kind", KIND_HIPNN)
    if kind == KIND_HIPNN:
        return MultiFidelityHIPNN.from_hparams(hparams)
    if kind == KIND_DELTA:
        return DeltaLearningModel.from_hparams(hparams)
    raise ModelError(f"unknown model kind {kind!r} (this mfgnn builds {KIND_HIPNN}, "
                     f"{KIND_DELTA})")
