"""Multi-fidelity HIP-NN: sensitivities, interaction and atom layers, heads, the model.

Main entry points: :class:`HIPNNConfig` and :class:`MultiFidelityHIPNN`.
:class:`EquivariantBlock` (e3nn) is imported on first use.
"""

from mfgnn.nn.atom import AtomLayer, ShiftedSoftplus, make_activation
from mfgnn.nn.config import ACTIVATIONS, EQUIVARIANT_POSITIONS, HEAD_MODES, EquivariantConfig, HIPNNConfig
from mfgnn.nn.delta_model import DeltaLearningModel
from mfgnn.nn.heads import HierarchicalHeads
from mfgnn.nn.hipnn import HIERARCHICALITY_EPS, MultiFidelityHIPNN
from mfgnn.nn.interaction import InteractionBlock, InteractionLayer
from mfgnn.nn.pairs import PairGeometry, build_pair_geometry, choose_width, quadrupole_components
from mfgnn.nn.sensitivity import CosineCutoff, GaussianSensitivity
from mfgnn.nn.tensor_sensitivity import TensorSensitivity

__all__ = [
    "ACTIVATIONS",
    "EQUIVARIANT_POSITIONS",
    "HEAD_MODES",
    "HIERARCHICALITY_EPS",
    "AtomLayer",
    "CosineCutoff",
    "DeltaLearningModel",
    "EquivariantBlock",
    "EquivariantConfig",
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


def __getattr__(name: str):
    # The e3nn import costs seconds; only models with an equivariant block need it.
    if name == "EquivariantBlock":
        from mfgnn.nn.equivariant import EquivariantBlock

        return EquivariantBlock
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
