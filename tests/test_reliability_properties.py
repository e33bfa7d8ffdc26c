"""Property-based checks (hypothesis, bounded) of the loaders, the graph builder, the model
and the masked loss on random molecules of 1-300 atoms with random missing labels.

Invariants:
* every loader (npz with padding, ANI-HDF5, extxyz) returns exactly the atoms, positions
  and label pattern written (NaN = missing), or a DataError when a label exists nowhere;
* every edge is within the cutoff and none is missing (brute force), no self loops, no
  edge between structures of a batch;
* the model's energies and forces are finite for any elements of its set;
* masked labels never contribute: the loss over NaN-masked labels equals the loss with
  those labels replaced by garbage while masked (not selected, or masked explicitly),
  predictions at masked entries get exactly zero gradient, and self-energy fits ignore
  rows without the label.
"""

from __future__ import annotations

import math
import warnings

import ase.io
import h5py
import numpy as np
import pytest
import torch
from ase import Atoms
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from torch_geometric.data import Batch, Data

from mfgnn.loss import LossConfig
from mfgnn.data import fit_self_energies, load_dataset
from mfgnn.errors import DataError
from mfgnn.loss import MultiFidelityLoss, masked_rmse_mae
from mfgnn.nn import HIPNNConfig, MultiFidelityHIPNN

ELEMENTS = (1, 6, 8)
FIDELITIES = ("lo", "hi")
MIN_SEPARATION = 0.5  # Å, far above the loaders' coincident-atom threshold
SETTINGS = settings(max_examples=25, deadline=None, derandomize=False,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow, HealthCheck.data_too_large])


pytestmark = pytest.mark.usefixtures("one_thread")


# --------------------------------------------------------------------------- generators


