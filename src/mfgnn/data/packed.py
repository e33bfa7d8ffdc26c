"""PackedDataset: a dataset packed by ``mfgnn data pack``, read through memory maps.

A pack is a folder of flat arrays (``.npy``, opened with ``mmap_mode="r"``) plus
``meta.json``; the operating system's page cache holds the data, not Python objects, so a
process reading a 4.9 M-structure pack keeps only per-row tables (offsets, atom counts)
in memory. Layout (ΣN = total atoms, n = structures, F = fidelities)::

    z.npy              (ΣN,)       uint8    atomic numbers
    pos.npy            (ΣN, 3)     float32  positions, Å
    offsets.npy        (n + 1,)    int64    first atom of each structure, then ΣN
    energy.npy         (n, F)      float64  eV, NaN = missing
    forces.npy         (ΣN, F, 3)  float32  eV/Å, NaN = missing
    has_forces.npy     (n, F)      bool     the row has forces at that fidelity
    dataset_index.npy  (n,)        int16    dataset of each row (index into meta "datasets")
    meta.json          written last: format, version, fidelities, datasets, elements,
                       counts, units, source fingerprints, rows_complete

A folder without a complete ``meta.json`` (an interrupted pack) is never opened.
Items are the same ``torch_geometric.data.Data`` as
:class:`~mfgnn.data.dataset.MultiFidelityDataset` gives, and the dataset has the
attributes and methods training code uses (``fidelities``, ``energies``,
``has_force_rows``, ``n_atoms``, ``element_counts_of``, ``force_rms``, ``subset``...).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset
from torch_geometric.data import Data

from ..errors import DataError
from .blocks import Rows
from .dataset import DatasetSubset, checked_row
from .frames import counts_by_row
from .transforms import GraphTransform, RadiusGraph

#: ``meta.json`` "format" of a pack, and the version this code reads and writes.
FORMAT = "mfgnn-packed"
VERSION = 1
META = "meta.json"
#: Rows handled at once by the streamed statistics (element counts, force RMS).
STAT_ROWS = 16384
#: Bytes hashed at each end of a source file for its fingerprint.
FINGERPRINT_BYTES = 1 << 20


def fingerprint(path: str | os.PathLike) -> dict:
    """Cheap identity of a file: path, size, mtime and the SHA-256 of its first and last
    MiB (of the whole file when it is smaller than 2 MiB)."""
    path = Path(path)
    st = path.stat()
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        h.update(fh.read(FINGERPRINT_BYTES))
        if st.st_size > FINGERPRINT_BYTES:
            fh.seek(max(FINGERPRINT_BYTES, st.st_size - FINGERPRINT_BYTES))
            h.update(fh.read(FINGERPRINT_BYTES))
    return {"path": str(path), "size": int(st.st_size), "mtime": float(st.st_mtime),
            "sha256_head_tail": h.hexdigest()}


def source_fingerprints(spec) -> list[dict]:
    """Fingerprints of the files of a :class:`~mfgnn.data.spec.DatasetSpec`, each once,
    in spec order (DataError naming a missing file)."""
    paths = list(dict.fromkeys(str(f.path) for f in spec.fidelities))
    for p in paths:
        if not Path(p).is_file():
            raise DataError(f"{p}: source file of the dataset spec not found")
    return [fingerprint(p) for p in paths]


def fingerprint_changes(old: dict, new: dict) -> str:
    """What differs between two fingerprints of a file ("" when nothing)."""
    diff = [k for k in ("size", "mtime", "sha256_head_tail") if old.get(k) != new.get(k)]
    if not diff:
        return ""
    return (f"{', '.join(diff)} differ{'s' if len(diff) == 1 else ''}: recorded size "
            f"{old.get('size')} B, mtime {old.get('mtime')}; now {new.get('size')} B, "
            f"mtime {new.get('mtime')}")


def array_layout(n: int, n_atoms: int, n_fid: int) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Array name -> (dtype, shape) of a pack of ``n`` structures, ``n_atoms`` atoms in
    all and ``n_fid`` fidelities."""
    return {
        "z": ("uint8", (n_atoms,)),
        "pos": ("float32", (n_atoms, 3)),
        "offsets": ("int64", (n + 1,)),
        "energy": ("float64", (n, n_fid)),
        "forces": ("float32", (n_atoms, n_fid, 3)),
        "has_forces": ("bool", (n, n_fid)),
        "dataset_index": ("int16", (n,)),
    }


