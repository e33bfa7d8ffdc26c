"""Hyper-parameters of the multi-fidelity HIP-NN model.

Defaults follow the ANI-1x study of Messerly et al. (HIP-NN-TS, soft sensitivity range
0.75–5.5 Å, hard cutoff 6.5 Å, 20 sensitivity functions).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Mapping

from mfgnn.config_checks import build_section, check_choice
from mfgnn.errors import ConfigError

#: Names accepted by :attr:`HIPNNConfig.activation`.
ACTIVATIONS = ("softplus", "shifted_softplus", "silu", "tanh")
#: The activation of the model and, by default, of every layer.
DEFAULT_ACTIVATION = "shifted_softplus"
#: Names accepted by :attr:`HIPNNConfig.heads`.
HEAD_MODES = ("independent", "delta", "tethered")
#: Places accepted by :attr:`EquivariantConfig.position`.
EQUIVARIANT_POSITIONS = ("after", "before")


@dataclass
class EquivariantConfig:
    """The optional E(3)-equivariant block (:class:`~mfgnn.nn.equivariant.EquivariantBlock`).

    YAML: ``model: {equivariant: {lmax: 2, channels: 32, layers: 1, position: after}}``.

    Args:
        lmax: largest angular momentum ℓ_max (1–3) of the spherical harmonics and of
            the hidden irreps ``c x 0e + c x 1o + c x 2e + …``.
        channels: multiplicity c of every hidden irrep.
        layers: gated tensor-product layers L (≥ 1) before the invariant read-out.
        position: ``after`` the last interaction block, or ``before`` the first one
            (right after the one-hot species encoding z^0).
        radial_hidden: width of the MLP that maps the sensitivities s^ν(r) to the
            per-edge tensor-product weights.
        avg_neighbors: n̄ in the 1/√n̄ normalisation of the neighbour sums.
    """

    lmax: int = 2
    channels: int = 32
    layers: int = 1
    position: str = "after"
    radial_hidden: int = 32
    avg_neighbors: float = 16.0

    def __post_init__(self) -> None:
        where = "model.equivariant"
        if isinstance(self.lmax, bool) or not isinstance(self.lmax, int) or not 1 <= self.lmax <= 3:
            raise ConfigError(f"{where}.lmax must be 1, 2 or 3, got {self.lmax!r}")
        for name in ("channels", "layers", "radial_hidden"):
            _check_int(self, name, minimum=1, where=where)
        value = self.avg_neighbors
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ConfigError(f"{where}.avg_neighbors must be a number > 0, got {value!r}")
        self.avg_neighbors = float(value)
        check_choice(self.position, EQUIVARIANT_POSITIONS, where, "position")

    def to_dict(self) -> dict[str, Any]:
        """Plain dictionary of all fields."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "EquivariantConfig":
        """Build from a mapping; unknown keys raise :class:`~mfgnn.errors.ConfigError` naming them."""
        if not isinstance(d, Mapping):
            raise ConfigError(f"model.equivariant must be a mapping (or null), got {d!r}")
        return build_section(cls, d, "model.equivariant")


