"""Self-describing model files (``model.pt``): writing, reading, checking.

A model file is a ``torch.save`` mapping::

    {"format": "mfgnn-model", "format_version": 1, "mfgnn_version": "0.1.0",
     "hparams": {"kind": "hipnn" | "delta", ...},   # rebuilds the network (see below)
     "state_dict": {...},
     "state_sha256": "...",       # checksum of the weights (state_digest)
     "metadata": {"fidelities": [...], "elements": [...], "units": {...},
                  "self_energies": {fidelity: {Z: eV}}, "trained_labels": {...},
                  "forces_trained": [...], "mfgnn_version": ..., "format_version": ..., ...}}

Two kinds of model share the format: ``"hipnn"`` (a
:class:`~mfgnn.nn.MultiFidelityHIPNN`, ``hparams`` = its ``hparams()``) and ``"delta"``
(a :class:`~mfgnn.nn.delta_model.DeltaLearningModel`: ``hparams`` = ``{"kind": "delta",
"low": {...}, "correction": {...}}``, the state dict holds ``low.*`` and
``correction.*``). Files without ``kind`` (written before kinds existed) are ``hipnn``;
the format version stays 1, and the checksum covers the whole state dict of either kind.
:func:`load_model` returns the model of the file's kind.

Loading checks the format, the version and the weights' checksum and fails with a
:class:`CheckpointError` that says what was found (both versions, or what is corrupt).
The file is written atomically (:mod:`mfgnn.fileio`), so a crash never leaves a
half-written model in place.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch

from . import __version__
from .fileio import write_torch_atomic
from .errors import CheckpointError, MfgnnError
from .nn import MultiFidelityHIPNN
from .nn.delta_model import KIND_DELTA, KIND_HIPNN, DeltaLearningModel, model_from_hparams

MODEL_FORMAT = "mfgnn-model"
MODEL_FORMAT_VERSION = 1

UNITS = {"energy": "eV", "length": "Angstrom", "forces": "eV/Angstrom"}

#: Model kinds this version reads (``hparams["kind"]``; absent = ``hipnn``).
MODEL_KINDS = (KIND_HIPNN, KIND_DELTA)

AnyModel = MultiFidelityHIPNN | DeltaLearningModel


def model_kind(model: AnyModel) -> str:
    """``"delta"`` for a :class:`DeltaLearningModel`, else ``"hipnn"``."""
    return getattr(model, "kind", KIND_HIPNN)


def model_hparams(model: AnyModel) -> dict[str, Any]:
    """``model.hparams()`` with its ``kind``."""
    hparams = dict(model.hparams())
    hparams.setdefault("kind", model_kind(model))
    return hparams


def model_metadata(model: AnyModel, trained_labels: dict[str, list[str]],
                   extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The metadata block of a model file."""
    se = model.self_energies.detach().cpu().double()
    meta = {
        "fidelities": list(model.fidelities),
        "elements": [int(z) for z in model.elements],
        "units": dict(UNITS),
        "self_energies": {
            fid: {str(z): float(se[t, k]) for k, z in enumerate(model.elements)}
            for t, fid in enumerate(model.fidelities)
        },
        "trained_labels": {f: list(trained_labels.get(f, [])) for f in model.fidelities},
        "forces_trained": [f for f in model.fidelities if "forces" in trained_labels.get(f, [])],
        "cutoff": float(model.config.cutoff),
        "heads": model.config.heads,
        "kind": model_kind(model),
        "mfgnn_version": __version__,
        "format_version": MODEL_FORMAT_VERSION,
    }
    if extra:
        meta.update(extra)
    return meta


def brief(exc: BaseException, lines: int = 2, width: int = 300) -> str:
    """``Type: message`` of an exception on one line (torch's state-dict errors list every
    mismatch on its own line): the first ``lines`` lines, at most ``width`` characters."""
    parts = [x.strip() for x in str(exc).splitlines() if x.strip()]
    text = " ".join(parts[:lines])
    if len(parts) > lines:
        text += f" ... ({len(parts) - lines} more lines)"
    if len(text) > width:
        text = text[: width - 3] + "..."
    return f"{type(exc).__name__}: {text}"


