"""Multi-fidelity HIP-NN: sensitivities, interaction and atom layers, heads, the model.

Main entry points: :class:`HIPNNConfig` and :class:`MultiFidelityHIPNN`.
"""

from mfgnn.nn.atom import AtomLayer, ShiftedSoftplus, make_activation
from mfgnn.nn.config import ACTIVATIONS, HEAD_MODES, HIPNNConfig
from mfgnn.nn.heads import HierarchicalHeads
from mfgnn.nn.hipnn import HIERARCHICALITY_EPS, MultiFidelityHIPNN
from mfgnn.nn.interaction import InteractionBlock, InteractionLayer
from mfgnn.nn.pairs import PairGeometry, build_pair_geometry, choose_width, quadrupole_components
from mfgnn.nn.sensitivity import CosineCutoff, GaussianSensitivity
from mfgnn.nn.tensor_sensitivity import TensorSensitivity

__all__ = [
    "ACTIVATIONS",
    "HEAD_MODES",
    "HIERARCHICALITY_EPS",
    "AtomLayer",
    "CosineCutoff",
    "GaussianSensitivity",
    "HIPNNConfig",
    "HierarchicalHeads",
    "InteractionBlock",
    "InteractionLayer",
    "MultiFidelityHIPNN",
    "PairGeometry",
    "ShiftedSoftplus",
    "TensorSensitivity",
    "build_pair_geometry",
    "choose_width",
    "make_activation",
    "quadrupole_components",
]
