"""MFGNNCalculator on a CH3OH model trained on real MP2 / CCSD(T) data (float64)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from _models import ch3oh_atoms, session_model
from ase import Atoms
from torch_geometric.data import Data

from mfgnn.calculator import MFGNNCalculator
from mfgnn.errors import ModelError
from mfgnn.model_file import load_model


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory, shared_data):
    return session_model(tmp_path_factory, shared_data)


@pytest.fixture
def atoms(shared_data):
    return ch3oh_atoms(shared_data, row=17)


def make_calc(model, **kwargs) -> MFGNNCalculator:
    return MFGNNCalculator(model, num_threads=1, **kwargs)


def test_forces_equal_minus_energy_gradient(run_dir, atoms):
    calc = make_calc(run_dir, compute_all_forces=True)
    atoms.calc = calc
    forces = atoms.get_forces()
    forces_all = calc.results["forces_all"]
    h = 1.0e-4  # Å
    for name in calc.fidelities:
        numeric = np.zeros_like(forces)
        for a in range(len(atoms)):
            for x in range(3):
                energies = []
                for sign in (1, -1):
                    moved = atoms.copy()
                    moved.positions[a, x] += sign * h
                    energies.append(calc.evaluate(moved)["energy"][0, calc.fidelities.index(name)])
                numeric[a, x] = -(energies[0] - energies[1]) / (2 * h)
        assert np.abs(numeric).max() > 0.05  # a real, non-trivial force field
        assert np.abs(forces_all[name] - numeric).max() < 1.0e-4
    np.testing.assert_array_equal(forces, forces_all["ccsdt"])
    assert np.abs(forces.sum(axis=0)).max() < 1.0e-10  # no net force


def test_energies_all_equal_direct_model_call(run_dir, atoms):
    model = load_model(run_dir, dtype=torch.float64)
    calc = make_calc(model)
    atoms.calc = calc
    energy = atoms.get_potential_energy()
    data = Data(z=torch.as_tensor(atoms.numbers), pos=torch.as_tensor(atoms.positions))
    with torch.no_grad():
        direct = model(data)["energy"][0].numpy()
    assert list(calc.results["energies_all"]) == ["mp2", "ccsdt"]
    for t, name in enumerate(model.fidelities):
        assert calc.results["energies_all"][name] == pytest.approx(direct[t], abs=1e-10)
    assert energy == calc.results["energies_all"]["ccsdt"]
    assert calc.results["free_energy"] == energy
    # the two heads are different levels of theory: CCSD(T) vs MP2 atomic references
    assert abs(direct[1] - direct[0]) > 0.01


def test_fidelity_choice_and_model_inputs(run_dir, atoms):
    by_folder = make_calc(run_dir)
    assert by_folder.fidelity == "ccsdt"  # default: the highest level
    assert by_folder.metadata["trained_labels"] == {"mp2": ["energy", "forces"], "ccsdt": ["energy"]}
    by_file = make_calc(run_dir / "model.pt", fidelity="mp2")
    e_cc = by_folder.get_potential_energy(atoms)
    e_mp2 = by_file.get_potential_energy(atoms)
    assert e_cc == pytest.approx(by_file.results["energies_all"]["ccsdt"], abs=1e-10)
    assert e_mp2 == pytest.approx(by_folder.results["energies_all"]["mp2"], abs=1e-10)
    assert not np.allclose(by_folder.get_forces(atoms), by_file.get_forces(atoms))


def test_bad_fidelity_names_the_allowed_ones(run_dir):
    with pytest.raises(ModelError, match=r"'ccsd'.*mp2, ccsdt"):
        make_calc(run_dir, fidelity="ccsd")


def test_unknown_element_names_the_allowed_ones(run_dir, atoms):
    atoms.calc = make_calc(run_dir)
    atoms.numbers[5] = 7  # O -> N: the model saw H, C, O only
    with pytest.raises(ModelError, match=r"N \(Z=7\).*H \(Z=1\), C \(Z=6\), O \(Z=8\)"):
        atoms.get_potential_energy()


@pytest.mark.parametrize("pbc", [True, (True, False, False)])
def test_periodic_cell_is_refused(run_dir, atoms, pbc):
    atoms.cell = [20.0, 20.0, 20.0]
    atoms.pbc = pbc
    atoms.calc = make_calc(run_dir)
    with pytest.raises(ModelError, match="periodic boundary conditions"):
        atoms.get_forces()


def test_results_are_cached_and_recomputed(run_dir, atoms):
    model = load_model(run_dir, dtype=torch.float64)
    calls = []
    model.register_forward_hook(lambda *args: calls.append(1))
    atoms.calc = make_calc(model)
    e0 = atoms.get_potential_energy()
    atoms.get_forces()
    atoms.get_potential_energy()
    atoms.calc.results["energies_all"]
    assert len(calls) == 1 and atoms.calc.n_evaluations == 1
    atoms.positions[4, 0] += 0.05  # stretch O-H
    e1 = atoms.get_potential_energy()
    assert len(calls) == 2 and abs(e1 - e0) > 1e-4
    atoms.get_forces()
    assert len(calls) == 2
    atoms.cell = [30.0, 30.0, 30.0]  # a change the calculator must notice (pbc stays off)
    assert atoms.get_potential_energy() == pytest.approx(e1, abs=1e-12)
    assert len(calls) == 3
    atoms.numbers[1] = 8  # H -> O
    assert abs(atoms.get_potential_energy() - e1) > 1e-3
    assert len(calls) == 4


def test_ensemble_mean_and_std(run_dir, atoms):
    same = make_calc([run_dir, run_dir])
    same.get_forces(atoms)
    assert same.results["energy_std"] == 0.0
    assert np.abs(same.results["forces_std"]).max() == 0.0
    assert set(same.results["energies_all_std"].values()) == {0.0}

    first = load_model(run_dir, dtype=torch.float64)
    second = copy.deepcopy(first)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in second.blocks.parameters():
            p.add_(0.02 * torch.randn_like(p))
    members = [make_calc(m) for m in (first, second)]
    singles = [(c.get_potential_energy(atoms), c.get_forces(atoms)) for c in members]
    ens = make_calc([first, second])
    energy, forces = ens.get_potential_energy(atoms), ens.get_forces(atoms)
    assert energy == pytest.approx(0.5 * (singles[0][0] + singles[1][0]), abs=1e-10)
    np.testing.assert_allclose(forces, 0.5 * (singles[0][1] + singles[1][1]), atol=1e-10)
    assert ens.results["energy_std"] == pytest.approx(0.5 * abs(singles[0][0] - singles[1][0]), abs=1e-10)
    assert ens.results["energy_std"] > 1e-4
    assert ens.results["forces_std"].shape == (len(atoms), 3)
    assert ens.results["forces_std"].max() > 1e-4


def test_ensemble_members_must_agree(run_dir):
    model = load_model(run_dir)
    other = copy.deepcopy(model)
    other.fidelities = ("mp2", "f12")
    with pytest.raises(ModelError, match="ensemble member 1"):
        make_calc([model, other])
    with pytest.raises(ModelError, match="a path to a model file"):
        make_calc(42)


def test_large_cluster_uses_cell_list_and_is_translation_invariant(run_dir):
    rng = np.random.default_rng(0)
    n = 300  # above the all-pairs size limit of radius_graph
    side = (n / 0.1) ** (1 / 3)
    positions = [rng.uniform(0, side, 3)]
    while len(positions) < n:
        p = rng.uniform(0, side, 3)
        if np.min(np.linalg.norm(np.asarray(positions) - p, axis=1)) > 1.0:
            positions.append(p)
    atoms = Atoms(numbers=rng.choice([1, 6, 8], n), positions=positions)
    calc = make_calc(run_dir)
    e0, f0 = calc.get_potential_energy(atoms), calc.get_forces(atoms)
    shifted = atoms.copy()
    shifted.positions += [3.1, -7.2, 0.4]
    assert calc.get_potential_energy(shifted) == pytest.approx(e0, abs=1e-8)
    np.testing.assert_allclose(calc.get_forces(shifted), f0, atol=1e-8)
    assert np.abs(f0.sum(axis=0)).max() < 1e-8
