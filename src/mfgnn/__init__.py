"""mfgnn: multi-fidelity machine-learning interatomic potentials on PyTorch Geometric.

One network, a shared HIP-NN trunk and one linear energy head per level of theory
("fidelity"), trained to whatever labels exist. Units: eV, Å, eV/Å.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "load_model", "save_model", "load_dataset", "MultiFidelityHIPNN",
           "HIPNNConfig"]


def __getattr__(name):  # lazy, so that ``import mfgnn`` stays cheap
    if name in ("load_model", "save_model"):
        from . import model_file
        return getattr(model_file, name)
    if name == "load_dataset":
        from .data import load_dataset
        return load_dataset
    if name in ("MultiFidelityHIPNN", "HIPNNConfig"):
        from . import nn
        return getattr(nn, name)
    raise AttributeError(f"module 'mfgnn' has no attribute {name!r}")
