"""ASE calculator for multi-fidelity mfgnn potentials.

One evaluation of a :class:`~mfgnn.nn.MultiFidelityHIPNN` gives the energy of every
fidelity (level of theory) of the model. :class:`MFGNNCalculator` drives ASE (geometry
optimisation, MD, NEB, ...) with the energy and forces of *one* fidelity and keeps the
energies of all the others from the same evaluation in ``results["energies_all"]``, so
a torsion scan at CCSD(T) also gives the MP2 profile at no extra cost::

    from mfgnn.calculator import MFGNNCalculator

    atoms.calc = MFGNNCalculator("runs/ch3oh/model.pt", fidelity="ccsdt")
    atoms.get_potential_energy()               # eV, CCSD(T) head
    atoms.calc.results["energies_all"]         # {"mp2": eV, "ccsdt": eV}

Units: energies in eV, positions in Å, forces in eV/Å (ASE's units and the package's).
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence, Union

import numpy as np
import torch
from ase.calculators.calculator import Calculator, all_changes
from ase.data import chemical_symbols
from torch_geometric.data import Data

from .data.graph import radius_graph
from .errors import ModelError
from .model_file import load_model
from .nn import DeltaLearningModel, MultiFidelityHIPNN

ModelLike = Union[str, Path, MultiFidelityHIPNN]


def _symbol(z: int) -> str:
    return chemical_symbols[z] if 0 <= z < len(chemical_symbols) else "?"


@contextmanager
def _threads(n: int | None) -> Iterator[None]:
    """Run the block with ``n`` torch intra-op threads (None: unchanged), then restore."""
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(int(n))
    try:
        yield
    finally:
        if n:
            torch.set_num_threads(before)


def _prepare(model: ModelLike, device: torch.device, dtype: torch.dtype) -> MultiFidelityHIPNN:
    """A model in eval mode on ``device`` with parameters in ``dtype``."""
    if isinstance(model, (str, Path)):
        return load_model(model, device=device, dtype=dtype)
    if not isinstance(model, (MultiFidelityHIPNN, DeltaLearningModel)):
        raise ModelError(
            f"model must be a path to a model file or run folder, a MultiFidelityHIPNN or "
            f"DeltaLearningModel, or a list of these; got {type(model).__name__}"
        )
    return model.to(device=device, dtype=dtype).eval()


class MFGNNCalculator(Calculator):
    """ASE calculator for one mfgnn model or an ensemble of them.

    Args:
        model: a ``model.pt`` file, a run folder holding one, a loaded
            :class:`~mfgnn.nn.MultiFidelityHIPNN`, or a list of these (an ensemble;
            every member must have the same fidelities and elements). A loaded model is
            moved to ``device``/``dtype`` in place and put in eval mode.
        fidelity: the fidelity whose energy and forces ASE sees (``energy``,
            ``free_energy``, ``forces``). Default: the model's highest (last) one.
        device: torch device of the evaluation ("cpu", "cuda", ...).
        dtype: parameter and position dtype; float64 (default) for finite-difference
            checks, tight optimisations and energy-conserving MD. Energies are always
            accumulated in float64.
        compute_all_forces: also compute the forces of every fidelity
            (``results["forces_all"]``); one extra backward pass per fidelity.
        num_threads: torch intra-op threads during an evaluation (restored afterwards);
            1 is usually fastest for small molecules on a busy CPU. None: leave as is.
        **kwargs: passed to :class:`ase.calculators.calculator.Calculator`.

    Results (``calc.results`` after any ``get_*`` call; ensemble values are means over
    the members, ``*_std`` the population standard deviation over members):

    * ``energy``, ``free_energy``: float, eV, at ``fidelity`` (self-energies included).
    * ``forces``: (N, 3) float64 array, eV/Å, at ``fidelity``.
    * ``energies_all``: ``{fidelity: energy in eV}`` for *every* fidelity of the model,
      all from the same evaluation (``energies_all[calc.fidelity] == energy``).
    * ``forces_all``: ``{fidelity: (N, 3) eV/Å}``, only with ``compute_all_forces``.
    * ensembles only (more than one model): ``energy_std`` (eV), ``forces_std``
      ((N, 3) eV/Å), ``energies_all_std`` (``{fidelity: eV}``); zero when all members
      are identical.

    Energy and forces are always computed together. Results are cached by ASE's
    :class:`~ase.calculators.calculator.Calculator`: they are recomputed only when the
    positions, atomic numbers, cell or pbc change. ``n_evaluations`` counts the model
    evaluations done so far.

    Attributes: ``fidelities`` (low → high), ``elements`` (atomic numbers), ``fidelity``,
    ``cutoff`` (Å), ``models``, ``metadata`` (the first member's file metadata, e.g.
    ``trained_labels``), ``n_evaluations``.

    Neighbours come from :func:`mfgnn.data.graph.radius_graph` at the model's cutoff
    (a cell list for large systems, cost linear in the number of atoms).

    Raises:
        ModelError: unknown ``fidelity`` (the message lists the model's fidelities);
            an element the model was not trained on (the message lists the allowed
            ones); members of an ensemble that disagree; and **periodic systems**: the
            model has no periodic images, so any ``atoms.pbc`` True is refused rather
            than silently treated as an isolated molecule. Use ``atoms.pbc = False``
            for a molecule or cluster in vacuum.
    """

    implemented_properties = ["energy", "free_energy", "forces"]

    def __init__(
        self,
        model: ModelLike | Sequence[ModelLike],
        fidelity: str | None = None,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float64,
        compute_all_forces: bool = False,
        num_threads: int | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.device = torch.device(device)
        self.dtype = dtype
        members = list(model) if isinstance(model, (list, tuple)) else [model]
        if not members:
            raise ModelError("an ensemble needs at least one model")
        self.models = [_prepare(m, self.device, dtype) for m in members]
        first = self.models[0]
        for k, other in enumerate(self.models[1:], start=1):
            if other.fidelities != first.fidelities or other.elements != first.elements:
                raise ModelError(
                    f"ensemble member {k} has fidelities {list(other.fidelities)} and elements "
                    f"{list(other.elements)}; member 0 has {list(first.fidelities)} and "
                    f"{list(first.elements)}"
                )
        self.fidelities: tuple[str, ...] = first.fidelities
        self.elements: tuple[int, ...] = first.elements
        self.cutoff: float = max(float(m.config.cutoff) for m in self.models)
        #: the first member's file metadata (units, trained_labels, ...); {} if none
        self.metadata: dict = dict(getattr(first, "metadata", None) or {})
        if fidelity is None:
            fidelity = self.fidelities[-1]
        if fidelity not in self.fidelities:
            raise ModelError(
                f"fidelity {fidelity!r} is not in the model; its fidelities are "
                f"{', '.join(self.fidelities)} (lowest level first)"
            )
        self.fidelity: str = fidelity
        self.column: int = self.fidelities.index(fidelity)
        self.compute_all_forces = bool(compute_all_forces)
        self.num_threads = num_threads
        self.n_evaluations = 0

    # ------------------------------------------------------------------ checks
    def check_atoms(self, atoms) -> None:
        """Refuse periodic cells and elements the model does not know (ModelError)."""
        if np.any(atoms.pbc):
            raise ModelError(
                f"periodic boundary conditions (pbc={list(map(bool, atoms.pbc))}) are not "
                "supported: mfgnn models have no periodic images. Set atoms.pbc = False for "
                "a molecule or cluster in vacuum."
            )
        unknown = sorted(set(int(z) for z in atoms.numbers) - set(self.elements))
        if unknown:
            raise ModelError(
                "element(s) " + ", ".join(f"{_symbol(z)} (Z={z})" for z in unknown)
                + " not supported by the model; allowed: "
                + ", ".join(f"{_symbol(z)} (Z={z})" for z in self.elements)
            )

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, atoms) -> dict[str, np.ndarray]:
        """Evaluate every member on ``atoms`` without touching the cache.

        Returns ``energy`` (M, F) eV and ``forces`` (M, N, F, 3) eV/Å (NaN in the columns
        of fidelities whose forces were not computed), M members, F fidelities.
        """
        self.check_atoms(atoms)
        with _threads(self.num_threads):
            pos = torch.tensor(np.asarray(atoms.positions), dtype=self.dtype, device=self.device)
            z = torch.as_tensor(np.asarray(atoms.numbers), dtype=torch.long, device=self.device)
            data = Data(z=z, pos=pos, edge_index=radius_graph(pos, self.cutoff))
            wanted = True if self.compute_all_forces else [self.fidelity]
            energies, forces = [], []
            for model in self.models:
                out = model(data, forces=wanted, training=False)
                energies.append(out["energy"][0].detach().cpu().double().numpy())
                forces.append(out["forces"].detach().cpu().double().numpy())
        self.n_evaluations += 1
        return {"energy": np.stack(energies), "forces": np.stack(forces)}

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes) -> None:
        """ASE entry point: fill ``self.results`` (see the class docstring)."""
        super().calculate(atoms, properties, system_changes)
        raw = self.evaluate(self.atoms)
        e, f = raw["energy"], raw["forces"]  # (M, F), (M, N, F, 3)
        t = self.column
        energy = float(e[:, t].mean())
        results: dict = {
            "energy": energy,
            "free_energy": energy,
            "forces": f[:, :, t].mean(0),
            "energies_all": {name: float(e[:, k].mean()) for k, name in enumerate(self.fidelities)},
        }
        if self.compute_all_forces:
            results["forces_all"] = {name: f[:, :, k].mean(0) for k, name in enumerate(self.fidelities)}
        if len(self.models) > 1:
            results["energy_std"] = float(e[:, t].std())
            results["forces_std"] = f[:, :, t].std(0)
            results["energies_all_std"] = {name: float(e[:, k].std()) for k, name in enumerate(self.fidelities)}
        self.results = results

    def __repr__(self) -> str:
        return (f"MFGNNCalculator(fidelity={self.fidelity!r}, fidelities={list(self.fidelities)}, "
                f"members={len(self.models)}, device={str(self.device)!r}, dtype={self.dtype})")