@dataclass
class HIPNNConfig:
    """Architecture of :class:`~mfgnn.nn.MultiFidelityHIPNN`.

    Args:
        n_features: width ``n_features`` of the atomic feature vectors z_{i,a} after
            every interaction and atom layer.
        n_interactions: number of interaction blocks N; the model has N + 1 hierarchical
            energy terms E^n_i, n = 0..N (n = 0 from the one-hot species encoding).
        n_atom_layers: atom layers (Eq. 7) after the interaction layer of each block.
        n_sensitivities: number ν_max of sensitivity functions s^ν(r).
        cutoff: hard cutoff r_c in Å; s^ν(r) = 0 for r ≥ r_c.
        soft_min: inner soft distance in Å (largest inverse-distance centre 1/μ_ν).
        soft_max: outer soft distance in Å (smallest inverse-distance centre).
        tensor_order: HIP-NN-TS tensor sensitivity ℓ_max: 0 (scalar, original HIP-NN),
            1 (+ dipole-like) or 2 (+ quadrupole-like information).
        residual: residual connections z' = z + f(...) wherever input and output widths
            match.
        activation: non-linearity f: ``shifted_softplus`` (softplus(x) − ln 2, the
            default), ``softplus``, ``silu`` or ``tanh``. With residual connections plain
            softplus only adds positive terms, so features drift upwards block after block;
            on H2CO CCSD(T)-F12 energies (1000 structures, 77 epochs) it reached 23.8 meV /
            537 meV/Å against 12.4 meV / 275 meV/Å with ``shifted_softplus``.
        heads: parameterisation of the fidelity-specific energy heads: ``independent``
            (the paper), ``delta`` (E_t = E_{t−1} + ΔE_t) or ``tethered`` (independent
            heads with a penalty on w^n_t − w^n_{t−1}).
        head_penalty: weight λ of :meth:`~mfgnn.nn.MultiFidelityHIPNN.head_regularization`
            (delta and tethered modes).
        n_tensor_channels: number of channels c the ℓ ≥ 1 environments are contracted to
            before their squared norms are taken (tensor_order > 0 only).
        equivariant: optional E(3)-equivariant block (:class:`EquivariantConfig`, or a
            mapping of its fields); None (default) for the plain HIP-NN(-TS) trunk.
        scale_targets: learn each fidelity's energy in units of a scale fitted on the
            training labels: E_t = Σ_a ε_t(Z_a) + N μ_t + σ_t Ê_t, with μ_t the mean
            per-atom residual energy and σ_t the RMS force component (eV/Å × 1 Å, so
            forces come out as σ_t · (−∂Ê_t/∂x)); the loss then weighs each fidelity's
            errors in units of σ_t (see :mod:`mfgnn.nn.normalization`).
        zbl: add the screened-nuclear (ZBL) pair repulsion to every fidelity's energy
            below ``zbl_outer`` Å, switched off smoothly from ``zbl_inner`` Å (see
            :mod:`mfgnn.nn.zbl`).

    ``soft_min`` and ``soft_max`` may be ``"auto"`` in a run configuration: training then
    chooses them from the training set's pair distances
    (:func:`mfgnn.data.distances.auto_sensitivity_range`); a model is always built
    with numbers.
    """

    n_features: int = 64
    n_interactions: int = 2
    n_atom_layers: int = 3
    n_sensitivities: int = 20
    cutoff: float = 6.5
    soft_min: float = 0.75
    soft_max: float = 5.5
    tensor_order: int = 0
    residual: bool = True
    activation: str = DEFAULT_ACTIVATION
    heads: str = "independent"
    head_penalty: float = 1.0e-3
    n_tensor_channels: int = 32
    equivariant: EquivariantConfig | None = None
    scale_targets: bool = False
    zbl: bool = False
    zbl_inner: float = 0.5
    zbl_outer: float = 0.8

    def __post_init__(self) -> None:
        if self.equivariant is not None and not isinstance(self.equivariant, EquivariantConfig):
            self.equivariant = EquivariantConfig.from_dict(self.equivariant)
        for name in ("n_features", "n_sensitivities", "n_tensor_channels"):
            _check_int(self, name, minimum=1)
        for name in ("n_interactions", "n_atom_layers"):
            _check_int(self, name, minimum=0)
        for name in ("cutoff", "soft_min", "soft_max", "head_penalty", "zbl_inner", "zbl_outer"):
            value = getattr(self, name)
            if name in ("soft_min", "soft_max") and value == "auto":
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"model.{name} must be a number, got {value!r}")
            setattr(self, name, float(value))
        for name in ("scale_targets", "zbl"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"model.{name} must be true or false, got {getattr(self, name)!r}")
        if not 0.0 < self.zbl_inner < self.zbl_outer <= self.cutoff:
            raise ConfigError("model distances must satisfy 0 < zbl_inner < zbl_outer <= cutoff, "
                              f"got zbl_inner={self.zbl_inner}, zbl_outer={self.zbl_outer}")
        if not self.auto_range and not 0.0 < self.soft_min < self.soft_max <= self.cutoff:
            raise ConfigError(
                "model distances must satisfy 0 < soft_min < soft_max <= cutoff, got "
                f"soft_min={self.soft_min}, soft_max={self.soft_max}, cutoff={self.cutoff}"
            )
        if self.head_penalty < 0:
            raise ConfigError(f"model.head_penalty must be >= 0, got {self.head_penalty}")
        if self.tensor_order not in (0, 1, 2) or isinstance(self.tensor_order, bool):
            raise ConfigError(f"model.tensor_order must be 0, 1 or 2, got {self.tensor_order!r}")
        check_choice(self.activation, ACTIVATIONS, "model", "activation")
        check_choice(self.heads, HEAD_MODES, "model", "heads")
        if not isinstance(self.residual, bool):
            raise ConfigError(f"model.residual must be true or false, got {self.residual!r}")

    @property
    def auto_range(self) -> bool:
        """Whether soft_min or soft_max is still ``"auto"`` (to be chosen from data)."""
        return "auto" in (self.soft_min, self.soft_max)

    def to_dict(self) -> dict[str, Any]:
        """Plain (JSON/YAML-serialisable) dictionary of all fields."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "HIPNNConfig":
        """Build from a mapping; unknown keys raise :class:`~mfgnn.errors.ConfigError`."""
        return build_section(cls, d, "model")


def _check_int(cfg: Any, name: str, minimum: int, where: str = "model") -> None:
    value = getattr(cfg, name)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{where}.{name} must be an integer >= {minimum}, got {value!r}")
