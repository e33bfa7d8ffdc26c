"""The masked multi-fidelity loss (Eq. 1-3): values, masking and gradients."""

from __future__ import annotations

import math

import pytest
import torch
from torch_geometric.data import Batch, Data

from mfgnn.loss import LossConfig
from mfgnn.loss import MultiFidelityLoss, masked_rmse_mae


def _batch(energy, forces):
    """Two structures of 2 atoms each with the given (2, F) energies and (4, F, 3) forces."""
    datas = []
    for b in range(2):
        datas.append(Data(z=torch.tensor([1, 8]), pos=torch.zeros(2, 3),
                          energy=energy[b:b + 1], forces=forces[2 * b:2 * b + 2]))
    return Batch.from_data_list(datas)


def test_rmse_mae_values_exact():
    pred = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64)
    target = torch.tensor([1.0, 0.0, 3.0, float("nan")], dtype=torch.float64)
    rmse, mae, n = masked_rmse_mae(pred, target, torch.isfinite(target))
    assert n == 3
    assert float(rmse) == pytest.approx(math.sqrt(4.0 / 3.0))
    assert float(mae) == pytest.approx(2.0 / 3.0)


def test_no_label_gives_exact_zero_and_no_nan_gradient():
    pred = torch.tensor([1.0, 2.0], requires_grad=True)
    target = torch.tensor([float("nan"), float("nan")])
    rmse, mae, n = masked_rmse_mae(pred, target, torch.isfinite(target))
    assert n == 0 and float(rmse) == 0.0 and float(mae) == 0.0
    # combined with a labelled term, the empty one adds nothing to the gradient
    (rmse + mae + pred.sum()).backward()
    assert torch.equal(pred.grad, torch.ones(2))


def test_perfect_prediction_has_finite_gradient():
    pred = torch.tensor([1.0, 2.0], requires_grad=True)
    rmse, mae, _ = masked_rmse_mae(pred, pred.detach().clone(), torch.ones(2, dtype=torch.bool))
    (rmse + mae).backward()
    assert torch.isfinite(pred.grad).all()


def _outputs(requires_grad=True):
    energy = torch.tensor([[1.0, 2.0], [3.0, 5.0]], dtype=torch.float64, requires_grad=requires_grad)
    forces = torch.arange(24, dtype=torch.float32).reshape(4, 2, 3).div(10).requires_grad_(requires_grad)
    return {"energy": energy, "forces": forces}


def test_masked_label_changes_neither_loss_nor_gradients():
    labels = {"lo": ["energy", "forces"], "hi": ["energy"]}
    loss = MultiFidelityLoss(["lo", "hi"], labels, LossConfig(hierarchicality_weight=0.0))
    energy = torch.tensor([[0.5, 2.5], [3.5, float("nan")]], dtype=torch.float64)
    forces = torch.zeros(4, 2, 3)
    forces[:, 1] = float("nan")            # no high-level forces at all
    reference = _batch(energy, forces)

    out = _outputs()
    value = loss(out, reference).total
    value.backward()
    grads = (out["energy"].grad.clone(), out["forces"].grad.clone())

    # the same, with the masked high-level energy replaced by another NaN pattern and
    # the (unselected) high-level forces filled with garbage: nothing may change
    forces2 = forces.clone()
    forces2[:, 1] = 1.0e6
    out2 = _outputs()
    value2 = loss(out2, _batch(energy, forces2)).total
    value2.backward()
    assert float(value2) == float(value)
    assert torch.equal(out2["energy"].grad, grads[0])
    assert torch.equal(out2["forces"].grad, grads[1])
    # the masked energy entry gets exactly zero gradient
    assert float(grads[0][1, 1]) == 0.0


def test_loss_equals_hand_computed_sum():
    labels = {"lo": ["energy", "forces"], "hi": ["energy"]}
    cfg = LossConfig(energy_weight={"hi": 2.0}, forces_weight=0.5, hierarchicality_weight=0.0)
    loss = MultiFidelityLoss(["lo", "hi"], labels, cfg)
    energy = torch.tensor([[0.0, 0.0], [0.0, 0.0]], dtype=torch.float64)
    forces = torch.zeros(4, 2, 3)
    out = _outputs(requires_grad=False)
    terms = loss(out, _batch(energy, forces))
    e_lo = out["energy"][:, 0]
    e_hi = out["energy"][:, 1]
    f_lo = out["forces"][:, 0].double()
    expected = ((e_lo.square().mean().sqrt() + e_lo.abs().mean())
                + 2.0 * (e_hi.square().mean().sqrt() + e_hi.abs().mean())
                + 0.5 * (f_lo.square().mean().sqrt() + f_lo.abs().mean()))
    assert float(terms.total) == pytest.approx(float(expected), rel=1e-6)
    assert set(terms.forces) == {"lo"}


def test_fidelity_without_labels_in_batch_contributes_zero():
    labels = {"lo": ["energy"], "hi": ["energy"]}
    loss = MultiFidelityLoss(["lo", "hi"], labels, LossConfig(hierarchicality_weight=0.0))
    energy = torch.tensor([[1.0, float("nan")], [3.0, float("nan")]], dtype=torch.float64)
    out = {"energy": torch.tensor([[1.0, 7.0], [3.0, 9.0]], dtype=torch.float64)}
    terms = loss(out, _batch(energy, torch.zeros(4, 2, 3)))
    assert float(terms.total) == 0.0
    assert "hi" not in terms.energy


def test_hierarchicality_is_relative_to_error_terms():
    labels = {"lo": ["energy"]}
    loss = MultiFidelityLoss(["lo"], labels, LossConfig(hierarchicality_weight=0.1))
    energy = torch.tensor([[0.0], [0.0]], dtype=torch.float64)
    out = {"energy": torch.tensor([[3.0], [4.0]], dtype=torch.float64)}
    error = math.sqrt(12.5) + 3.5
    h = torch.tensor([0.5])
    total = loss(out, _batch(energy, torch.zeros(4, 1, 3)), hierarchicality=h).total
    assert float(total) == pytest.approx(error * (1 + 0.1 * 0.5))


def test_needs_forces_only_when_labels_present():
    labels = {"lo": ["energy", "forces"], "hi": ["energy"]}
    loss = MultiFidelityLoss(["lo", "hi"], labels)
    energy = torch.zeros(2, 2, dtype=torch.float64)
    forces = torch.full((4, 2, 3), float("nan"))
    assert loss.needs_forces(_batch(energy, forces)) == []
    forces[0, 0] = 1.0
    assert loss.needs_forces(_batch(energy, forces)) == ["lo"]
