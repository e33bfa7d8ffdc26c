"""``mfgnn data pack``: write a dataset spec's rows as flat memory-mappable arrays.

:func:`pack_dataset` loads the spec (lazily for ANI HDF5), walks its rows in chunks and
writes the layout of :mod:`mfgnn.data.packed`, holding no more than a chunk of atoms (plus
the loader's per-row tables). Atomic and resumable: the arrays are pre-allocated at their
final sizes in ``<out>.partial/`` (n and ΣN are known from the index) and the per-row
tables written; each chunk is written in place (``pwrite``) and fsynced, then
``progress.json`` (rows done, source fingerprints, spec) is replaced atomically
(:func:`mfgnn.fileio.write_json_atomic`), so a kill -9 loses at most the chunk in flight
and a rerun continues after the recorded rows. At the end ``meta.json`` is written last
and the folder renamed onto ``<out>``; a folder without it is never opened by
:class:`~mfgnn.data.packed.PackedDataset`. A rerun against a source whose fingerprint
(size, mtime, SHA-256 of the first and last MiB) or a spec that differs from the recorded
one is refused with a :class:`~mfgnn.errors.DataError` naming the file, unless ``force``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..fileio import _fsync_dir, write_json_atomic
from .frames import InMemoryFrames, check_coincident
from .loading import load_dataset
from .packed import (FORMAT, META, VERSION, array_layout, fingerprint_changes,
                     source_fingerprints)
from .spec import DatasetSpec, read_spec

PROGRESS = "progress.json"
#: Testing hook: kill -9 after this many chunks were written (not yet recorded).
KILL_ENV = "MFGNN_PACK_KILL_AFTER_CHUNKS"
_CHUNK_ARRAYS = ("z", "pos", "forces", "has_forces")  # written chunk by chunk
#: Rows checked for coincident atoms at once (bounds the pair buffers).
_CHECK_ROWS = 4096
#: Rows read at once from lazy (HDF5) frames.
_LAZY_ROWS = 256


@dataclass
class PackResult:
    """What :func:`pack_dataset` did: ``out_dir``, ``n`` structures, ``n_atoms`` atoms,
    ``resumed_from`` (rows already done when it started), ``already_done`` (nothing to
    do: a finished pack of the same sources), ``seconds``."""

    out_dir: Path
    n: int
    n_atoms: int
    resumed_from: int = 0
    already_done: bool = False
    seconds: float = 0.0


def _mismatch(record: dict, identity: dict, sources: list[dict], where: Path) -> str | None:
    """Why the pack (or partial pack) recorded in ``record`` is not of these sources."""
    if record.get("identity") != json.loads(json.dumps(identity)):
        return (f"{where} was packed from another dataset spec or format version "
                f"(recorded {json.dumps(record.get('identity', {}).get('spec'))})")
    old = {s["path"]: s for s in record.get("sources", [])}
    for s in sources:
        if s["path"] not in old:
            return f"{where} was not packed from {s['path']}"
        diff = fingerprint_changes(old[s["path"]], s)
        if diff:
            return f"source file {s['path']} changed since {where} was packed ({diff})"
    return None


def _read_json(path: Path) -> dict | None:
    try:
        out = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return out if isinstance(out, dict) else None


def _remove_pack_folder(folder: Path) -> None:
    """Delete a (partial) pack folder; refused when it holds files a pack does not write."""
    names = {f"{a}.npy" for a in array_layout(0, 0, 0)} | {PROGRESS, META}
    if not all(p.name in names or (p.name.startswith(".") and p.name.endswith(".tmp"))
               for p in folder.iterdir()):
        raise DataError(f"{folder}: holds files a pack does not write; not removing it "
                        "(choose another --out or remove it yourself)")
    shutil.rmtree(folder)


def _allocate(partial: Path, layout: dict, tables: dict[str, np.ndarray], start: dict) -> None:
    """Create the pack's arrays at their final sizes, write the per-row ``tables``
    (offsets, energies, dataset index) and record that no chunk is done yet."""
    partial.mkdir(parents=True, exist_ok=False)
    for name, (dtype, shape) in layout.items():
        # the header and the final (sparse) size; the data goes through the writer
        np.lib.format.open_memmap(partial / f"{name}.npy", mode="w+", dtype=dtype, shape=shape)
        writer = _ArrayWriter(partial / f"{name}.npy", dtype, shape)
        if name in tables:
            writer.write(0, tables[name])
        writer.sync()
        writer.close()
    _fsync_dir(partial)
    write_json_atomic(partial / PROGRESS, {**start, "rows_done": 0})


class _ArrayWriter:
    """Positional writes of rows into a pre-allocated ``.npy`` file (no memory map, so
    nothing but the chunk is held); ``sync`` = fsync."""

    def __init__(self, path: Path, dtype: str, shape: tuple[int, ...]) -> None:
        mm = np.load(path, mmap_mode="r")  # header only; OSError / ValueError: unreadable
        if mm.dtype != np.dtype(dtype) or mm.shape != tuple(shape):
            raise ValueError(f"{path}: {mm.dtype} {mm.shape}, expected {dtype} {shape}")
        self.dtype, self.offset = np.dtype(dtype), int(mm.offset)
        self.row_bytes = self.dtype.itemsize * int(np.prod(shape[1:], dtype=np.int64))
        self.fd = os.open(path, os.O_WRONLY)

    def write(self, row: int, values: np.ndarray) -> None:
        buf = memoryview(np.ascontiguousarray(values, dtype=self.dtype)).cast("B")
        at = self.offset + row * self.row_bytes
        while len(buf):
            done = os.pwrite(self.fd, buf, at)
            buf, at = buf[done:], at + done

    def sync(self) -> None:
        os.fsync(self.fd)

    def close(self) -> None:
        os.close(self.fd)


def _open_for_writing(partial: Path, layout: dict) -> dict[str, _ArrayWriter] | None:
    """Writers of the chunk arrays of a partial pack, or None when one is missing or has
    another shape (then the pack starts over)."""
    out = {}
    try:
        for name in _CHUNK_ARRAYS:
            out[name] = _ArrayWriter(partial / f"{name}.npy", *layout[name])
    except (OSError, ValueError):
        for w in out.values():
            w.close()
        return None
    return out


def _finish(partial: Path, out_dir: Path, meta: dict) -> None:
    """Write ``meta.json`` last and rename the folder into place."""
    write_json_atomic(partial / META, meta)  # progress.json stays until the rename: a
    old = out_dir.with_name(out_dir.name + ".old")  # crash before it leaves a partial
    if old.exists():  # pack that a rerun only renames
        _remove_pack_folder(old)
    if out_dir.exists():
        os.replace(out_dir, old)
    os.replace(partial, out_dir)
    _fsync_dir(out_dir.parent)
    (out_dir / PROGRESS).unlink(missing_ok=True)
    if old.exists():
        shutil.rmtree(old)


def _levels(dataset) -> list[tuple[int, int, object, list]] | None:
    """Per dataset block: (first row, end row, geometry frames, [(frames, fidelity,
    column)]) of a MultiFidelityDataset, or None for another dataset class.

    Uses the dataset's private ``_blocks`` / ``_offsets`` / ``_columns``; a public
    ``MultiFidelityDataset.level_blocks()`` would be the clean accessor."""
    blocks, offs = getattr(dataset, "_blocks", None), getattr(dataset, "_offsets", None)
    columns = getattr(dataset, "_columns", None)
    if blocks is None or offs is None or columns is None:
        return None
    return [(int(offs[b]), int(offs[b + 1]), blk.frames, columns[b])
            for b, blk in enumerate(blocks)]


def _check_geometry(frames, lo: int, ptr: np.ndarray, pos: np.ndarray) -> None:
    """The checks lazy frames make when a row is read: finite coordinates, no coincident
    atoms (DataError naming file, row and field)."""
    field = getattr(frames, "_pos_key", "positions")
    bad = np.flatnonzero(~np.isfinite(pos).all(axis=1))
    if bad.size:
        r = int(np.searchsorted(ptr, bad[0], side="right") - 1)
        raise DataError(f"{frames.path}: {frames.describe_row(lo + r)}, atom "
                        f"{int(bad[0] - ptr[r])}: coordinate is {pos[bad[0]].tolist()} (field "
                        f"{field!r}); NaN/inf coordinates are not allowed")
    for s in range(0, len(ptr) - 1, _CHECK_ROWS):
        e = min(s + _CHECK_ROWS, len(ptr) - 1)
        check_coincident(pos[ptr[s]:ptr[e]], ptr[s:e + 1] - ptr[s], lambda r, i, j, d: DataError(
            f"{frames.path}: {frames.describe_row(lo + s + r)}: atoms {i} and {j} are at the "
            f"same position (distance {d:.3g} Å, field {field!r})"))


def _level_forces(frames, fid: str, lo: int, hi: int, rows: np.ndarray, ptr: np.ndarray,
                  out: np.ndarray) -> None:
    """Write the forces of fidelity ``fid`` of frames rows lo..hi-1 that have them
    (``rows`` mask) into ``out`` (atoms of those rows, 3)."""
    flat = getattr(frames, "forces", {}).get(fid) if isinstance(frames, InMemoryFrames) else None
    if flat is not None:  # in memory: one slice
        mask = np.repeat(rows, np.diff(ptr))
        out[mask] = flat[frames.ptr[lo]:frames.ptr[hi]][mask]
        return
    for j in np.flatnonzero(rows):  # lazy frames: sequential reads use their block cache
        f = frames.forces_row(lo + int(j), fid)
        if f is not None:
            out[ptr[j]:ptr[j + 1]] = f


def _read_piece(geo, columns: list, b0: int, s: int, e: int, ptr: np.ndarray, out) -> None:
    """Rows s..e-1 (dataset rows of the block starting at ``b0``) into the chunk arrays
    ``out`` = (z, pos, forces, has) at atoms ``ptr[0]``.. (``has`` starts at row s)."""
    z, pos, forces, has = out
    counts, zz, pp = geo.geometry_block(s - b0, e - b0)
    local = ptr[:e - s + 1] - ptr[0]
    if not np.array_equal(counts, np.diff(local)):
        r = int(np.flatnonzero(counts != np.diff(local))[0])
        raise DataError(f"{geo.path}: {geo.describe_row(s - b0 + r)} has {counts[r]} atoms "
                        f"but the index said {np.diff(local)[r]}; file changed while packing?")
    if not isinstance(geo, InMemoryFrames):  # in-memory frames were checked at load
        _check_geometry(geo, s - b0, local, pp)
    a, c = int(ptr[0]), int(ptr[e - s])
    z[a:c], pos[a:c] = zz, pp
    del zz, pp
    for frames, fid, k in columns:
        rows = has[:e - s, k]
        if rows.any():
            _level_forces(frames, fid, s - b0, e - b0, rows, local, forces[a:c, k])
    for frames, _, _ in columns:  # drop lazy readers' block caches (bounded memory)
        if not isinstance(frames, InMemoryFrames) and hasattr(frames, "close"):
            frames.close()


def read_rows(dataset, lo: int, hi: int, offsets: np.ndarray):
    """Rows lo..hi-1 of ``dataset`` as flat arrays: z (M,) uint8, pos (M, 3) float32 Å,
    forces (M, F, 3) float32 eV/Å (NaN = missing), has_forces (m, F) bool. A row whose
    forces at a fidelity hold a NaN has none there (all NaN, flag off)."""
    base, n_fid = int(offsets[lo]), len(dataset.fidelities)
    ptr = offsets[lo:hi + 1] - base
    m_atoms = int(ptr[-1])
    z = np.empty(m_atoms, dtype=np.uint8)
    pos = np.empty((m_atoms, 3), dtype=np.float32)
    forces = np.full((m_atoms, n_fid, 3), np.nan, dtype=np.float32)
    has = np.array(dataset.has_force_rows[lo:hi], dtype=bool)
    levels = _levels(dataset)
    if levels is None:  # any dataset with MultiFidelityDataset items
        for i in range(lo, hi):
            item = dataset[i]
            a, b = int(ptr[i - lo]), int(ptr[i - lo + 1])
            z[a:b], pos[a:b] = item.z.numpy(), item.pos.numpy()
            forces[a:b] = item.forces.numpy()
        levels = []
    for b0, b1, geo, columns in levels:
        lazy = not all(isinstance(f, InMemoryFrames) for f, _, _ in columns)
        step = _LAZY_ROWS if lazy else hi - lo  # lazy readers: small reads, caches dropped
        for s in range(max(lo, b0), min(hi, b1), step):
            _read_piece(geo, columns, b0, s, min(s + step, hi, b1), ptr[s - lo:] - ptr[0],
                        (z, pos, forces, has[s - lo:]))
    atom_bad = ~np.isfinite(forces).all(axis=2)  # (M, F)
    if atom_bad.any():
        row_bad = np.add.reduceat(atom_bad.astype(np.int64), ptr[:-1], axis=0) > 0
        has &= ~row_bad
        forces[np.repeat(~has, np.diff(ptr), axis=0)] = np.nan
    return z, pos, forces, has


def _progress(log: Callable[[str], None] | None, n: int, first: int) -> Callable[[int], None]:
    """A callback ``done -> None`` that logs rows done, rows/s and the ETA."""
    t0 = time.monotonic()

    def report(done: int) -> None:
        if log is not None:
            rate = (done - first) / max(time.monotonic() - t0, 1e-9)
            eta = (n - done) / rate if rate > 0 else float("inf")
            log(f"packed {done}/{n} rows ({100 * done / n:.1f} %), {rate:,.0f} rows/s, "
                f"ETA {_duration(eta)}")
    return report


def _duration(s: float) -> str:
    s = int(round(s)) if np.isfinite(s) else -1
    return "?" if s < 0 else f"{s // 3600}h{s // 60 % 60:02d}m{s % 60:02d}s"


def _check_target(out_dir: Path, identity: dict, sources: list[dict], force: bool):
    """A :class:`PackResult` when ``out_dir`` is already a finished pack of these sources,
    else None (go on packing). Refuses a changed source unless ``force``."""
    if not out_dir.exists() or (out_dir.is_dir() and not any(out_dir.iterdir())):
        return None
    meta = _read_json(out_dir / META)
    if meta is None or meta.get("format") != FORMAT:
        raise DataError(f"{out_dir}: exists and is not a finished packed dataset (no valid "
                        f"{META}); choose another --out or remove it")
    problem = _mismatch(meta, identity, sources, out_dir)
    if problem is not None and not force:
        raise DataError(f"{problem}; refusing to reuse it (rerun with --force to repack)")
    if problem is None and not force:
        n = int(meta["n_structures"])
        return PackResult(out_dir, n, int(meta["n_atoms"]), n, already_done=True)
    return None


def _resume_state(partial: Path, identity: dict, sources: list[dict], force: bool) -> dict | None:
    """The progress record of a partial pack of these sources, or None (starting over
    after removing a stale partial pack). Refuses a changed source unless ``force``."""
    state = _read_json(partial / PROGRESS) if partial.is_dir() else None
    problem = None if state is None else _mismatch(state, identity, sources, partial)
    if problem is not None and not force:
        raise DataError(f"{problem}; refusing to resume it (rerun with --force to start over)")
    if (state is None or problem is not None) and partial.exists():
        _remove_pack_folder(partial)  # crashed before the first record, or forced
        return None
    return state


def pack_dataset(spec: str | os.PathLike | dict | DatasetSpec, out_dir: str | os.PathLike,
                 chunk_rows: int = 50_000, force: bool = False,
                 log: Callable[[str], None] | None = None) -> PackResult:
    """Pack the dataset ``spec`` names into ``out_dir`` (see the module docstring).

    Args:
        spec: dataset spec (YAML path, dict or DatasetSpec), any format.
        out_dir: the pack folder to create; ``<out_dir>.partial`` holds the work in
            progress (a rerun resumes it).
        chunk_rows: rows read and written at once (bounds the memory used).
        force: repack even when ``out_dir`` or a partial pack was made from other
            sources (or is finished).
        log: called with progress lines (rows/s, ETA); None: silent.

    Raises:
        DataError: a changed source or spec (without ``force``), bad data (naming the
            file, row and field), an ``out_dir`` that is not a pack.
    """
    if int(chunk_rows) < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
    t0, spec = time.monotonic(), read_spec(spec)
    out_dir = Path(out_dir).expanduser().resolve()
    partial = out_dir.with_name(out_dir.name + ".partial")
    identity = {"format": FORMAT, "version": VERSION, "spec": spec.to_dict()}
    sources = source_fingerprints(spec)
    done = _check_target(out_dir, identity, sources, force)
    if done is not None:
        if log:
            log(f"{out_dir}: already packed from these sources ({done.n} rows)")
        return done
    state = _resume_state(partial, identity, sources, force)
    dataset = load_dataset(spec)
    n, offsets = len(dataset), np.concatenate([[0], np.cumsum(dataset.n_atoms)]).astype(np.int64)
    layout = array_layout(n, int(offsets[-1]), len(dataset.fidelities))
    start = {"identity": identity, "sources": sources, "n": n, "n_atoms": int(offsets[-1])}
    writers = None
    if state is not None and (state.get("n"), state.get("n_atoms")) == (n, int(offsets[-1])):
        writers = _open_for_writing(partial, layout)
    if writers is None:
        if partial.exists():
            _remove_pack_folder(partial)
        _allocate(partial, layout, {"offsets": offsets, "energy": dataset.energies,
                                    "dataset_index": dataset.dataset_index}, start)
        state, writers = {**start, "rows_done": 0}, _open_for_writing(partial, layout)
    first = int(state["rows_done"])
    if log:
        log(f"packing {n} rows ({int(offsets[-1])} atoms, fidelities "
            f"{', '.join(dataset.fidelities)}) into {out_dir}"
            + (f", resuming after row {first}" if first else ""))
    progress, kill_after = _progress(log, n, first), int(os.environ.get(KILL_ENV) or 0)
    try:
        for k, lo in enumerate(range(first, n, int(chunk_rows)), start=1):
            hi = min(lo + int(chunk_rows), n)
            z, pos, forces, has = read_rows(dataset, lo, hi, offsets)
            for name, row, values in (("z", offsets[lo], z), ("pos", offsets[lo], pos),
                                      ("forces", offsets[lo], forces), ("has_forces", lo, has)):
                writers[name].write(int(row), values)
                writers[name].sync()
            del z, pos, forces, has
            if kill_after and k >= kill_after:
                os.kill(os.getpid(), signal.SIGKILL)  # testing: a crash before the record
            write_json_atomic(partial / PROGRESS, {**start, "rows_done": hi})
            progress(hi)
    finally:
        for w in writers.values():
            w.close()
    if source_fingerprints(spec) != sources:
        raise DataError(f"a source file of {spec.source or 'the dataset spec'} changed while "
                        "it was being packed; rerun with --force to start over")
    _finish(partial, out_dir, {
        "format": FORMAT, "version": VERSION, "fidelities": list(dataset.fidelities),
        "has_forces": dict(dataset.has_forces), "datasets": list(dataset.names),
        "elements": list(dataset.elements), "n_structures": n, "n_atoms": int(offsets[-1]),
        "rows_complete": n,
        "units": {"energy": "eV", "positions": "Angstrom", "forces": "eV/Angstrom"},
        "arrays": {k: {"dtype": d, "shape": list(sh)} for k, (d, sh) in layout.items()},
        "identity": identity, "sources": sources, "provenance": list(dataset.provenance)})
    dataset.close()
    seconds = time.monotonic() - t0
    if log:
        log(f"packed {n} rows into {out_dir} in {_duration(seconds)}")
    return PackResult(out_dir, n, int(offsets[-1]), first, False, seconds)
