"""DatasetBlock: the levels of one dataset, a contiguous block of rows of a
:class:`~mfgnn.data.dataset.MultiFidelityDataset`.

A block holds the :class:`~mfgnn.data.frames.Frames` of one dataset (one per file, already
checked to hold the same geometries row by row) and which fidelity each provides. The
multi-fidelity dataset concatenates blocks: block b holds rows ``offsets[b]`` to
``offsets[b + 1] - 1``. Nothing is copied: items are read from the block's frames (lazily
for ANI HDF5 files).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .frames import Frames

#: Row indices: a sequence of ints or an integer array.
Rows = Sequence[int] | np.ndarray


@dataclass
class DatasetBlock:
    """One dataset: a name and its levels, (frames, fidelity name) pairs, lowest first.

    The first frames provide the geometries; every frames object must hold the same
    number of rows (checked) and the same geometries (checked by the loader with
    :func:`~mfgnn.data.frames.check_same_geometries`).
    """

    name: str
    levels: list[tuple[Frames, str]]

    def __post_init__(self) -> None:
        self.levels = list(self.levels)
        if not self.levels:
            raise ValueError(f"dataset {self.name!r} needs at least one fidelity")
        names = [fid for _, fid in self.levels]
        if len(set(names)) != len(names):
            raise ValueError(f"dataset {self.name!r} lists a fidelity twice: {names}")
        n = self.frames.n
        for frames, fid in self.levels:
            if frames.n != n:
                raise ValueError(f"dataset {self.name!r}: fidelity {fid!r} has {frames.n} rows, "
                                 f"the geometries {n}")

    @property
    def frames(self) -> Frames:
        """The frames that provide the geometries (the first level's)."""
        return self.levels[0][0]

    @property
    def n(self) -> int:
        """Number of rows."""
        return self.frames.n

    @property
    def fidelities(self) -> tuple[str, ...]:
        """Fidelity names of this dataset, lowest level first."""
        return tuple(fid for _, fid in self.levels)

    def close(self) -> None:
        """Close the open file handles of lazy frames (reopened on demand)."""
        for frames, _ in self.levels:
            close = getattr(frames, "close", None)
            if close is not None:
                close()


def block_offsets(blocks: Sequence[DatasetBlock]) -> np.ndarray:
    """(B + 1,) int64 first row of each block, then the total number of rows."""
    return np.concatenate([[0], np.cumsum([b.n for b in blocks])]).astype(np.int64)


def group_rows(dataset_index: np.ndarray, offsets: np.ndarray, rows: Rows):
    """Yield (block b, positions in ``rows``, rows local to block b) for each block that
    ``rows`` (dataset rows, any order) touch."""
    rows = np.asarray(rows, dtype=np.int64).reshape(-1)
    blocks = dataset_index[rows]
    for b in np.unique(blocks):
        where = np.flatnonzero(blocks == b)
        yield int(b), where, rows[where] - offsets[b]
