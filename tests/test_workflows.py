"""ASE workflows (optimisation, torsion scan, MD) with a CH3OH model trained on real data."""

from __future__ import annotations

import numpy as np
import pytest
from _models import ch3oh_atoms, hydroxyl_dihedral, session_model
from ase.build import molecule
from conftest import SMOKE

from mfgnn.calculator import MFGNNCalculator
from mfgnn.errors import MfgnnError
from mfgnn.workflows import (MDResult, energy_drift, moving_fragment, optimize, profile_errors,
                             run_md, torsion_scan)

#: NVE bounds at 0.5 fs, 300 K start, float64. Measured with the session model over
#: 1000 steps (500 fs): max |E_tot(t) - E_tot(0)| about 0.6 meV/atom (3.6 meV for the
#: 6 atoms, the Verlet error of the O-H and C-H stretches), fitted drift below
#: 2e-4 eV/atom/ps in magnitude. The smoke run (200 steps, 0.1 ps) is too short for a
#: meaningful slope (the ~0.2 meV/atom fluctuation dominates the fit): looser bound.
NVE_MAX_DEVIATION_PER_ATOM = 2.0e-3   # eV/atom
NVE_STEPS = 200 if SMOKE else 1000
NVE_MAX_SLOPE = 1.0e-2 if SMOKE else 1.0e-3  # eV/atom/ps


@pytest.fixture(scope="session")
def calc(tmp_path_factory, shared_data):
    return MFGNNCalculator(session_model(tmp_path_factory, shared_data), num_threads=1)


@pytest.fixture
def atoms(shared_data):
    return ch3oh_atoms(shared_data, row=0)


def test_hydroxyl_dihedral_from_data(atoms):
    assert list(atoms.numbers) == [6, 1, 1, 1, 1, 8]
    h_c, c, o, h_o = hydroxyl_dihedral(atoms)
    assert (c, o, h_o) == (0, 5, 4)
    assert atoms.get_distance(o, h_o) < 1.1 < atoms.get_distance(c, h_c) + 0.1
    np.testing.assert_array_equal(moving_fragment(atoms, c, o), [0, 0, 0, 0, 1, 1])


def test_moving_fragment_refuses_rings_and_non_bonds(atoms):
    with pytest.raises(MfgnnError, match="ring"):
        moving_fragment(molecule("C6H6"), 0, 1)
    with pytest.raises(MfgnnError, match="not bonded"):
        moving_fragment(atoms, 1, 4)


def test_optimize_converges_and_reports_all_fidelities(atoms, calc):
    atoms.positions += np.random.default_rng(0).normal(0, 0.03, atoms.positions.shape)
    atoms.calc = calc
    start = atoms.get_potential_energy()
    result = optimize(atoms, calc, fmax=0.01, steps=300)
    assert result.converged and 0 < result.steps <= 300
    assert result.fmax < 0.01
    assert np.sqrt((atoms.get_forces() ** 2).sum(1)).max() == pytest.approx(result.fmax)
    assert result.fidelity == "ccsdt" and result.energy < start - 1e-3
    assert set(result.energies_all) == {"mp2", "ccsdt"}
    assert result.energies_all["ccsdt"] == pytest.approx(result.energy, abs=1e-12)
    assert 0.8 < atoms.get_distance(4, 5) < 1.1  # O-H bond kept (Å)


def test_rigid_scan_rotates_only_the_hydroxyl(atoms, calc):
    dihedral = hydroxyl_dihedral(atoms)
    angles = np.arange(0.0, 361.0, 60.0)
    scan = torsion_scan(atoms, calc, dihedral, angles, relax=False)
    np.testing.assert_allclose(np.cos(np.radians(scan.final_angles - angles)), 1.0, atol=1e-12)
    assert scan.converged.all() and not scan.relaxed
    for s in scan.structures:
        np.testing.assert_allclose(s.positions[:4], atoms.positions[:4], atol=1e-12)
        np.testing.assert_allclose(s.positions[5], atoms.positions[5], atol=1e-12)
        assert s.get_distance(4, 5) == pytest.approx(atoms.get_distance(4, 5), abs=1e-12)
    for name in ("mp2", "ccsdt"):
        e = scan.energies[name]
        assert e.shape == (7,) and e[0] == pytest.approx(e[-1], abs=1e-9)  # 0° == 360°
    assert scan.mad == {} and scan.reference is None


