"""Every file the package writes goes through here: write to a temporary file in the
target folder, fsync, rename, fsync the folder.

A reader never sees a half-written spec, split, summary, metrics, checkpoint or model
file, and an interrupted write leaves the previous version (or nothing) in place.
JSON has one policy for non-finite numbers: NaN and ±inf are written as ``null``
(strict JSON has no NaN), so every file parses with any reader.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


#: Permissions of files written here: like ``open()`` would give (0o666 minus the umask).
_FILE_MODE = 0o666 & ~_umask()


def write_atomic(path: str | Path, write: Callable[[IO[bytes]], None]) -> Path:
    """Call ``write(fh)`` on a temporary binary file beside ``path``, fsync it, rename it
    onto ``path`` and fsync the folder. If anything fails (disk full, a crash), ``path``
    keeps its previous content and the temporary file is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(path.parent)
    return path


def _fsync_dir(folder: Path) -> None:
    """Make a rename durable (POSIX: fsync the folder); best effort elsewhere."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write UTF-8 text atomically."""
    return write_atomic(path, lambda fh: fh.write(text.encode("utf-8")))


def finite_or_none(obj: Any) -> Any:
    """``obj`` with every non-finite float (NaN, ±inf) replaced by None, recursively
    through dicts, lists and tuples; numpy scalars become Python numbers."""
    if isinstance(obj, dict):
        return {k: finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_or_none(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_json_atomic(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` as indented UTF-8 JSON atomically; NaN and ±inf become ``null``."""
    text = json.dumps(finite_or_none(obj), indent=2, allow_nan=False) + "\n"
    return write_text_atomic(path, text)


def write_torch_atomic(path: str | Path, obj: Any) -> Path:
    """``torch.save(obj)`` atomically."""
    return write_atomic(path, lambda fh: torch.save(obj, fh))


def savez_atomic(path: str | Path, compressed: bool = True, **arrays: np.ndarray) -> Path:
    """``np.savez_compressed`` (or ``np.savez``) atomically; ``path`` should end in .npz."""
    save = np.savez_compressed if compressed else np.savez
    return write_atomic(path, lambda fh: save(fh, **arrays))


def remove_stale_temporaries(folder: str | Path, names) -> list[Path]:
    """Delete the temporary files that writes of ``names`` in ``folder`` left behind when
    the process was killed mid-write (the files they were to replace are intact)."""
    removed = []
    for path in Path(folder).glob(".*.tmp"):
        if any(path.name[1:].startswith(f"{name}.") for name in names):
            try:
                path.unlink()
                removed.append(path)
            except OSError:
                pass
    return removed
