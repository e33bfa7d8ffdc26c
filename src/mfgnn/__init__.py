"""mfgnn: multi-fidelity machine-learning interatomic potentials on PyTorch Geometric."""

__version__ = "0.1.0"