def is_packed(path: str | os.PathLike) -> bool:
    """``path`` is a folder holding a pack's ``meta.json`` (not checked further)."""
    path = Path(path)
    return path.is_dir() and (path / META).is_file()


def read_meta(path: str | os.PathLike) -> dict[str, Any]:
    """The checked ``meta.json`` of a finished pack.

    Raises:
        DataError: naming the folder or file when it is not a finished pack of a version
            this code reads.
    """
    path = Path(path)
    if not path.is_dir():
        raise DataError(f"{path}: no such packed dataset folder")
    file = path / META
    if not file.is_file():
        partial = " (an interrupted `mfgnn data pack`: rerun it to finish)" if (
            any(path.glob("*.npy")) or path.name.endswith(".partial")) else ""
        raise DataError(f"{path}: not a finished packed dataset: {META} is missing{partial}")
    try:
        meta = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{file}: unreadable pack metadata ({exc})") from None
    found = meta.get("format") if isinstance(meta, dict) else None
    if found != FORMAT:
        raise DataError(f"{file}: field 'format' is {found!r}, expected {FORMAT!r}")
    if meta.get("version") != VERSION:
        raise DataError(f"{file}: field 'version' is {meta.get('version')!r}; this mfgnn reads "
                        f"version {VERSION} (repack with `mfgnn data pack`)")
    for key in ("fidelities", "datasets", "elements", "n_structures", "n_atoms",
                "rows_complete", "has_forces"):
        if key not in meta:
            raise DataError(f"{file}: field {key!r} is missing")
    if meta["rows_complete"] != meta["n_structures"]:
        raise DataError(f"{file}: field 'rows_complete' is {meta['rows_complete']} of "
                        f"{meta['n_structures']} rows; the pack is not finished")
    return meta


def open_arrays(path: Path, meta: dict[str, Any]) -> dict[str, np.ndarray]:
    """The pack's arrays as read-only memory maps, each checked against ``meta``."""
    layout = array_layout(int(meta["n_structures"]), int(meta["n_atoms"]),
                          len(meta["fidelities"]))
    out = {}
    for name, (dtype, shape) in layout.items():
        file = path / f"{name}.npy"
        try:
            arr = np.load(file, mmap_mode="r")
        except (OSError, ValueError) as exc:
            raise DataError(f"{file}: cannot open array {name!r} ({exc})") from None
        if arr.dtype != np.dtype(dtype) or arr.shape != shape:
            raise DataError(f"{file}: array {name!r} is {arr.dtype} {arr.shape}, {META} "
                            f"says {dtype} {shape}")
        out[name] = arr
    return out


