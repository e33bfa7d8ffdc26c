"""Atomic file writes: write to a temporary file in the target folder, then rename.

A reader never sees a half-written spec, split, summary or data file, and an interrupted
write leaves the previous version (or nothing) in place.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np


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


def write_json_atomic(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` as indented JSON atomically (NaN is not allowed: use None)."""
    text = json.dumps(obj, indent=2, allow_nan=False) + "\n"
    return write_text_atomic(path, text)


def savez_atomic(path: str | Path, compressed: bool = True, **arrays: np.ndarray) -> Path:
    """``np.savez_compressed`` (or ``np.savez``) atomically; ``path`` should end in .npz."""
    save = np.savez_compressed if compressed else np.savez
    return write_atomic(path, lambda fh: save(fh, **arrays))
