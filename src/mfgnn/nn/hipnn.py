r"""Multi-fidelity HIP-NN (Messerly et al., Section 2.1, Fig. 2 and 4, Eq. 4–10).

A shared trunk of interaction blocks produces atomic features z^n_i (n = 0: one-hot
species; n ≥ 1: output of block n). Fidelity-specific linear heads give hierarchical
energies E^n_{i,t} (Eq. 8), summed per atom (Eq. 9) and per structure (Eq. 10), plus the
fidelity's self-energies e_t(Z_i):

.. math::  E_t = \sum_i \Big(\sum_{n=0}^{N} E^n_{i,t} + e_t(Z_i)\Big), \qquad
           \mathbf F_{i,t} = -\,\partial E_t / \partial \mathbf r_i .

With an E(3)-equivariant block (``config.equivariant``, :mod:`mfgnn.nn.equivariant`)
the trunk has one more step: its invariant output is one more z^n, with its own heads
E^n_{i,t}, placed after the last interaction block (``position: after``) or before the
first (``before``); N then counts that block too.

All fidelities' energies come from one trunk pass; forces of any subset of fidelities
are obtained by automatic differentiation of that same pass.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from mfgnn.errors import ModelError
from mfgnn.nn.config import HIPNNConfig
from mfgnn.nn.heads import HierarchicalHeads
from mfgnn.nn.interaction import InteractionBlock
from mfgnn.nn.zbl import ZBLRepulsion
from mfgnn.nn.pairs import PairGeometry, build_pair_geometry

#: ε (eV²) guarding 0/0 in the hierarchicality ratio.
HIERARCHICALITY_EPS = 1.0e-12


class MultiFidelityHIPNN(nn.Module):
    r"""HIP-NN(-TS) with one energy head per fidelity and block.

    Args:
        config: architecture (:class:`~mfgnn.nn.HIPNNConfig`, or a mapping of its fields).
        fidelities: fidelity names, ordered low → high (the dataset's order).
        elements: atomic numbers the model accepts; their order defines the one-hot
            encoding z^0 and the columns of ``self_energies``.
        self_energies: (F, n_elements) per-atom reference energies e_t(Z) in eV, kept in
            float64 whatever the model dtype; zeros when None.

    Attributes:
        blocks: the interaction blocks.
        equivariant: the :class:`~mfgnn.nn.equivariant.EquivariantBlock` or None.
        equivariant_index: trunk step n ≥ 1 of the equivariant block (its z^n and
            ``heads.linears[n]``), or None.
        heads: :class:`~mfgnn.nn.heads.HierarchicalHeads`; ``heads.linears[n].weight[t]``
            is w^n_t (raw; see ``heads.effective_weights()`` for delta mode).
        self_energies: float64 buffer (F, n_elements), eV.
    """

    def __init__(
        self,
        config: HIPNNConfig | Mapping[str, Any],
        fidelities: Sequence[str],
        elements: Sequence[int],
        self_energies: Tensor | np.ndarray | None = None,
    ) -> None:
        super().__init__()
        if isinstance(fidelities, str):
            fidelities = [fidelities]
        self.fidelities = tuple(str(f) for f in fidelities)
        if not self.fidelities or len(set(self.fidelities)) != len(self.fidelities):
            raise ModelError(f"fidelities must be unique and non-empty, got {list(self.fidelities)}")
        self.elements = tuple(int(z) for z in elements)
        if not self.elements or len(set(self.elements)) != len(self.elements) or min(self.elements) < 1:
            raise ModelError(f"elements must be unique atomic numbers >= 1, got {list(self.elements)}")
        if isinstance(config, Mapping):
            config = HIPNNConfig.from_dict(config)
        if not isinstance(config, HIPNNConfig):
            raise ModelError(f"config must be a HIPNNConfig or a mapping, got {type(config).__name__}")
        self.config = config
        n_fid, n_el = len(self.fidelities), len(self.elements)

        table = torch.full((max(self.elements) + 1,), -1, dtype=torch.long)
        table[list(self.elements)] = torch.arange(n_el)
        self.register_buffer("species_table", table, persistent=False)
        if self_energies is None:
            se = torch.zeros(n_fid, n_el, dtype=torch.float64)
        else:
            raw = self_energies.detach().cpu() if isinstance(self_energies, Tensor) else np.asarray(self_energies)
            se = torch.as_tensor(raw, dtype=torch.float64)
            if tuple(se.shape) != (n_fid, n_el):
                raise ModelError(f"self_energies must have shape (F, n_elements) = {(n_fid, n_el)}, got {tuple(se.shape)}")
        self.register_buffer("self_energies", se.clone())
        # E_t = Σ_a ε_t(Z_a) + N μ_t + σ_t Ê_t: identity (μ = 0, σ = 1) unless fitted
        self.register_buffer("target_shift", torch.zeros(n_fid, dtype=torch.float64))
        self.register_buffer("target_scale", torch.ones(n_fid, dtype=torch.float64))
        self.register_load_state_dict_pre_hook(_identity_scales_for_old_files)
        if config.auto_range:
            raise ModelError("model.soft_min / soft_max are 'auto': choose them from the data "
                             "first (training does; mfgnn.data.distances.auto_sensitivity_range)")

        c = config
        eq = c.equivariant
        n_steps = c.n_interactions + (eq is not None)
        widths = [n_el] + [c.n_features] * n_steps
        self.equivariant_index = None
        if eq is not None:
            self.equivariant_index = 1 if eq.position == "before" else n_steps
        inter = [n for n in range(1, n_steps + 1) if n != self.equivariant_index]
        self.blocks = nn.ModuleList(
            InteractionBlock(
                widths[n - 1], c.n_features, c.n_atom_layers, activation=c.activation, residual=c.residual,
                n_sensitivities=c.n_sensitivities, soft_min=c.soft_min, soft_max=c.soft_max,
                cutoff=c.cutoff, tensor_order=c.tensor_order, n_tensor_channels=c.n_tensor_channels,
            )
            for n in inter
        )
        self.equivariant = None
        if eq is not None:
            from mfgnn.nn.equivariant import EquivariantBlock  # e3nn is imported only when used

            n = self.equivariant_index
            self.equivariant = EquivariantBlock(
                widths[n - 1], c.n_features, eq, n_sensitivities=c.n_sensitivities, soft_min=c.soft_min,
                soft_max=c.soft_max, cutoff=c.cutoff, activation=c.activation, residual=c.residual,
            )
        self.heads = HierarchicalHeads(widths, n_fid, c.heads, c.head_penalty)
        self.zbl = ZBLRepulsion(c.zbl_inner, c.zbl_outer) if c.zbl else None

    def set_target_scales(self, shift, scale) -> None:
        """μ_t (eV/atom) and σ_t (eV) of :mod:`mfgnn.nn.normalization`, per fidelity."""
        shift = torch.as_tensor(shift, dtype=torch.float64).reshape(-1)
        scale = torch.as_tensor(scale, dtype=torch.float64).reshape(-1)
        n = len(self.fidelities)
        if shift.numel() != n or scale.numel() != n or not bool((scale > 0).all()):
            raise ModelError(f"target scales need {n} shifts and {n} positive scales, got "
                             f"{shift.tolist()} and {scale.tolist()}")
        self.target_shift.copy_(shift)
        self.target_scale.copy_(scale)

    # ------------------------------------------------------------------ construction
    def reset_parameters(self) -> None:
        for block in self.blocks:
            block.reset_parameters()
        if self.equivariant is not None:
            self.equivariant.reset_parameters()
        self.heads.reset_parameters()

    def hparams(self) -> dict[str, Any]:
        """Everything needed to rebuild the architecture (JSON-serialisable)."""
        return {"config": self.config.to_dict(), "fidelities": list(self.fidelities), "elements": list(self.elements)}

    @classmethod
    def from_hparams(cls, hparams: Mapping[str, Any]) -> "MultiFidelityHIPNN":
        """Rebuild from :meth:`hparams`; then ``load_state_dict`` restores weights and self-energies."""
        try:
            return cls(HIPNNConfig.from_dict(hparams["config"]), hparams["fidelities"], hparams["elements"])
        except KeyError as err:
            raise ModelError(f"model hyper-parameters lack the key {err}") from None

    def _apply(self, fn, *args, **kwargs):
        # Keep the self-energies and target scales float64 under model.float()/.double();
        # follow device moves.
        kept = {name: getattr(self, name) for name in FLOAT64_BUFFERS}
        out = super()._apply(fn, *args, **kwargs)
        for name, value in kept.items():
            setattr(self, name, value.to(device=getattr(self, name).device, dtype=torch.float64))
        return out

    @property
    def dtype(self) -> torch.dtype:
        return self.heads.linears[0].weight.dtype

    @property
    def n_blocks(self) -> int:
        """Trunk steps N after the one-hot encoding (interaction blocks + equivariant block)."""
        return len(self.blocks) + (self.equivariant is not None)

    def trunk(self) -> list[nn.Module]:
        """The trunk steps n = 1..N in order; step n produces z^n."""
        steps: list[nn.Module] = list(self.blocks)
        if self.equivariant is not None:
            steps.insert(self.equivariant_index - 1, self.equivariant)
        return steps

    def fidelity_index(self, name: str) -> int:
        """Column of fidelity ``name``; unknown names raise :class:`~mfgnn.errors.ModelError`."""
        try:
            return self.fidelities.index(name)
        except ValueError:
            raise ModelError(f"unknown fidelity {name!r}; the model's fidelities are {', '.join(self.fidelities)}") from None

    # ------------------------------------------------------------------ forward
    def species_index(self, z: Tensor) -> Tensor:
        """Atomic numbers → one-hot column; elements outside ``elements`` raise ModelError."""
        table = self.species_table
        if z.dtype == torch.long and z.device.type == "cpu" and table.device.type == "cpu":
            zn = z.detach().numpy()  # a few numpy calls: cheaper than torch ops for one molecule
            if not zn.size:
                return z.new_empty(0)
            if zn.min() >= 0 and zn.max() < table.numel():
                idx = table.numpy()[zn]
                if idx.min() >= 0:
                    return torch.from_numpy(idx)
        z = z.to(table.device, torch.long)
        inside = (z >= 0) & (z < table.numel())
        idx = table[torch.where(inside, z, torch.zeros_like(z))]
        bad = ~inside | (idx < 0)
        if bool(bad.any()):
            wrong = sorted({int(v) for v in z[bad].tolist()})
            raise ModelError(
                f"element(s) {', '.join(map(str, wrong))} not supported by the model; "
                f"allowed atomic numbers: {', '.join(map(str, self.elements))}"
            )
        return idx

    def _requested(self, forces: bool | str | Sequence[str] | None) -> list[int]:
        if forces is None or forces is False:
            return []
        if forces is True:
            return list(range(len(self.fidelities)))
        if isinstance(forces, str):
            forces = [forces]
        return sorted({self.fidelity_index(name) for name in forces})

    def edges(self, data, pos: Tensor) -> Tensor:
        """``data.edge_index``, or a radius graph at the cutoff when it has none."""
        edge_index = getattr(data, "edge_index", None)
        if edge_index is None:
            from mfgnn.data.graph import radius_graph

            batch = getattr(data, "batch", None)
            edge_index = radius_graph(pos.detach(), self.config.cutoff, batch)
        return edge_index

    def geometry(self, data, pos: Tensor) -> PairGeometry:
        """Padded pair geometry from ``data.edge_index`` (or a radius graph at the cutoff)."""
        return build_pair_geometry(pos, self.edges(data, pos), self.config.cutoff,
                                   self.config.tensor_order)

    def forward(self, data, forces: bool | Sequence[str] = False, training: bool = False,
                trunk_gradient: Mapping[int, float] | None = None) -> dict[str, Tensor]:
        """Energies of all fidelities (and forces of the requested ones) of a batch.

        Args:
            data: PyG ``Data``/``Batch`` with ``z`` (ΣN,), ``pos`` (ΣN, 3) in Å, optional
                ``batch`` (ΣN,) and ``edge_index`` (2, E) built with a cutoff ≥ the model's.
            forces: False, True (all fidelities) or fidelity names.
            training: keep the graph of the forces (create_graph) for a force loss.
            trunk_gradient: {fidelity column: share of its energies' gradient that
                reaches the trunk} (:class:`~mfgnn.nn.heads.HierarchicalHeads`; training
                of energy-only levels, whose forces must not be requested).

        Returns:
            ``energy`` (B, F) float64 eV including self-energies (and the ZBL term);
            ``hierarchical`` (N + 1, ΣN, F) per-atom E^n_{i,t} in units of σ_t (model
            dtype, no self-energies, no shift);
            ``forces`` (ΣN, F, 3) eV/Å in the model dtype when requested, NaN in the
            columns of fidelities not requested. Outputs are detached when
            ``training`` is False and forces were requested, or when grad is disabled.
        """
        wanted = self._requested(forces)
        grad_enabled = torch.is_grad_enabled()
        species = self.species_index(data.z)
        pos = data.pos.to(self.species_table.device, self.dtype)
        _check_finite(pos)
        if wanted and not pos.requires_grad:
            pos = pos.detach().requires_grad_(True)
        batch = getattr(data, "batch", None)
        n_atoms = pos.shape[0]
        n_struct = 1
        if batch is not None:
            batch = batch.to(pos.device)
            n_struct = getattr(data, "num_graphs", None) or (int(batch.max()) + 1 if n_atoms else 0)
        # Outputs without a graph: the energies are assembled without one, and the forces
        # are gradients of the hierarchical energies seeded with σ_t (what the assembly
        # passes back), one backward per requested fidelity.
        detached = not grad_enabled or (wanted and not training)

        with torch.enable_grad() if wanted else nullcontext():
            # no edge_index for one small structure on the CPU: the pair layout finds its pairs
            edge_index = getattr(data, "edge_index", None)
            if edge_index is None:
                from mfgnn.data.graph import SMALL_STRUCTURE

                if not (batch is None and self.zbl is None and pos.device.type == "cpu"
                        and n_atoms <= SMALL_STRUCTURE):
                    edge_index = self.edges(data, pos)
            geom = build_pair_geometry(pos, edge_index, self.config.cutoff, self.config.tensor_order)
            z = _one_hot(species, len(self.elements), pos.dtype)
            feats = [z]
            for block in self.trunk():
                z = block(z, geom)
                feats.append(z)
            hier = self.heads(feats, trunk_gradient)  # (N+1, ΣN, F), in units of σ_t
            zbl = None
            if self.zbl is not None:
                zbl = self.zbl(data.z.to(pos.device), pos, edge_index, batch, n_struct)
            with torch.no_grad() if detached else nullcontext():
                per_atom = (hier.to(torch.float64).sum(0) * self.target_scale + self.target_shift
                            + self.self_energies.index_select(1, species).t())
                if batch is None:
                    energy = per_atom.sum(0, keepdim=True)
                else:
                    energy = per_atom.new_zeros(n_struct, per_atom.shape[1]).index_add(0, batch, per_atom)
                if zbl is not None:
                    energy = energy + zbl[:, None]
            out = {"energy": energy, "hierarchical": hier}
            if wanted:
                out["forces"] = (self._seeded_forces(hier, zbl, pos, wanted) if detached
                                 else self._forces(energy, pos, wanted, training))
        if detached:
            out = {k: v.detach() for k, v in out.items()}
        return out

    def _seeded_forces(self, hier: Tensor, zbl: Tensor | None, pos: Tensor, wanted: list[int]) -> Tensor:
        """:meth:`_forces` without a graph: −∂E_t/∂pos from the hierarchical energies with
        the gradient σ_t (in the model dtype) in column t, plus ZBL's; the same numbers."""
        out = pos.new_full((pos.shape[0], len(self.fidelities), 3), float("nan"))
        scale = self.target_scale.to(hier.dtype)
        for t in wanted:
            seed = hier.new_zeros(hier.shape[-1])
            seed[t] = scale[t]
            outputs, seeds = ([hier], [seed.expand_as(hier)]) if zbl is None else (
                [hier, zbl], [seed.expand_as(hier), torch.ones_like(zbl)])
            (grad,) = torch.autograd.grad(outputs, pos, seeds, retain_graph=t != wanted[-1], allow_unused=True)
            out[:, t] = -grad if grad is not None else 0.0
        return out

    def _forces(self, energy: Tensor, pos: Tensor, wanted: list[int], training: bool) -> Tensor:
        """−∂E_t/∂pos for the fidelity columns in ``wanted`` (sorted), NaN elsewhere; (ΣN, F, 3)."""
        cols = []
        for t in range(len(self.fidelities)):
            if t in wanted:
                (grad,) = torch.autograd.grad(
                    energy[:, t].sum(), pos, create_graph=training,
                    retain_graph=training or t != wanted[-1], allow_unused=True,
                )
                cols.append(-grad if grad is not None else torch.zeros_like(pos))
            else:
                cols.append(torch.full_like(pos, float("nan")).detach())
        return torch.stack(cols, dim=1)

    # ------------------------------------------------------------------ regularisers
    def hierarchicality(self, out: Mapping[str, Tensor]) -> Tensor:
        r"""Per-fidelity hierarchicality L_H,t, shape (F,).

        .. math::  L_{H,t} = \frac{1}{N_{at}} \sum_i \sum_{n\ge1}
                   \frac{(E^n_{i,t})^2}{(E^n_{i,t})^2 + (E^{n-1}_{i,t})^2 + \varepsilon}

        on the effective hierarchical energies ``out["hierarchical"]`` (cumulative in
        delta mode), ε = 1e-12 eV².
        """
        hier = out["hierarchical"]
        if hier.shape[0] < 2 or hier.shape[1] == 0:
            return hier.new_zeros(hier.shape[-1])
        upper, lower = hier[1:].square(), hier[:-1].square()
        return (upper / (upper + lower + HIERARCHICALITY_EPS)).sum(0).mean(0)

    def head_regularization(self) -> Tensor:
        """Scalar head penalty of the ``delta``/``tethered`` modes; zero for ``independent``."""
        return self.heads.regularization()

    def extra_repr(self) -> str:
        return f"fidelities={list(self.fidelities)}, elements={list(self.elements)}"


def _one_hot(species: Tensor, n: int, dtype: torch.dtype) -> Tensor:
    """z^0: (N, n) one-hot rows (one numpy step on the CPU)."""
    if species.device.type == "cpu" and dtype in (torch.float32, torch.float64):
        eye = np.eye(n, dtype=np.float32 if dtype == torch.float32 else np.float64)
        return torch.from_numpy(eye[species.numpy()])
    return nn.functional.one_hot(species, n).to(dtype)


def _check_finite(pos: Tensor) -> None:
    """ModelError naming the first atom with a non-finite coordinate."""
    if pos.device.type == "cpu" and pos.dtype in (torch.float32, torch.float64):
        if np.isfinite(pos.detach().numpy()).all():
            return
    finite = torch.isfinite(pos).all(dim=-1)
    if not bool(finite.all()):
        bad = int((~finite).nonzero()[0, 0])
        raise ModelError(f"non-finite coordinates of atom {bad}: {pos[bad].tolist()}")


#: Buffers kept in float64 whatever the model's dtype.
FLOAT64_BUFFERS = ("self_energies", "target_shift", "target_scale")


def _identity_scales_for_old_files(module, state_dict, prefix, *args, **kwargs) -> None:
    """Model files written before target scaling existed load with μ = 0, σ = 1."""
    for name, fill in (("target_shift", 0.0), ("target_scale", 1.0)):
        key = prefix + name
        if key not in state_dict and prefix + "self_energies" in state_dict:
            n = state_dict[prefix + "self_energies"].shape[0]
            state_dict[key] = torch.full((n,), fill, dtype=torch.float64)