def atom_index(offsets: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(atom indices of ``rows`` concatenated, (len(rows) + 1,) local offsets)."""
    start = np.asarray(offsets[rows], dtype=np.int64)
    count = np.asarray(offsets[rows + 1], dtype=np.int64) - start
    ptr = np.concatenate([[0], np.cumsum(count)]).astype(np.int64)
    idx = np.arange(int(ptr[-1]), dtype=np.int64) + np.repeat(start - ptr[:-1], count)
    return idx, ptr


class PackedDataset(Dataset):
    """A packed dataset (see the module docstring), items as PyG ``Data``.

    Args:
        path: the folder ``mfgnn data pack`` wrote.
        cutoff: radius (Å) of the graph each item gets as ``edge_index``
            (:class:`~mfgnn.data.transforms.RadiusGraph`); None: no edges.
        graph: another graph step instead of ``cutoff`` (a callable ``Data -> Data``).

    Attributes (as :class:`~mfgnn.data.dataset.MultiFidelityDataset`):
        fidelities, has_forces, elements, names, provenance, graph, cutoff, spec (None),
        energies ((n, F) float64 memory map), has_force_rows ((n, F) bool memory map),
        n_atoms ((n,) int64), dataset_index ((n,) int64), meta (the ``meta.json``),
        path.

    Raises:
        DataError: not a finished pack (no or incomplete ``meta.json``), or arrays that
            do not match it.
    """

    def __init__(self, path: str | os.PathLike, cutoff: float | None = None,
                 graph: GraphTransform | None = None) -> None:
        if cutoff is not None and graph is not None:
            raise ValueError("give cutoff or graph, not both")
        self.path = Path(path)
        self.meta = read_meta(self.path)
        self.fidelities: tuple[str, ...] = tuple(self.meta["fidelities"])
        self.has_forces: dict[str, bool] = {f: bool(self.meta["has_forces"].get(f, False))
                                            for f in self.fidelities}
        self.elements: tuple[int, ...] = tuple(int(e) for e in self.meta["elements"])
        self.names: tuple[str, ...] = tuple(self.meta["datasets"])
        self.provenance: list[str] = list(self.meta.get("provenance", []))
        self.provenance.append(f"read from the packed dataset {self.path}")
        self.graph = RadiusGraph(cutoff) if cutoff is not None else graph
        value = getattr(self.graph, "cutoff", None)
        self.cutoff: float | None = None if value is None else float(value)
        self.spec = None
        self._arrays: dict[str, np.ndarray] | None = None
        offsets = np.asarray(self._arr("offsets"))
        if offsets[0] != 0 or offsets[-1] != int(self.meta["n_atoms"]) or (
                np.diff(offsets) <= 0).any():
            raise DataError(f"{self.path / 'offsets.npy'}: offsets must rise from 0 to "
                            f"{self.meta['n_atoms']} (n_atoms of {META})")
        self.n_atoms: np.ndarray = np.diff(offsets).astype(np.int64)
        self.dataset_index: np.ndarray = np.asarray(self._arr("dataset_index"), dtype=np.int64)
        self._counts: np.ndarray | None = None

    # -- arrays (opened per process, never pickled) ----------------------------------------
    def _arr(self, name: str) -> np.ndarray:
        if self._arrays is None:
            self._arrays = open_arrays(self.path, self.meta)
        return self._arrays[name]

    @property
    def energies(self) -> np.ndarray:
        """(n, F) float64 eV, NaN = missing (read-only memory map)."""
        return self._arr("energy")

    @property
    def has_force_rows(self) -> np.ndarray:
        """(n, F) bool: the row has forces at that fidelity (read-only memory map)."""
        return self._arr("has_forces")

    def close(self) -> None:
        """Drop the memory maps (reopened on the next read)."""
        self._arrays = None

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_arrays"] = None  # workers map the files themselves; never copy the data
        return state

    # -- items ---------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.n_atoms)

    def _row(self, i: int) -> int:
        return checked_row(i, len(self))

    def __getitem__(self, i: int) -> Data:
        i = self._row(i)
        offsets = self._arr("offsets")
        a, b = int(offsets[i]), int(offsets[i + 1])
        data = Data(
            z=torch.from_numpy(self._arr("z")[a:b].astype(np.int64)),
            pos=torch.from_numpy(np.array(self._arr("pos")[a:b], dtype=np.float32)),
            energy=torch.from_numpy(np.array(self._arr("energy")[i:i + 1], dtype=np.float64)),
            forces=torch.from_numpy(np.array(self._arr("forces")[a:b], dtype=np.float32)),
            idx=torch.tensor([i], dtype=torch.long),
            dataset=torch.tensor([int(self.dataset_index[i])], dtype=torch.long),
        )
        return data if self.graph is None else self.graph(data)

    def geometry(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Atomic numbers (N,) int64 and positions (N, 3) float64 Å of row ``i``."""
        i = self._row(i)
        offsets = self._arr("offsets")
        a, b = int(offsets[i]), int(offsets[i + 1])
        return (self._arr("z")[a:b].astype(np.int64),
                np.asarray(self._arr("pos")[a:b], dtype=np.float64))

    def source_changes(self) -> list[str]:
        """The recorded source files that are missing or changed since packing (cheap:
        size, mtime and 2 MiB hashed per file); [] when all match."""
        out = []
        for old in self.meta.get("sources", []):
            if not Path(old["path"]).is_file():
                out.append(f"{old['path']}: not found")
            elif (diff := fingerprint_changes(old, fingerprint(old["path"]))):
                out.append(f"{old['path']}: {diff}")
        return out

    def rows_of(self, name: str) -> np.ndarray:
        """(n_d,) int64 rows of the dataset called ``name``."""
        if name not in self.names:
            raise KeyError(f"no dataset {name!r}; the datasets are {', '.join(self.names)}")
        return np.flatnonzero(self.dataset_index == self.names.index(name)).astype(np.int64)

    def subset(self, indices: Rows) -> DatasetSubset:
        """A view on some rows (``Data.idx`` keeps the row of this dataset)."""
        return DatasetSubset(self, indices)

    # -- streamed statistics -------------------------------------------------------------
    def _chunks(self, rows: Rows | None, size: int = STAT_ROWS):
        """Yield (positions in ``rows``, sorted rows) chunks of at most ``size`` rows."""
        if rows is None:
            for s in range(0, len(self), size):
                r = np.arange(s, min(s + size, len(self)), dtype=np.int64)
                yield r, r
            return
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        rows = np.where(rows < 0, rows + len(self), rows)
        if rows.size and (rows.min() < 0 or rows.max() >= len(self)):
            raise IndexError(f"rows out of range for a dataset of {len(self)} structures")
        order = np.argsort(rows, kind="stable")  # sorted reads: sequential pages
        for s in range(0, len(rows), size):
            where = order[s:s + size]
            yield where, rows[where]

    def _transient(self) -> dict[str, np.ndarray]:
        """Fresh memory maps for one chunk of a streamed pass: the pages a chunk touches
        leave this process's resident set when the maps are dropped (the persistent maps
        would keep every page read, i.e. the whole file after a full pass)."""
        return open_arrays(self.path, self.meta)

    def element_counts_of(self, rows: Rows) -> np.ndarray:
        """(len(rows), len(elements)) int64 atoms of each element in ``rows``, read in
        chunks from ``z.npy``."""
        if self._counts is not None:
            return self._counts[np.asarray(rows, dtype=np.int64)]
        n_rows = len(np.asarray(rows).reshape(-1))
        out = np.zeros((n_rows, len(self.elements)), dtype=np.int64)
        for where, r in self._chunks(rows):
            maps = self._transient()
            idx, ptr = atom_index(maps["offsets"], r)
            out[where] = counts_by_row(maps["z"][idx].astype(np.int64), ptr, self.elements)
            del maps
        return out

    def element_counts(self) -> np.ndarray:
        """(n, len(elements)) int64 atoms of each element per row (computed once, cached)."""
        if self._counts is None:
            self._counts = self.element_counts_of(np.arange(len(self), dtype=np.int64))
        return self._counts

    def force_rms(self, rows: Rows) -> np.ndarray:
        """(F,) RMS of the labelled force components of each fidelity over ``rows`` (eV/Å;
        NaN for a fidelity without force labels there), streamed in chunks."""
        n_fid = len(self.fidelities)
        sq, count = np.zeros(n_fid), np.zeros(n_fid)
        for _, r in self._chunks(rows, STAT_ROWS // 4):
            maps = self._transient()
            idx, ptr = atom_index(maps["offsets"], r)
            f = np.asarray(maps["forces"][idx], dtype=np.float64)  # (M, F, 3)
            has = np.asarray(maps["has_forces"][r])
            ok = np.repeat(has, np.diff(ptr), axis=0)[:, :, None] & np.isfinite(f)
            sq += np.where(ok, f * f, 0.0).sum(axis=(0, 2))
            count += ok.sum(axis=(0, 2))
            del maps
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(count > 0, np.sqrt(sq / np.maximum(count, 1)), np.nan)

    def geometries(self, rows: Rows) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Atoms of ``rows`` in bulk: (len(rows),) int64 atom counts, (ΣN,) int64 atomic
        numbers and (ΣN, 3) float64 positions in Å, concatenated in the order of
        ``rows`` (read through transient maps: no pages stay resident)."""
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        rows = np.where(rows < 0, rows + len(self), rows)
        if rows.size and (rows.min() < 0 or rows.max() >= len(self)):
            raise IndexError(f"rows out of range for a dataset of {len(self)} structures")
        maps = self._transient()
        idx, ptr = atom_index(maps["offsets"], rows)
        order = np.argsort(idx, kind="stable")  # ascending reads, results in given order
        z = np.empty(len(idx), dtype=np.int64)
        pos = np.empty((len(idx), 3), dtype=np.float64)
        z[order] = maps["z"][idx[order]]
        pos[order] = maps["pos"][idx[order]]
        del maps
        return np.diff(ptr), z, pos

    def __repr__(self) -> str:
        datasets = "" if len(self.names) == 1 else f", datasets={self.names}"
        return (f"PackedDataset({str(self.path)!r}, n={len(self)}, fidelities={self.fidelities}, "
                f"elements={self.elements}{datasets}, graph={self.graph!r})")


def open_dataset(source: str | os.PathLike | dict, cutoff: float | None = None):
    """A :class:`PackedDataset` when ``source`` is a pack folder, else the dataset spec's
    :func:`~mfgnn.data.loading.load_dataset` (what a training setup can call)."""
    if isinstance(source, (str, os.PathLike)) and Path(source).is_dir():
        return PackedDataset(source, cutoff=cutoff)
    from .loading import load_dataset

    return load_dataset(source, cutoff=cutoff)
