"""What the file readers (npz, ANI HDF5, extxyz) share: the check that a data file exists
and is not empty, made before a reader opens it, and the number format of provenance notes.

One check gives one wording for every format::

    npz data file not found: /data/missing.npz
    /data/empty.h5: the ANI HDF5 file is empty
"""

from __future__ import annotations

from pathlib import Path

from ..errors import DataError


def check_readable_file(path: str | Path, what: str) -> Path:
    """``path`` as a Path, once it is known to name an existing, non-empty regular file.

    Args:
        path: the data file.
        what: the kind of file, for the message (``"npz"``, ``"ANI HDF5"``, ``"extxyz"``).

    Raises:
        DataError: the file is missing, is not a regular file (e.g. a folder) or is empty;
            the message names the file and the kind.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{what} data file not found: {path}")
    if not path.is_file():
        raise DataError(f"{path}: not a regular file (expected the {what} data file)")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: the {what} file is empty")
    return path


def fmt_factor(x: float) -> str:
    """A conversion factor as written in provenance notes (15 significant digits)."""
    return f"{x:.15g}"