def state_digest(state_dict: dict[str, torch.Tensor]) -> str:
    """SHA-256 over the names, dtypes, shapes and bytes of a state dict's tensors: a model
    file whose weights were damaged on disk fails to load instead of predicting garbage
    (torch.load does not check the data of the archive it reads)."""
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        t = state_dict[name].detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def save_model(path: str | Path, model: AnyModel,
               trained_labels: dict[str, list[str]],
               extra_metadata: dict[str, Any] | None = None) -> None:
    """Write ``model`` (either kind) to ``path`` atomically, with everything needed to
    use it alone."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    payload = {
        "format": MODEL_FORMAT,
        "format_version": MODEL_FORMAT_VERSION,
        "mfgnn_version": __version__,
        "hparams": model_hparams(model),
        "state_dict": state,
        "state_sha256": state_digest(state),
        "metadata": model_metadata(model, trained_labels, extra_metadata),
    }
    write_torch_atomic(path, payload)


def read_model_file(path: str | Path) -> dict[str, Any]:
    """Read and validate a model file's mapping (no model is built)."""
    path = Path(path)
    if path.is_dir():
        path = path / "model.pt"
    if not path.is_file():
        raise CheckpointError(f"{path}: model file not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt or truncated file: torch raises many kinds
        raise CheckpointError(f"{path}: not a readable model file ({brief(exc)}); truncated "
                              "or corrupt?") from None
    if not isinstance(payload, dict) or payload.get("format") != MODEL_FORMAT:
        raise CheckpointError(f"{path}: not an mfgnn model file")
    version = payload.get("format_version")
    if version != MODEL_FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: model file format version {version!r} (written by mfgnn "
            f"{payload.get('mfgnn_version', '?')}), this mfgnn ({__version__}) reads version "
            f"{MODEL_FORMAT_VERSION}"
        )
    missing = [k for k in ("hparams", "state_dict", "metadata") if not isinstance(payload.get(k), dict)]
    if missing:
        raise CheckpointError(f"{path}: model file lacks {', '.join(missing)}; corrupt or "
                              "not written by mfgnn.model_file.save_model")
    expected = payload.get("state_sha256")
    if expected is not None:  # files written before the checksum was added have none
        try:
            found = state_digest(payload["state_dict"])
        except Exception as exc:
            raise CheckpointError(f"{path}: unreadable weights ({exc}); the file is corrupt") from None
        if found != expected:
            raise CheckpointError(f"{path}: the weights do not match their checksum (sha256 "
                                  f"{found[:12]}..., recorded {str(expected)[:12]}...); the file "
                                  "is corrupt")
    kind = payload["hparams"].get("kind", KIND_HIPNN)
    if kind not in MODEL_KINDS:
        raise CheckpointError(f"{path}: model kind {kind!r} (written by mfgnn "
                              f"{payload.get('mfgnn_version', '?')}); this mfgnn ({__version__}) "
                              f"reads the kinds {', '.join(MODEL_KINDS)}")
    return payload


def load_model(path: str | Path, device: str | torch.device = "cpu",
               dtype: torch.dtype | None = None) -> AnyModel:
    """Load a saved model, ready for inference (eval mode): a
    :class:`~mfgnn.nn.MultiFidelityHIPNN`, or a
    :class:`~mfgnn.nn.delta_model.DeltaLearningModel` for a file of kind ``delta``.

    Args:
        path: a ``model.pt`` file or a run folder that holds one.
        device: where to put the model.
        dtype: parameter dtype (e.g. ``torch.float64`` for finite-difference checks or
            long MD); default keeps the saved one.

    The file's metadata is kept as ``model.metadata``.
    """
    payload = read_model_file(path)
    path = Path(path) / "model.pt" if Path(path).is_dir() else Path(path)
    try:
        model = model_from_hparams(payload["hparams"])
        model.load_state_dict(payload["state_dict"])
    except (MfgnnError, KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: the model file's hyper-parameters and weights do not "
                              f"fit together ({brief(exc)})") from None
    model.metadata = payload["metadata"]
    if dtype is not None:
        model = model.to(dtype)
    return model.to(device).eval()
