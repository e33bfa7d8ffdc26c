"""Shared checks of the model tests: E(3) and permutation symmetry, and forces against
finite differences of the energy."""

from __future__ import annotations

import torch
from torch_geometric.data import Batch, Data


def batch_of(mols) -> Batch:
    """A PyG batch of (atomic numbers, positions) pairs."""
    return Batch.from_data_list([Data(z=z.long(), pos=p.clone()) for z, p in mols])


def random_orthogonal(seed: int, reflect: bool) -> torch.Tensor:
    """A random 3x3 rotation (det +1), or an improper rotation (det -1) with ``reflect``."""
    q, _ = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(seed)))
    if (torch.det(q) < 0) != reflect:
        q[:, 0] = -q[:, 0]
    return q


def assert_invariant_and_equivariant(model, molecules, seed: int, reflect: bool,
                                     min_force: float) -> None:
    """Rotate (or reflect), translate and permute every molecule: energies must not
    change and forces must rotate and permute with the atoms. ``min_force`` (eV/Å)
    guards against a model whose forces vanish, which would pass trivially."""
    ref = model(batch_of(molecules), forces=True)
    moved, transforms = [], []
    for k, (z, p) in enumerate(molecules):
        q = random_orthogonal(k + seed, reflect)
        perm = torch.randperm(len(z), generator=torch.Generator().manual_seed(k))
        moved.append((z[perm], (p @ q.t() + torch.tensor([1.5, -20.0, 3.0]))[perm]))
        transforms.append((perm, q))
    out = model(batch_of(moved), forces=True)
    assert torch.allclose(out["energy"], ref["energy"], rtol=1e-12, atol=1e-9)
    start = 0
    for (z, _), (perm, q) in zip(molecules, transforms):
        n = len(z)
        expect = ref["forces"][start:start + n][perm] @ q.t()
        assert torch.allclose(out["forces"][start:start + n], expect, atol=1e-10)
        start += n
    assert ref["forces"].abs().max() > min_force


def assert_forces_are_minus_energy_gradient(model, data, atoms, h: float = 1e-5) -> None:
    """Forces of every fidelity on ``atoms`` equal −dE/dx by central differences
    (step ``h`` Å, float64 model expected)."""
    forces = model(data, forces=True)["forces"]
    for a in atoms:
        s = int(data.batch[a])
        for x in range(3):
            pos = data.pos.clone()
            pos[a, x] += h
            up = model(Data(z=data.z, pos=pos, batch=data.batch))["energy"][s]
            pos[a, x] -= 2 * h
            down = model(Data(z=data.z, pos=pos, batch=data.batch))["energy"][s]
            fd = -(up - down) / (2 * h)
            assert torch.allclose(forces[a, :, x], fd, rtol=1e-6, atol=1e-8), (a, x, forces[a, :, x], fd)