def test_relaxed_scan_holds_dihedral_and_compares_to_reference(atoms, calc):
    dihedral = hydroxyl_dihedral(atoms)
    angles = [180.0, 120.0, 60.0, 0.0]
    scan = torsion_scan(atoms, calc, dihedral, angles, relax=True, fmax=0.05, steps=200)
    assert scan.converged.all() and scan.relaxed
    diff = (scan.final_angles - angles + 180.0) % 360.0 - 180.0
    assert np.abs(diff).max() < 0.05
    rigid = torsion_scan(atoms, calc, dihedral, angles, relax=False)
    assert (scan.energies["ccsdt"] <= rigid.energies["ccsdt"] + 1e-6).all()
    # reference = the CCSD(T) profile shifted by a constant: zero error for that head only
    reference = rigid.energies["ccsdt"] - 1.0
    with_ref = torsion_scan(atoms, calc, dihedral, angles, relax=False, reference=reference)
    assert with_ref.mad["ccsdt"] == pytest.approx(0.0, abs=1e-12)
    assert with_ref.rmsd["ccsdt"] == pytest.approx(0.0, abs=1e-12)
    assert with_ref.rmsd["mp2"] >= with_ref.mad["mp2"] > 1e-5
    assert scan.relative("ccsdt").min() == 0.0 and scan.relative("ccsdt").max() > 1e-3


def test_profile_errors_use_each_minimum_as_zero():
    mad, rmsd = profile_errors([10.0, 11.0, 13.0], [0.0, 2.0, 3.0])
    # relative: [0, 1, 3] vs [0, 2, 3] -> deviations [0, -1, 0]
    assert mad == pytest.approx(1.0 / 3.0) and rmsd == pytest.approx(np.sqrt(1.0 / 3.0))
    with pytest.raises(MfgnnError, match="reference"):
        profile_errors([1.0, 2.0], [1.0])


def test_nve_conserves_total_energy(atoms, calc):
    result = run_md(atoms, calc, ensemble="nve", timestep_fs=0.5, steps=NVE_STEPS,
                    temperature_K=300.0, seed=0, log_interval=10)
    assert len(result.time) == NVE_STEPS // 10 + 1 and result.time[-1] == pytest.approx(0.5 * NVE_STEPS)
    assert result.kinetic[0] > 0.02 and np.all(np.isfinite(result.total))
    drift = energy_drift(result)
    assert drift.max_abs_deviation_per_atom < NVE_MAX_DEVIATION_PER_ATOM
    assert abs(drift.slope) < NVE_MAX_SLOPE
    # the potential really moves: energy is exchanged between kinetic and potential
    assert np.ptp(result.potential) > 20 * drift.max_abs_deviation
    assert 0.8 < atoms.get_distance(4, 5) < 1.3  # still a molecule


def test_langevin_is_reproducible(atoms, calc):
    first = run_md(atoms.copy(), calc, ensemble="langevin", steps=100, seed=3, log_interval=20)
    second = run_md(atoms.copy(), calc, ensemble="langevin", steps=100, seed=3, log_interval=20)
    np.testing.assert_array_equal(first.total, second.total)
    other = run_md(atoms.copy(), calc, ensemble="langevin", steps=100, seed=4, log_interval=20)
    assert not np.allclose(first.total, other.total)
    with pytest.raises(MfgnnError, match="nve"):
        run_md(atoms.copy(), calc, ensemble="npt", steps=1)


def test_energy_drift_of_a_known_line():
    t = np.linspace(0.0, 1000.0, 11)  # fs
    total = -10.0 + 0.004 * t / 1000.0 * 4  # 4 atoms, 0.004 eV/atom/ps
    result = MDResult(time=t, potential=total, kinetic=np.zeros_like(t), total=total,
                      temperature=np.zeros_like(t), n_atoms=4, ensemble="nve",
                      timestep_fs=0.5, steps=2000)
    drift = energy_drift(result)
    assert drift.slope == pytest.approx(0.004, rel=1e-9)
    assert drift.max_abs_deviation == pytest.approx(0.016, rel=1e-9)
    assert drift.max_abs_deviation_per_atom == pytest.approx(0.004, rel=1e-9)


def test_md_velocities_without_thermalize_momenta(atoms, calc, monkeypatch):
    """ASE releases before 3.29 lack ``thermalize_momenta`` (pyproject allows >= 3.22):
    the velocity draw must not depend on it (its old fallback recursed forever)."""
    import importlib
    import sys
    import types

    import ase.md.velocitydistribution as real

    import mfgnn.workflows as workflows

    older = types.ModuleType(real.__name__)  # the module as older ASE releases have it
    older.__dict__.update({k: v for k, v in vars(real).items() if k != "thermalize_momenta"})
    monkeypatch.setitem(sys.modules, real.__name__, older)
    try:
        module = importlib.reload(workflows)
        result = module.run_md(atoms.copy(), calc, ensemble="nve", steps=4, temperature_K=300,
                               seed=1, log_interval=2)
        assert np.all(np.isfinite(result.total))
        assert result.kinetic[0] > 0  # velocities were drawn
    finally:
        monkeypatch.undo()
        importlib.reload(workflows)
