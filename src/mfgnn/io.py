"""Self-describing model files (``model.pt``) and atomic file writes.

A model file is a ``torch.save`` mapping::

    {"format": "mfgnn-model", "format_version": 1, "mfgnn_version": "0.1.0",
     "hparams": {...},            # MultiFidelityHIPNN.from_hparams rebuilds the network
     "state_dict": {...},
     "metadata": {"fidelities": [...], "elements": [...], "units": {...},
                  "self_energies": {fidelity: {Z: eV}}, "trained_labels": {...}, ...}}

Loading checks the format and version and fails with a :class:`CheckpointError` that
says what was found.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from . import __version__
from .errors import CheckpointError
from .nn import MultiFidelityHIPNN

MODEL_FORMAT = "mfgnn-model"
MODEL_FORMAT_VERSION = 1

UNITS = {"energy": "eV", "length": "Angstrom", "forces": "eV/Angstrom"}


def atomic_write(path: str | Path, write) -> None:
    """Write a file all or nothing: ``write(fileobj)`` into a temporary file in the same
    folder, flush and fsync it, then rename it over ``path``.

    If anything fails (disk full, a crash), ``path`` keeps its previous content and the
    temporary file is removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` through :func:`atomic_write`."""
    atomic_write(path, lambda handle: torch.save(obj, handle))


def atomic_json_dump(obj: Any, path: str | Path) -> None:
    """JSON (indented, UTF-8) through :func:`atomic_write`."""
    text = json.dumps(obj, indent=2, sort_keys=False) + "\n"
    atomic_write(path, lambda handle: handle.write(text.encode()))


def model_metadata(model: MultiFidelityHIPNN, trained_labels: dict[str, list[str]],
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
        "cutoff": float(model.config.cutoff),
        "heads": model.config.heads,
    }
    if extra:
        meta.update(extra)
    return meta


def save_model(path: str | Path, model: MultiFidelityHIPNN,
               trained_labels: dict[str, list[str]],
               extra_metadata: dict[str, Any] | None = None) -> None:
    """Write ``model`` to ``path`` atomically, with everything needed to use it alone."""
    payload = {
        "format": MODEL_FORMAT,
        "format_version": MODEL_FORMAT_VERSION,
        "mfgnn_version": __version__,
        "hparams": model.hparams(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "metadata": model_metadata(model, trained_labels, extra_metadata),
    }
    atomic_torch_save(payload, path)


def read_model_file(path: str | Path) -> dict[str, Any]:
    """Read and validate a model file's mapping (no model is built)."""
    path = Path(path)
    if path.is_dir():
        path = path / "model.pt"
    if not path.is_file():
        raise CheckpointError(f"{path}: model file not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # corrupt or truncated file: torch raises many kinds
        raise CheckpointError(f"{path}: not a readable model file ({exc})") from None
    if not isinstance(payload, dict) or payload.get("format") != MODEL_FORMAT:
        raise CheckpointError(f"{path}: not an mfgnn model file")
    version = payload.get("format_version")
    if version != MODEL_FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: model file format version {version!r}, this mfgnn "
            f"({__version__}) reads version {MODEL_FORMAT_VERSION}"
        )
    return payload


def load_model(path: str | Path, device: str | torch.device = "cpu",
               dtype: torch.dtype | None = None) -> MultiFidelityHIPNN:
    """Load a saved model, ready for inference (eval mode).

    Args:
        path: a ``model.pt`` file or a run folder that holds one.
        device: where to put the model.
        dtype: parameter dtype (e.g. ``torch.float64`` for finite-difference checks or
            long MD); default keeps the saved one.

    The file's metadata is kept as ``model.metadata``.
    """
    payload = read_model_file(path)
    model = MultiFidelityHIPNN.from_hparams(payload["hparams"])
    model.load_state_dict(payload["state_dict"])
    model.metadata = payload["metadata"]
    if dtype is not None:
        model = model.to(dtype)
    return model.to(device).eval()
