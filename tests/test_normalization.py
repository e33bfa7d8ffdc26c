"""Per-fidelity target shift/scale: fit rules, fallbacks, ScaleShift, serialisation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mfgnn.nn.normalization import (
    ScaleShift, TargetScales, accumulate_force_rms, fit_target_scales, residual_per_atom,
)

NAN = float("nan")


@pytest.fixture()
def synthetic():
    # 4 rows, 2 fidelities; fidelity 1 misses row 2
    energies = np.array([[-10.0, -12.0], [-21.0, -25.0], [-9.0, NAN], [-30.0, -31.0]])
    n_atoms = np.array([2, 4, 2, 6])
    self_energy = np.array([[-8.0, -10.0], [-16.0, -20.0], [-8.0, -10.0], [-24.0, -30.0]])
    return energies, n_atoms, self_energy


def test_fit_by_hand(synthetic):
    energies, n_atoms, se = synthetic
    forces = [np.array([[[3.0, 0.0, 4.0], [NAN, NAN, NAN]]]),   # 1 atom, fidelity 1 missing
              np.array([[[1.0, 1.0, 1.0], [NAN, NAN, NAN]]] * 2)]
    rms = accumulate_force_rms(forces)
    assert rms[0] == pytest.approx(np.sqrt((9 + 16 + 6 * 1) / 9))
    assert np.isnan(rms[1])
    ts = fit_target_scales(energies, n_atoms, se, rms, fidelities=("lo", "hi"))
    # per-atom residuals: lo: -1, -1.25, -0.5, -1; hi: -1, -1.25, (NaN), -1/6
    lo = np.array([-1.0, -1.25, -0.5, -1.0])
    hi = np.array([-1.0, -1.25, -1.0 / 6])
    np.testing.assert_allclose(ts.shift, [lo.mean(), hi.mean()], rtol=1e-14)
    np.testing.assert_allclose(ts.scale, [rms[0], hi.std()], rtol=1e-14)
    assert ts.source == ("forces", "energy")
    assert ts.n_rows == (4, 3)
    assert ts.fidelities == ("lo", "hi")


def test_nan_rows_ignored(synthetic):
    energies, n_atoms, se = synthetic
    ts = fit_target_scales(energies, n_atoms, se)
    extra_e = np.vstack([energies, [[NAN, NAN]]])
    extra_n = np.append(n_atoms, 3)
    extra_se = np.vstack([se, [[1e6, 1e6]]])
    ts2 = fit_target_scales(extra_e, extra_n, extra_se)
    np.testing.assert_array_equal(ts.shift, ts2.shift)
    np.testing.assert_array_equal(ts.scale, ts2.scale)
    assert ts.n_rows == ts2.n_rows == (4, 3)


def test_residual_per_atom_without_self_energy():
    out = residual_per_atom(np.array([4.0, NAN]), np.array([2, 3]))
    assert out.shape == (2, 1) and out[0, 0] == 2.0 and np.isnan(out[1, 0])
    with pytest.raises(ValueError):
        residual_per_atom(np.array([[1.0]]), np.array([0]))


def test_fallbacks_positive_and_finite():
    # fidelity 0: one row, no forces; fidelity 1: two rows with spread; fidelity 2: no rows
    energies = np.array([[-3.0, -4.0, NAN], [NAN, -8.0, NAN]])
    n_atoms = np.array([2, 2])
    ts = fit_target_scales(energies, n_atoms, force_rms=[None, NAN, None])
    assert np.all(np.isfinite(ts.shift)) and np.all(np.isfinite(ts.scale)) and np.all(ts.scale > 0)
    assert ts.source == ("other_fidelities", "energy", "other_fidelities")
    assert ts.scale[1] == pytest.approx(1.0)  # std of {-2, -4}
    assert ts.scale[0] == pytest.approx(1.0) and ts.scale[2] == pytest.approx(1.0)
    assert ts.shift[0] == pytest.approx(-1.5) and ts.shift[2] == 0.0
    # nothing determines any scale: default
    one = fit_target_scales(np.array([[-3.0]]), np.array([3]), default_scale=0.5)
    assert one.scale[0] == 0.5 and one.source == ("default",) and one.shift[0] == pytest.approx(-1.0)
    # identical per-atom energies (zero std) also fall back
    flat = fit_target_scales(np.array([[-2.0], [-4.0]]), np.array([1, 2]))
    assert flat.scale[0] == 1.0 and flat.source == ("default",)
    # geometric mean of the known scales
    gm = fit_target_scales(np.array([[0.0, 0.0, 0.0]]), np.array([1]), force_rms=[2.0, 8.0, None])
    assert gm.scale[2] == pytest.approx(4.0)


def test_input_validation(synthetic):
    energies, n_atoms, se = synthetic
    with pytest.raises(ValueError):
        fit_target_scales(energies, n_atoms, se, force_rms=[1.0])
    with pytest.raises(ValueError):
        fit_target_scales(energies, n_atoms, se, fidelities=("a",))
    with pytest.raises(ValueError):
        accumulate_force_rms([np.zeros((3, 3))])
    assert accumulate_force_rms([], n_fidelities=2).shape == (2,)


def test_force_rms_accepts_tensors():
    f = torch.tensor([[[1.0, 2.0, 2.0]]])
    assert accumulate_force_rms([f, f])[0] == pytest.approx(np.sqrt(3.0))


def test_scale_shift_identity_and_formula():
    raw = torch.tensor([[1.5, -2.0], [0.25, 3.0]], dtype=torch.float32)
    n = torch.tensor([3, 5])
    ident = ScaleShift.identity(2)
    out = ident(raw, n)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, raw.double(), rtol=0, atol=0)
    m = ScaleShift([0.5, -1.0], [2.0, 0.1])
    expected = raw.double() * torch.tensor([2.0, 0.1], dtype=torch.float64) \
        + n.double()[:, None] * torch.tensor([0.5, -1.0], dtype=torch.float64)
    torch.testing.assert_close(m(raw, n), expected)


def test_scale_shift_gradients_and_dtype():
    m = ScaleShift([0.1], [3.0]).float()
    assert m.scale.dtype == torch.float64 and m.shift.dtype == torch.float64
    raw = torch.tensor([[2.0]], requires_grad=True)
    m(raw, torch.tensor([4])).sum().backward()
    assert raw.grad.item() == pytest.approx(3.0)
    with pytest.raises(ValueError):
        ScaleShift([0.0], [0.0])
    with pytest.raises(ValueError):
        ScaleShift([0.0, 1.0], [1.0])


def test_round_trips(synthetic):
    energies, n_atoms, se = synthetic
    ts = fit_target_scales(energies, n_atoms, se, [1.3, None], fidelities=("lo", "hi"))
    back = TargetScales.from_dict(json.loads(json.dumps(ts.to_dict())))
    assert back.fidelities == ts.fidelities and back.source == ts.source and back.n_rows == ts.n_rows
    np.testing.assert_array_equal(back.shift, ts.shift)
    np.testing.assert_array_equal(back.scale, ts.scale)
    shift, scale = back.as_tensors()
    assert shift.dtype == scale.dtype == torch.float64
    m = ScaleShift.from_scales(ts)
    m2 = ScaleShift.identity(2)
    m2.load_state_dict(m.state_dict())
    torch.testing.assert_close(m2.scale, m.scale, rtol=0, atol=0)
    ident = TargetScales.identity(("a", "b"))
    np.testing.assert_array_equal(ident.scale, [1.0, 1.0])


def test_widerange_scales(shared_data):
    path = shared_data / "widerange" / "h2o2_hf_mp2.npz"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    with np.load(path) as f:
        e = np.stack([f["E_hf"], f["E_mp2"]], axis=1)
        forces = np.stack([f["F_hf"], f["F_mp2"]], axis=2)  # (n, 4, F, 3)
    rms = accumulate_force_rms(forces)
    # README: force RMS 12.8 eV/Å
    assert 10.0 < rms[0] < 16.0 and 10.0 < rms[1] < 16.0
    const = e.mean(axis=0)  # one constant "self-energy" sum per fidelity
    ts = fit_target_scales(e, np.full(len(e), 4), np.broadcast_to(const, e.shape), rms, ("hf", "mp2"))
    np.testing.assert_allclose(ts.shift, 0.0, atol=1e-9)
    assert ts.source == ("forces", "forces")