def molecule(n: int, spacing: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """n atoms of ELEMENTS on a jittered cubic grid: every pair ≥ MIN_SEPARATION apart."""
    side = int(np.ceil(n ** (1 / 3))) + 1
    grid = np.stack(np.meshgrid(*[np.arange(side)] * 3, indexing="ij"), -1).reshape(-1, 3)
    jitter = (spacing - MIN_SEPARATION) / (2 * np.sqrt(3))
    pos = grid[rng.choice(len(grid), n, replace=False)] * spacing
    pos = pos + rng.uniform(-jitter, jitter, pos.shape) + rng.normal(0, 10, 3)
    return rng.choice(ELEMENTS, n).astype(np.int64), pos


LABELS = [f"{kind}:{fid}" for kind in ("energy", "forces") for fid in FIDELITIES]


def make_rows(sizes, seed: int, spacing: float, present: list[dict]) -> list[dict]:
    """One row per molecule size; ``present[k]`` says which labels row k has."""
    rng = np.random.default_rng(seed)
    rows = []
    for n, has in zip(sizes, present):
        z, pos = molecule(n, spacing, rng)
        rows.append({
            "z": z, "pos": pos, "present": dict(has),
            "energy": {fid: -2.0 * n + rng.normal(0, 0.5) for fid in FIDELITIES},
            "forces": {fid: rng.normal(0, 1.0, (n, 3)) for fid in FIDELITIES},
        })
    return rows


@st.composite
def datasets(draw):
    """Rows of random molecules with a random pattern of missing labels per fidelity."""
    sizes = draw(st.lists(st.one_of(st.integers(1, 12), st.integers(1, 300)),
                          min_size=1, max_size=3))
    present = [{key: draw(st.booleans()) for key in LABELS} for _ in sizes]
    return make_rows(sizes, draw(st.integers(0, 2**32 - 1)), draw(st.floats(1.0, 2.0)), present)


#: Always tried: the largest molecule, a single atom, the cell-list size (> 128 atoms) and
#: a row with no label at all, in every format.
EDGE_ROWS = make_rows([300, 1, 129, 7], seed=7, spacing=1.0, present=[
    dict.fromkeys(LABELS, True), {**dict.fromkeys(LABELS, True), "energy:hi": False},
    {**dict.fromkeys(LABELS, False), "forces:lo": True, "energy:lo": True},
    dict.fromkeys(LABELS, False)])


def write_npz(folder, rows) -> dict:
    """One npz per fidelity, rows padded with atomic number 0 to the largest molecule."""
    width = max(len(r["z"]) for r in rows) + 1  # always at least one padding column
    spec = {}
    for fid in FIDELITIES:
        Z = np.zeros((len(rows), width), dtype=np.int64)
        R = np.zeros((len(rows), width, 3))
        F = np.zeros((len(rows), width, 3))
        E = np.full(len(rows), np.nan)
        for k, r in enumerate(rows):
            n = len(r["z"])
            Z[k, :n], R[k, :n] = r["z"], r["pos"]
            F[k, :n] = r["forces"][fid] if r["present"][f"forces:{fid}"] else np.nan
            if r["present"][f"energy:{fid}"]:
                E[k] = r["energy"][fid]
        path = folder / f"{fid}.npz"
        np.savez(path, R=R, Z=Z, E=E, F=F)
        spec[fid] = {"path": str(path), "energy_unit": "eV"}
    return spec


def write_ani(folder, rows) -> dict:
    """ANI layout: one group per row; a missing force label is a group without forces."""
    path = folder / "data.h5"
    with h5py.File(path, "w") as f:
        for k, r in enumerate(rows):
            g = f.create_group(f"g{k:03d}")
            g["coordinates"] = r["pos"][None]
            g["atomic_numbers"] = r["z"]
            for fid in FIDELITIES:
                ok = r["present"][f"energy:{fid}"]
                g[f"{fid}.energy"] = np.array([r["energy"][fid] if ok else np.nan])
                if r["present"][f"forces:{fid}"]:
                    g[f"{fid}.forces"] = r["forces"][fid][None]
    return {fid: {"path": str(path), "format": "ani-h5", "energy_key": f"{fid}.energy",
                  "energy_unit": "eV"} for fid in FIDELITIES}


def write_extxyz(folder, rows) -> dict:
    frames = []
    for r in rows:
        atoms = Atoms(numbers=r["z"], positions=r["pos"])
        for fid in FIDELITIES:
            if r["present"][f"energy:{fid}"]:
                atoms.info[f"e_{fid}"] = float(r["energy"][fid])
            if r["present"][f"forces:{fid}"]:
                atoms.arrays[f"f_{fid}"] = r["forces"][fid]
        frames.append(atoms)
    path = folder / "data.extxyz"
    ase.io.write(path, frames, format="extxyz")
    return {fid: {"path": str(path), "energy_unit": "eV",
                  "keys": {"energy": f"e_{fid}", "forces": f"f_{fid}"}} for fid in FIDELITIES}


WRITERS = {"npz": write_npz, "ani-h5": write_ani, "extxyz": write_extxyz}


def tiny_model(cutoff: float, seed: int) -> MultiFidelityHIPNN:
    torch.manual_seed(seed)
    config = HIPNNConfig(n_features=8, n_interactions=1, n_atom_layers=1, n_sensitivities=4,
                         cutoff=cutoff, soft_min=0.15 * cutoff, soft_max=0.85 * cutoff,
                         tensor_order=1, n_tensor_channels=2, heads="delta")
    se = torch.tensor([[-13.6, -1029.5, -2042.6], [-13.7, -1030.0, -2043.0]], dtype=torch.float64)
    return MultiFidelityHIPNN(config, FIDELITIES, ELEMENTS, se)


def check_edges(edge_index: torch.Tensor, pos: torch.Tensor, cutoff: float) -> None:
    """Every edge within the cutoff, none missing (float64 brute force on the item's own
    positions, with a 1e-6 relative band for float32 rounding at the cutoff), no self
    loops, no duplicates, sorted by target then source."""
    p = pos.double()
    n = p.shape[0]
    d = torch.cdist(p, p)
    src, dst = edge_index
    assert bool((src != dst).all())
    assert bool((d[src, dst] < cutoff * (1 + 1e-6)).all()), float(d[src, dst].max())
    want = (d < cutoff * (1 - 1e-6)) & ~torch.eye(n, dtype=torch.bool)
    have = torch.zeros(n, n, dtype=torch.bool)
    have[src, dst] = True
    assert bool((have | ~want).all()), "an edge within the cutoff is missing"
    key = dst * n + src
    assert bool((key[1:] > key[:-1]).all()), "edges not sorted or duplicated"


# --------------------------------------------------------------------------- properties


@SETTINGS
@given(rows=datasets(), fmt=st.sampled_from(sorted(WRITERS)), cutoff=st.floats(1.0, 6.5),
       seed=st.integers(0, 1000))
@example(rows=EDGE_ROWS, fmt="npz", cutoff=6.5, seed=0)
@example(rows=EDGE_ROWS, fmt="ani-h5", cutoff=3.0, seed=1)
@example(rows=EDGE_ROWS, fmt="extxyz", cutoff=1.2, seed=2)
def test_loaders_graphs_model_and_loss_on_random_molecules(tmp_path_factory, rows, fmt, cutoff,
                                                           seed):
    folder = tmp_path_factory.mktemp(fmt.replace("-", ""))
    spec = {"fidelities": WRITERS[fmt](folder, rows)}
    nowhere = [key for key in ("energy:lo", "energy:hi", "forces:lo", "forces:hi")
               if not any(r["present"][key] for r in rows)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # tiny random sets may look implausible
        if fmt == "extxyz" and nowhere:
            # a key that no frame has is an error naming it (not silently "no labels")
            with pytest.raises(DataError, match=r"key '[ef]_(lo|hi)' \(fidelity '(lo|hi)'\) "
                               r"is in no frame"):
                load_dataset(spec, cutoff=cutoff)
            return
        ds = load_dataset(spec, cutoff=cutoff)

    assert len(ds) == len(rows) and ds.fidelities == FIDELITIES
    items = [ds[i] for i in range(len(ds))]
    for k, (r, item) in enumerate(zip(rows, items)):
        assert item.z.tolist() == r["z"].tolist()
        np.testing.assert_allclose(item.pos.numpy(), r["pos"], rtol=1e-6, atol=1e-5)
        check_edges(item.edge_index, item.pos, cutoff)
        for t, fid in enumerate(FIDELITIES):
            has_e = r["present"][f"energy:{fid}"]
            has_f = r["present"][f"forces:{fid}"] and (fmt != "ani-h5" or has_e)
            assert bool(np.isfinite(ds.energies[k, t])) == has_e
            if has_e:
                assert ds.energies[k, t] == pytest.approx(r["energy"][fid], rel=1e-9)
            assert bool(ds.has_force_rows[k, t]) == has_f
            forces = item.forces[:, t]
            if has_f:
                np.testing.assert_allclose(forces.numpy(), r["forces"][fid], rtol=1e-5, atol=1e-6)
            else:
                assert bool(torch.isnan(forces).all())

    # a batch: same edges per structure (offset), none between structures
    batch = Batch.from_data_list(items)
    offsets = batch.ptr[:-1]
    joined = torch.cat([it.edge_index + off for it, off in zip(items, offsets)], dim=1)
    assert torch.equal(batch.edge_index, joined)
    assert bool((batch.batch[batch.edge_index[0]] == batch.batch[batch.edge_index[1]]).all())

    # the model: finite energies and forces for any elements of its set
    model = tiny_model(cutoff, seed)
    out = model(batch, forces=True, training=True)
    assert bool(torch.isfinite(out["energy"]).all()) and bool(torch.isfinite(out["forces"]).all())
    # the masked loss over this missing-label pattern is finite, with finite gradients
    loss = MultiFidelityLoss(FIDELITIES, {"lo": ["energy", "forces"], "hi": ["energy", "forces"]})
    total = loss(out, batch, model.hierarchicality(out), model.head_regularization()).total
    assert math.isfinite(float(total.detach()))
    if total.requires_grad:
        total.backward()
        for name, p in model.named_parameters():
            assert p.grad is None or bool(torch.isfinite(p.grad).all()), name


@st.composite
def labelled_batches(draw):
    """Predictions and labels of a batch with a random missing pattern and selection."""
    n_struct = draw(st.integers(1, 6))
    n_fid = draw(st.integers(1, 3))
    atoms = draw(st.lists(st.integers(1, 7), min_size=n_struct, max_size=n_struct))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    n_atoms = sum(atoms)
    e_mask = rng.random((n_struct, n_fid)) < draw(st.floats(0.0, 1.0))
    f_rows = rng.random((n_struct, n_fid)) < draw(st.floats(0.0, 1.0))
    f_mask = np.repeat(f_rows, atoms, axis=0)  # a structure has forces for all its atoms
    kinds = [draw(st.sampled_from([["energy"], ["forces"], ["energy", "forces"], []]))
             for _ in range(n_fid)]
    per_atom = draw(st.booleans())
    return {
        "atoms": atoms, "fids": [f"f{t}" for t in range(n_fid)], "kinds": kinds,
        "per_atom": per_atom,
        "e_pred": rng.normal(0, 3, (n_struct, n_fid)), "e_true": rng.normal(0, 3, (n_struct, n_fid)),
        "f_pred": rng.normal(0, 1, (n_atoms, n_fid, 3)), "f_true": rng.normal(0, 1, (n_atoms, n_fid, 3)),
        "e_mask": e_mask, "f_mask": f_mask,
    }


def _loss_and_grads(case, e_true, f_true, e_pred, f_pred):
    batch = Data(energy=torch.tensor(e_true), forces=torch.tensor(f_true, dtype=torch.float32),
                 batch=torch.repeat_interleave(torch.arange(len(case["atoms"])),
                                               torch.tensor(case["atoms"])))
    labels = dict(zip(case["fids"], case["kinds"]))
    fn = MultiFidelityLoss(case["fids"], labels,
                           LossConfig(hierarchicality_weight=0.0, per_atom_energy=case["per_atom"]))
    e = torch.tensor(e_pred, requires_grad=True)
    f = torch.tensor(f_pred, dtype=torch.float32, requires_grad=True)
    total = fn({"energy": e, "forces": f}, batch).total
    if total.requires_grad:
        total.backward()
    grad_e = e.grad if e.grad is not None else torch.zeros_like(e)
    grad_f = f.grad if f.grad is not None else torch.zeros_like(f)
    return float(total.detach()), grad_e, grad_f


def _reference(case) -> float:
    """RMSE + MAE over the labelled, selected entries only (numpy, float64)."""
    total = 0.0
    n_at = np.array(case["atoms"], dtype=np.float64)
    for t, kinds in enumerate(case["kinds"]):
        if "energy" in kinds:
            m = case["e_mask"][:, t]
            if m.any():
                d = case["e_pred"][m, t] - case["e_true"][m, t]
                if case["per_atom"]:
                    d = d / n_at[m]
                total += np.sqrt(np.mean(d**2)) + np.mean(np.abs(d))
        if "forces" in kinds:
            m = case["f_mask"][:, t]
            if m.any():
                d = (case["f_pred"][m, t].astype(np.float32).astype(np.float64)
                     - case["f_true"][m, t].astype(np.float32).astype(np.float64))
                total += np.sqrt(np.mean(d**2)) + np.mean(np.abs(d))
    return total


@settings(max_examples=50, deadline=None)
@given(case=labelled_batches())
def test_masked_labels_never_contribute_to_the_loss(case):
    e_mask, f_mask = case["e_mask"], case["f_mask"]
    e_true = np.where(e_mask, case["e_true"], np.nan)
    f_true = np.where(f_mask[..., None], case["f_true"], np.nan)
    value, grad_e, grad_f = _loss_and_grads(case, e_true, f_true, case["e_pred"], case["f_pred"])
    assert value == pytest.approx(_reference(case), rel=1e-5, abs=1e-9)
    assert bool(torch.isfinite(grad_e).all()) and bool(torch.isfinite(grad_f).all())
    # masked entries get exactly zero gradient
    assert bool((grad_e[torch.tensor(~e_mask)] == 0).all())
    assert bool((grad_f[torch.tensor(~f_mask)] == 0).all())

    # garbage predictions at masked entries change nothing
    garbage_e = np.where(e_mask, case["e_pred"], 1.0e12)
    garbage_f = np.where(f_mask[..., None], case["f_pred"], -3.0e7)
    again = _loss_and_grads(case, e_true, f_true, garbage_e, garbage_f)
    assert again[0] == value
    assert torch.equal(again[1], grad_e) and torch.equal(again[2], grad_f)

    # labels that are present but not selected are masked too: garbage there == NaN there
    sel_e = np.array([["energy" in k for k in case["kinds"]]] * len(e_mask))
    sel_f = np.array([["forces" in k for k in case["kinds"]]] * len(f_mask))
    junk_e = np.where(sel_e, e_true, 4.0e9)
    junk_f = np.where(sel_f[..., None], f_true, 5.0e5)
    nan_e = np.where(sel_e, e_true, np.nan)
    nan_f = np.where(sel_f[..., None], f_true, np.nan)
    a = _loss_and_grads(case, junk_e, junk_f, case["e_pred"], case["f_pred"])
    b = _loss_and_grads(case, nan_e, nan_f, case["e_pred"], case["f_pred"])
    assert a[0] == b[0] == value
    assert torch.equal(a[1], b[1]) and torch.equal(a[2], b[2])


@settings(max_examples=50, deadline=None)
@given(n=st.integers(1, 40), seed=st.integers(0, 2**32 - 1), fraction=st.floats(0.0, 1.0))
def test_explicit_mask_ignores_garbage_targets(n, seed, fraction):
    rng = np.random.default_rng(seed)
    mask = torch.tensor(rng.random(n) < fraction)
    pred = torch.tensor(rng.normal(size=n), requires_grad=True)
    target = torch.tensor(rng.normal(size=n))
    results = []
    for fill in (float("nan"), float("inf"), -1.0e300, 0.0):
        p = pred.detach().clone().requires_grad_(True)
        rmse, mae, count = masked_rmse_mae(p, torch.where(mask, target, torch.tensor(fill)), mask)
        if count:  # nothing labelled: exact zeros, not connected to the prediction
            (rmse + mae).backward()
        grad = p.grad.clone() if p.grad is not None else torch.zeros_like(p)
        results.append((float(rmse), float(mae), count, grad))
    for r in results[1:]:
        assert r[:3] == results[0][:3] and torch.equal(r[3], results[0][3])
    assert bool((results[0][3][~mask] == 0).all()) and bool(torch.isfinite(results[0][3]).all())
    assert results[0][2] == int(mask.sum())


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n_rows=st.integers(2, 40), fraction=st.floats(0.1, 0.9))
def test_self_energies_ignore_rows_without_the_label(seed, n_rows, fraction):
    """Fitting with NaN (missing) energies equals fitting on the labelled rows alone."""
    rng = np.random.default_rng(seed)

    class Table:  # the attributes fit_self_energies reads
        fidelities = FIDELITIES
        elements = ELEMENTS

        def __init__(self, counts, energies):
            self._counts, self.energies = counts, energies

        def element_counts(self):
            return self._counts

    counts = rng.integers(0, 5, (n_rows, 3))
    counts[counts.sum(axis=1) == 0, 0] = 1
    energies = counts @ np.array([[-13.6, -13.7], [-1029.5, -1030.0], [-2042.6, -2043.0]])
    energies = energies + rng.normal(0, 0.1, energies.shape)
    missing = rng.random(n_rows) > fraction
    missing[0] = False  # at least one labelled row
    masked = energies.copy()
    masked[missing, 1] = np.nan
    full = fit_self_energies(Table(counts, masked))
    alone = fit_self_energies(Table(counts[~missing], energies[~missing]))
    np.testing.assert_allclose(full.values[1], alone.values[1], rtol=1e-9, atol=1e-9)
    assert full.n_rows["hi"] == int((~missing).sum())
