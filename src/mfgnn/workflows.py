"""Small ASE workflows for multi-fidelity potentials: optimisation, torsion scans, MD.

Each function drives ASE with the calculator's fidelity (:class:`MFGNNCalculator`) and
also reports the energies of every other fidelity of the model, read from the same
evaluations (``calc.results["energies_all"]``). Units: eV, Å, eV/Å, fs, K; drift in
eV/atom/ps.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from ase import Atoms, units
from ase.constraints import FixInternals
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import (MaxwellBoltzmannDistribution, Stationary,
                                         ZeroRotation)
from ase.md.verlet import VelocityVerlet
from ase.neighborlist import natural_cutoffs, neighbor_list
from ase.optimize import BFGS, FIRE, LBFGS

from .errors import MfgnnError

OPTIMIZERS = {"BFGS": BFGS, "LBFGS": LBFGS, "FIRE": FIRE}


def _optimizer(name: str):
    try:
        return OPTIMIZERS[name.upper()]
    except KeyError:
        raise MfgnnError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}") from None


def _energies_all(atoms: Atoms) -> dict[str, float]:
    atoms.get_potential_energy()
    return dict(atoms.calc.results["energies_all"])


def max_force(atoms: Atoms) -> float:
    """Largest per-atom force norm (eV/Å) after constraints, as ASE optimisers measure it."""
    forces = atoms.get_forces()
    return float(np.sqrt((forces ** 2).sum(axis=1)).max()) if len(forces) else 0.0


# ---------------------------------------------------------------------- optimisation
@dataclass
class OptimizationResult:
    """Outcome of :func:`optimize`.

    Attributes:
        converged: the largest force fell below ``fmax`` within ``steps``.
        steps: optimiser steps taken.
        fmax: final largest per-atom force norm, eV/Å (at the calculator's fidelity).
        fidelity: the fidelity that was optimised.
        energy: final energy at ``fidelity``, eV.
        energies_all: final energy of every fidelity at the optimised geometry, eV.
    """

    converged: bool
    steps: int
    fmax: float
    fidelity: str
    energy: float
    energies_all: dict[str, float]


def optimize(atoms: Atoms, calc=None, fmax: float = 0.01, optimizer: str = "BFGS",
             steps: int = 500) -> OptimizationResult:
    """Relax ``atoms`` in place at the calculator's fidelity.

    Args:
        atoms: the structure; its positions are updated. Existing constraints apply.
        calc: an :class:`~mfgnn.calculator.MFGNNCalculator`; None uses ``atoms.calc``.
        fmax: convergence threshold on the largest per-atom force norm, eV/Å.
        optimizer: "BFGS", "LBFGS" or "FIRE" (ASE's).
        steps: maximum number of optimiser steps.

    Returns:
        :class:`OptimizationResult` with every fidelity's energy at the optimum.
    """
    if calc is not None:
        atoms.calc = calc
    opt = _optimizer(optimizer)(atoms, logfile=None)
    converged = bool(opt.run(fmax=fmax, steps=steps))
    energies = _energies_all(atoms)
    fidelity = atoms.calc.fidelity
    return OptimizationResult(converged=converged, steps=int(opt.get_number_of_steps()),
                              fmax=max_force(atoms), fidelity=fidelity,
                              energy=float(atoms.get_potential_energy()), energies_all=energies)


# ---------------------------------------------------------------------- torsion scans
def moving_fragment(atoms: Atoms, j: int, k: int, scale: float = 1.2) -> np.ndarray:
    """Boolean mask of the atoms on the ``k`` side of the ``j``–``k`` bond.

    Bonds are ASE covalent radii times ``scale``. Raises MfgnnError when ``j`` and ``k``
    are not bonded or are in a ring (no side can be rotated alone).
    """
    first, second = neighbor_list("ij", atoms, natural_cutoffs(atoms, mult=scale))
    bonded: list[set[int]] = [set() for _ in range(len(atoms))]
    for a, b in zip(first, second):
        bonded[a].add(int(b))
    if k not in bonded[j]:
        raise MfgnnError(f"atoms {j} and {k} are not bonded; give the torsion's moving atoms as mask")
    seen, todo = {k}, deque([k])
    while todo:
        a = todo.popleft()
        for b in bonded[a]:
            if a == k and b == j:
                continue
            if b == j:
                raise MfgnnError(f"the bond {j}-{k} is in a ring; give the moving atoms as mask")
            if b not in seen:
                seen.add(b)
                todo.append(b)
    mask = np.zeros(len(atoms), dtype=bool)
    mask[sorted(seen)] = True
    return mask


@dataclass
class TorsionScan:
    """Energy profiles of a torsion scan, one per fidelity of the model.

    Attributes:
        dihedral: the four atom indices (i, j, k, l).
        angles: target dihedral angles, degrees (A,).
        fidelity: the fidelity that drove the relaxations.
        relaxed: constrained relaxation (True) or rigid rotation (False).
        energies: ``{fidelity: (A,) energies in eV}`` (absolute, self-energies included).
        converged: (A,) bool, relaxation converged (all True for a rigid scan).
        final_angles: (A,) dihedral measured on the final structures, degrees.
        structures: final structure at each angle.
        reference: (A,) reference energies (eV) when given, else None.
        mad, rmsd: ``{fidelity: eV}`` deviation from ``reference`` of each profile
            with each profile's own minimum as zero; empty without a reference.
    """

    dihedral: tuple[int, int, int, int]
    angles: np.ndarray
    fidelity: str
    relaxed: bool
    energies: dict[str, np.ndarray]
    converged: np.ndarray
    final_angles: np.ndarray
    structures: list[Atoms] = field(repr=False)
    reference: np.ndarray | None = None
    mad: dict[str, float] = field(default_factory=dict)
    rmsd: dict[str, float] = field(default_factory=dict)

    def relative(self, fidelity: str | None = None) -> np.ndarray:
        """Profile of ``fidelity`` (default: the driving one) with its minimum as zero, eV."""
        e = self.energies[fidelity or self.fidelity]
        return e - e.min()


def profile_errors(predicted: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    """MAD and RMSD (units of the input) between two profiles, each shifted so that its
    own minimum is zero (relative conformational energies)."""
    p = np.asarray(predicted, dtype=np.float64)
    r = np.asarray(reference, dtype=np.float64)
    if p.shape != r.shape:
        raise MfgnnError(f"reference has {r.shape[0] if r.ndim else 0} energies, scan has {p.shape[0]}")
    d = (p - p.min()) - (r - r.min())
    return float(np.abs(d).mean()), float(np.sqrt((d ** 2).mean()))


def torsion_scan(atoms: Atoms, calc, dihedral: Sequence[int], angles: Sequence[float],
                 relax: bool = True, fmax: float = 0.05, steps: int = 200,
                 reference: Sequence[float] | None = None, mask: Sequence[bool] | None = None,
                 optimizer: str = "BFGS") -> TorsionScan:
    """Rigid or constrained-relaxed scan of the dihedral (i, j, k, l).

    At each angle (degrees, scanned in the given order) the fragment on the ``k`` side of
    the ``j``–``k`` bond (``mask``; found from covalent bonds when None) is rotated with
    ``Atoms.set_dihedral``. With ``relax`` the structure is then optimised at the
    calculator's fidelity with the dihedral held by ASE's ``FixInternals`` (``fmax`` eV/Å,
    at most ``steps`` steps), starting from the previous angle's relaxed structure. The
    energies of every fidelity are read from the same evaluation. ``atoms`` is not
    modified.

    With ``reference`` (A energies in eV, e.g. CCSD(T) single points) the MAD and RMSD of
    each fidelity's profile are computed with each profile's minimum as zero.
    """
    i, j, k, l = (int(a) for a in dihedral)
    angles = np.asarray(angles, dtype=np.float64)
    work = atoms.copy()
    work.set_constraint()
    work.calc = calc
    move = np.asarray(mask, dtype=bool) if mask is not None else moving_fragment(work, j, k)
    if move[j] or not move[l]:
        raise MfgnnError(f"the moving fragment must contain atom {l} and not atom {j}")
    energies: dict[str, list[float]] = {f: [] for f in calc.fidelities}
    converged, final, structures = [], [], []
    for angle in angles:
        work.set_constraint()
        work.set_dihedral(i, j, k, l, float(angle), mask=move)
        ok = True
        if relax:
            work.set_constraint(FixInternals(dihedrals_deg=[[float(angle), [i, j, k, l]]]))
            opt = _optimizer(optimizer)(work, logfile=None)
            ok = bool(opt.run(fmax=fmax, steps=steps))
        for name, value in _energies_all(work).items():
            energies[name].append(value)
        converged.append(ok)
        final.append(work.get_dihedral(i, j, k, l))
        snapshot = work.copy()
        snapshot.set_constraint()
        structures.append(snapshot)
    scan = TorsionScan(
        dihedral=(i, j, k, l), angles=angles, fidelity=calc.fidelity, relaxed=bool(relax),
        energies={f: np.asarray(v) for f, v in energies.items()},
        converged=np.asarray(converged, dtype=bool), final_angles=np.asarray(final),
        structures=structures,
    )
    if reference is not None:
        scan.reference = np.asarray(reference, dtype=np.float64)
        for name, e in scan.energies.items():
            scan.mad[name], scan.rmsd[name] = profile_errors(e, scan.reference)
    return scan


# ---------------------------------------------------------------------- molecular dynamics
@dataclass
class MDResult:
    """Energies sampled along a trajectory of :func:`run_md` (every ``log_interval`` steps,
    step 0 included).

    Attributes:
        time: (S,) fs. potential, kinetic, total: (S,) eV (potential at the calculator's
        fidelity). temperature: (S,) K. n_atoms, ensemble, timestep_fs, steps: the run.
    """

    time: np.ndarray
    potential: np.ndarray
    kinetic: np.ndarray
    total: np.ndarray
    temperature: np.ndarray
    n_atoms: int
    ensemble: str
    timestep_fs: float
    steps: int


def run_md(atoms: Atoms, calc=None, ensemble: str = "nve", timestep_fs: float = 0.5,
           steps: int = 1000, temperature_K: float = 300.0, friction: float = 0.01,
           seed: int = 0, log_interval: int = 10, init_velocities: bool = True) -> MDResult:
    """Molecular dynamics at the calculator's fidelity; ``atoms`` is propagated in place.

    Args:
        ensemble: "nve" (ASE ``VelocityVerlet``) or "langevin" (ASE ``Langevin`` at
            ``temperature_K`` with ``friction`` in 1/fs).
        timestep_fs: time step, fs. steps: number of MD steps.
        temperature_K: initial Maxwell–Boltzmann velocities (zero total momentum and
            angular momentum) when ``init_velocities``; Langevin target temperature.
        seed: seed of the velocity draw and of the Langevin noise.
        log_interval: record energies every this many steps.
    """
    if calc is not None:
        atoms.calc = calc
    ensemble = ensemble.lower()
    rng = np.random.default_rng(seed)
    if init_velocities:
        # in every ASE this package allows (>= 3.22), unlike thermalize_momenta (3.29)
        MaxwellBoltzmannDistribution(atoms, temperature_K=temperature_K, rng=rng)
        Stationary(atoms)
        if len(atoms) > 2:
            ZeroRotation(atoms)
    dt = timestep_fs * units.fs
    if ensemble == "nve":
        dyn = VelocityVerlet(atoms, timestep=dt, logfile=None)
    elif ensemble == "langevin":
        options = dict(timestep=dt, temperature_K=temperature_K, friction=friction / units.fs,
                       rng=rng, logfile=None)
        try:  # fixcm=True is deprecated (ASE 3.28) and the keyword will go away
            dyn = Langevin(atoms, fixcm=False, **options)
        except TypeError:  # pragma: no cover - ASE without the keyword
            dyn = Langevin(atoms, **options)
    else:
        raise MfgnnError(f"unknown ensemble {ensemble!r}; choose 'nve' or 'langevin'")
    rows: list[tuple[float, float, float, float]] = []

    def record() -> None:
        epot = float(atoms.get_potential_energy())
        ekin = float(atoms.get_kinetic_energy())
        rows.append((dyn.get_number_of_steps() * timestep_fs, epot, ekin, float(atoms.get_temperature())))

    dyn.attach(record, interval=max(1, int(log_interval)))
    dyn.run(steps)
    data = np.asarray(rows, dtype=np.float64).reshape(-1, 4)
    return MDResult(time=data[:, 0], potential=data[:, 1], kinetic=data[:, 2],
                    total=data[:, 1] + data[:, 2], temperature=data[:, 3], n_atoms=len(atoms),
                    ensemble=ensemble, timestep_fs=float(timestep_fs), steps=int(steps))


@dataclass
class EnergyDrift:
    """Total-energy conservation of an NVE run.

    Attributes:
        slope: least-squares slope of total energy per atom vs time, eV/atom/ps.
        max_abs_deviation: max |E_total(t) − E_total(0)|, eV.
        max_abs_deviation_per_atom: the same per atom, eV/atom.
        std_per_atom: standard deviation of E_total per atom, eV/atom.
    """

    slope: float
    max_abs_deviation: float
    max_abs_deviation_per_atom: float
    std_per_atom: float


def energy_drift(result: MDResult) -> EnergyDrift:
    """Drift (linear-fit slope, eV/atom/ps) and largest deviation of the total energy."""
    per_atom = result.total / result.n_atoms
    t_ps = result.time / 1000.0
    slope = float(np.polyfit(t_ps, per_atom, 1)[0]) if len(t_ps) > 1 else 0.0
    dev = float(np.abs(result.total - result.total[0]).max())
    return EnergyDrift(slope=slope, max_abs_deviation=dev,
                       max_abs_deviation_per_atom=dev / result.n_atoms,
                       std_per_atom=float(per_atom.std()))
