r"""Pair-distance coverage of a training set, and sensitivity ranges chosen from it.

HIP-NN sees a pair distance r only through inverse-distance Gaussians centred between
``soft_min`` and ``soft_max`` (times a cosine envelope that vanishes at the hard cutoff
r_c; see :mod:`mfgnn.nn.sensitivity`). Distances well below ``soft_min`` are resolved
poorly, so ``soft_min`` must sit just below the closest pairs the training data contain —
far from equilibrium these reach 0.6 Å, well below the usual 0.75–0.85 Å defaults.

:func:`pair_distance_stats` scans all atom pairs of the chosen rows (all pairs of every
molecule, vectorised over molecules of the same size) and records

* the exact minimum distance, its row and element pair, and the per-row minimum r_min,i;
* a histogram of the pair distances r < r_c with bins of ``resolution`` Å (default 1 mÅ),
  from which quantiles and counts below any distance follow to within one bin;
* the minimum distance and pair count of every element pair (Z_i ≤ Z_j).

Rules of :func:`auto_sensitivity_range` (distances in Å, q_p the p-quantile of the pair
distances within the cutoff):

.. math::

    s_\min = \max\!\left(0.25,\ \lfloor 0.9\, q_{10^{-4}} \rfloor_{0.01}\right), \qquad
    s_\max = \max\!\left(s_\min + 0.5,\ \lfloor \min(q_{0.99},\ 0.85\, r_c) \rfloor_{0.05}\right)

(⌊x⌋_h rounds down to a multiple of h; s_max is finally capped at 0.95 r_c). s_min sits
10 % below all but 0.01 % of the training pairs, so the innermost Gaussian covers the
closest sampled contacts without spending resolution on distances never seen. s_max is
where the bulk of the pairs ends (99 %), but no further out than HIP-NN's usual
s_max ≈ r_c − 1 Å ≈ 0.85 r_c, so the outermost Gaussian is not flattened by the envelope.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

#: Quantiles (as fractions) stored in :attr:`PairDistanceStats.quantiles`.
QUANTILES = (1e-4, 1e-3, 1e-2, 0.05, 0.5, 0.99)
#: Pairs (molecules × pairs per molecule) processed at once.
_CHUNK_PAIRS = 1 << 19
#: Rows read at once from a source with a bulk ``geometries(rows)`` reader (a pack).
BULK_ROWS = 8192


@dataclass
class PairDistanceStats:
    """Pair-distance coverage of some rows (all distances in Å).

    Attributes:
        n_structures: rows scanned.
        n_pairs: unordered atom pairs with r < cutoff (all pairs when cutoff is None).
        cutoff: the cutoff in Å, or None.
        threshold: the distance of :attr:`fraction_rows_below`.
        min_distance: the closest pair over all rows (inf if no row has two atoms).
        min_row: the row (as given in ``rows``) holding it, -1 if none.
        min_pair: (Z_i, Z_j), Z_i ≤ Z_j, of the closest pair.
        quantiles: fraction → distance, for :data:`QUANTILES` (NaN without pairs).
        fraction_rows_below: fraction of rows with a pair closer than ``threshold``.
        pair_min: (Z_i, Z_j) → smallest distance of that element pair (within cutoff).
        pair_count: (Z_i, Z_j) → number of such pairs within cutoff.
        rows: (n,) int64 row ids, in scan order.
        row_min: (n,) float64 closest pair of each row (inf for < 2 atoms).
        resolution: histogram bin width in Å.
        histogram: pair counts per bin [k·resolution, (k+1)·resolution).
    """

    n_structures: int
    n_pairs: int
    cutoff: float | None
    threshold: float
    min_distance: float
    min_row: int
    min_pair: tuple[int, int]
    quantiles: dict[float, float]
    fraction_rows_below: float
    pair_min: dict[tuple[int, int], float]
    pair_count: dict[tuple[int, int], int]
    rows: np.ndarray = field(repr=False)
    row_min: np.ndarray = field(repr=False)
    resolution: float = 1e-3
    histogram: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64), repr=False)

    def quantile(self, q: float) -> float:
        """Distance below which a fraction ``q`` of the pairs lie (to within one bin)."""
        return _hist_quantile(self.histogram, self.resolution, q, self.min_distance)

    def pairs_below(self, distance: float) -> int:
        """Pairs closer than ``distance`` (exact for multiples of the resolution)."""
        return _hist_count_below(self.histogram, self.resolution, distance)

    def rows_below(self, distance: float) -> int:
        """Rows with a pair closer than ``distance`` (exact)."""
        return int(np.count_nonzero(self.row_min < distance))

    def to_dict(self) -> dict:
        """JSON-ready summary (no per-row arrays or histogram)."""
        return {
            "n_structures": self.n_structures, "n_pairs": self.n_pairs, "cutoff": self.cutoff,
            "threshold": self.threshold, "min_distance": _json_float(self.min_distance),
            "min_row": self.min_row, "min_pair": list(self.min_pair),
            "quantiles": {str(q): _json_float(v) for q, v in self.quantiles.items()},
            "fraction_rows_below": self.fraction_rows_below,
            "pair_min": {f"{a}-{b}": v for (a, b), v in sorted(self.pair_min.items())},
            "pair_count": {f"{a}-{b}": v for (a, b), v in sorted(self.pair_count.items())},
        }


def _json_float(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def _hist_quantile(hist: np.ndarray, res: float, q: float, lower: float) -> float:
    total = int(hist.sum())
    if total == 0:
        return float("nan")
    cum = np.cumsum(hist)
    target = min(max(q, 0.0), 1.0) * total
    k = int(np.searchsorted(cum, target, side="left"))
    k = min(k, len(hist) - 1)
    prev = float(cum[k - 1]) if k else 0.0
    frac = (target - prev) / hist[k] if hist[k] else 0.0
    return max(float((k + frac) * res), float(lower))


def _hist_count_below(hist: np.ndarray, res: float, distance: float) -> int:
    if distance <= 0 or hist.size == 0:
        return 0
    x = distance / res
    k = int(math.floor(x + 1e-9))
    if k >= hist.size:
        return int(hist.sum())
    full = int(hist[:k].sum())
    part = float(hist[k]) * max(x - k, 0.0) if x - k > 1e-9 else 0.0
    return full + int(round(part))


def _geometry_of(item) -> tuple[np.ndarray, np.ndarray]:
    """(z, pos) numpy arrays of a Data-like item or a (z, pos) pair."""
    if hasattr(item, "pos") and hasattr(item, "z"):
        z, pos = item.z, item.pos
    else:
        z, pos = item
    z = np.asarray(z.detach().cpu() if hasattr(z, "detach") else z).reshape(-1)
    pos = np.asarray(pos.detach().cpu() if hasattr(pos, "detach") else pos, dtype=np.float64).reshape(-1, 3)
    keep = z > 0  # atomic number 0 pads rows to a common width
    return z[keep].astype(np.int64), pos[keep]


def iter_geometries(source, rows=None) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Yield (row, z, pos) from a dataset or an iterable.

    ``source`` may be indexable (``source[i]`` a torch_geometric ``Data`` with ``z``, ``pos``,
    or a (z, pos) pair); when it has a ``geometry(i) -> (z, pos)`` method that is used
    instead (no graph or label building). Without ``__getitem__`` it is iterated and
    ``rows`` must be None.
    """
    if rows is None:
        if hasattr(source, "__getitem__") and hasattr(source, "__len__"):
            rows = np.arange(len(source))
        else:
            for i, item in enumerate(source):
                yield (i, *_geometry_of(item))
            return
    getter = getattr(source, "geometry", None)
    for i in np.asarray(rows, dtype=np.int64).reshape(-1):
        item = getter(int(i)) if callable(getter) else source[int(i)]
        yield (int(i), *_geometry_of(item))


class _Accumulator:
    """Streams molecules into per-size buffers and reduces them chunk by chunk."""

    def __init__(self, cutoff: float | None, resolution: float) -> None:
        self.cutoff = cutoff
        self.res = resolution
        self.buffers: dict[int, list[tuple[int, np.ndarray, np.ndarray]]] = {}
        self.rows: list[np.ndarray] = []
        self.row_min: list[np.ndarray] = []
        self.hist = np.zeros(0, dtype=np.int64)
        self.pair_min: dict[tuple[int, int], float] = {}
        self.pair_count: dict[tuple[int, int], int] = {}

    def add(self, row: int, z: np.ndarray, pos: np.ndarray) -> None:
        n = len(z)
        buf = self.buffers.setdefault(n, [])
        buf.append((row, z, pos))
        if len(buf) * max(n * (n - 1) // 2, 1) >= _CHUNK_PAIRS:
            self._flush(n)

    def add_block(self, rows: np.ndarray, counts: np.ndarray, z: np.ndarray,
                  pos: np.ndarray) -> None:
        """Molecules in bulk: ``rows`` (m,), atom ``counts`` (m,), atomic numbers (ΣN,)
        and positions (ΣN, 3) Å concatenated; grouped by atom count without per-row
        Python objects."""
        start = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        for n in np.unique(counts):
            n = int(n)
            sel = np.flatnonzero(counts == n)
            step = max(_CHUNK_PAIRS // max(n * (n - 1) // 2, 1), 1)
            for s in range(0, len(sel), step):
                part = sel[s:s + step]
                atoms = start[part][:, None] + np.arange(n)
                self._reduce(n, rows[part], z[atoms], pos[atoms])

    def finish(self) -> None:
        for n in list(self.buffers):
            self._flush(n)

    def _flush(self, n: int) -> None:
        buf = self.buffers.pop(n, [])
        if not buf:
            return
        rows = np.array([b[0] for b in buf], dtype=np.int64)
        if n < 2:
            self._reduce(n, rows, None, None)
            return
        self._reduce(n, rows, np.stack([b[1] for b in buf]), np.stack([b[2] for b in buf]))

    def _reduce(self, n: int, rows: np.ndarray, z, pos) -> None:
        """Statistics of m molecules of n atoms: z (m, n), pos (m, n, 3) Å."""
        self.rows.append(rows)
        if n < 2:
            self.row_min.append(np.full(len(rows), np.inf))
            return
        iu, ju = np.triu_indices(n, 1)
        d = np.sqrt(np.square(pos[:, iu] - pos[:, ju]).sum(-1))  # (m, P)
        self.row_min.append(d.min(axis=1))
        within = d < self.cutoff if self.cutoff is not None else np.ones(d.shape, bool)
        dv = d[within]
        self._add_histogram(dv)
        zi, zj = z[:, iu][within], z[:, ju][within]
        keys = np.minimum(zi, zj) * 1000 + np.maximum(zi, zj)
        for key in np.unique(keys):
            sel = dv[keys == key]
            pair = (int(key // 1000), int(key % 1000))
            self.pair_min[pair] = min(self.pair_min.get(pair, np.inf), float(sel.min()))
            self.pair_count[pair] = self.pair_count.get(pair, 0) + int(sel.size)

    def _add_histogram(self, dv: np.ndarray) -> None:
        if dv.size == 0:
            return
        counts = np.bincount((dv / self.res).astype(np.int64))
        if counts.size > self.hist.size:
            counts[: self.hist.size] += self.hist
            self.hist = counts
        else:
            self.hist[: counts.size] += counts


def pair_distance_stats(source, rows=None, cutoff: float | None = None, threshold: float = 0.8,
                        resolution: float = 1e-3) -> PairDistanceStats:
    """Pair-distance coverage of ``rows`` of ``source`` (see module doc).

    Args:
        source: a dataset (``source[i]`` a ``Data`` with ``z`` (N,), ``pos`` (N, 3) Å; a
            ``geometry(i) -> (z, pos)`` method is used when present), or an iterable of
            such items or (z, pos) pairs. Atomic number 0 is treated as padding.
        rows: row indices into ``source`` (e.g. the training rows), or None for all.
        cutoff: only pairs with r < cutoff (Å) enter the histogram, quantiles and
            per-element statistics; the per-row and overall minima use all pairs.
        threshold: distance (Å) of :attr:`PairDistanceStats.fraction_rows_below`.
        resolution: histogram bin width (Å).

    Cost: all N(N−1)/2 pairs of each molecule, vectorised over molecules with the same
    atom count; memory is bounded by processing ≈0.5M pairs at a time. A source with a
    bulk reader ``geometries(rows) -> (counts, z, pos)`` (a
    :class:`~mfgnn.data.packed.PackedDataset`) is read :data:`BULK_ROWS` rows at a time,
    without per-row Python objects.
    """
    if not resolution > 0:
        raise ValueError(f"resolution must be > 0 Å, got {resolution}")
    acc = _Accumulator(None if cutoff is None else float(cutoff), float(resolution))
    bulk = getattr(source, "geometries", None)
    if callable(bulk):  # a pack: atoms read in bulk, BULK_ROWS rows at a time
        given = np.arange(len(source)) if rows is None else np.asarray(rows, np.int64).reshape(-1)
        for s in range(0, len(given), BULK_ROWS):
            part = given[s:s + BULK_ROWS]
            counts, z, pos = bulk(part)  # packed rows hold no padding
            acc.add_block(part, np.asarray(counts, np.int64), z, pos)
    else:
        for row, z, pos in iter_geometries(source, rows):
            acc.add(row, z, pos)
    acc.finish()
    all_rows = np.concatenate(acc.rows) if acc.rows else np.zeros(0, np.int64)
    row_min = np.concatenate(acc.row_min) if acc.row_min else np.zeros(0)
    order = np.argsort(all_rows, kind="stable") if rows is None else _scan_order(all_rows, rows)
    all_rows, row_min = all_rows[order], row_min[order]
    return _build_stats(acc, all_rows, row_min, cutoff, threshold)


def _scan_order(all_rows: np.ndarray, rows) -> np.ndarray:
    """Permutation putting ``all_rows`` back in the order of ``rows``."""
    given = np.asarray(rows, dtype=np.int64).reshape(-1)
    sorter = np.argsort(given, kind="stable")
    where = sorter[np.searchsorted(given, all_rows, sorter=sorter)]
    return np.argsort(where, kind="stable")


def _build_stats(acc: _Accumulator, rows: np.ndarray, row_min: np.ndarray, cutoff, threshold) -> PairDistanceStats:
    if row_min.size and np.isfinite(row_min).any():
        k = int(np.argmin(row_min))
        min_d, min_row = float(row_min[k]), int(rows[k])
    else:
        min_d, min_row = float("inf"), -1
    min_pair = min(acc.pair_min, key=acc.pair_min.get) if acc.pair_min else (0, 0)
    if acc.pair_min and acc.pair_min[min_pair] > min_d:  # closest pair beyond cutoff (tiny cutoff)
        min_pair = (0, 0)
    lower = min_d if math.isfinite(min_d) else 0.0
    quantiles = {q: _hist_quantile(acc.hist, acc.res, q, lower) for q in QUANTILES}
    n = int(rows.size)
    return PairDistanceStats(
        n_structures=n, n_pairs=int(acc.hist.sum()),
        cutoff=None if cutoff is None else float(cutoff), threshold=float(threshold),
        min_distance=min_d, min_row=min_row, min_pair=min_pair, quantiles=quantiles,
        fraction_rows_below=float(np.count_nonzero(row_min < threshold) / n) if n else 0.0,
        pair_min=dict(sorted(acc.pair_min.items())), pair_count=dict(sorted(acc.pair_count.items())),
        rows=rows, row_min=row_min, resolution=acc.res, histogram=acc.hist,
    )


def coverage_warning(stats: PairDistanceStats, soft_min: float) -> str | None:
    """A message when training pairs lie below ``soft_min`` (Å), else None.

    The message gives the rows and pairs below ``soft_min``, the closest pair and the
    ``soft_min`` that :func:`auto_sensitivity_range` would choose.
    """
    n_rows = stats.rows_below(soft_min)
    if n_rows == 0:
        return None
    n_pairs = stats.pairs_below(soft_min)
    suggest = _auto_soft_min(stats)
    zi, zj = stats.min_pair
    where = f"{zi}-{zj} pair, row {stats.min_row}" if zi else f"row {stats.min_row}"
    return (f"{n_rows} of {stats.n_structures} training structures "
            f"({100.0 * n_rows / max(stats.n_structures, 1):.2f} %) have an atom pair closer than "
            f"soft_min = {soft_min:.3f} Å ({n_pairs} of {stats.n_pairs} pairs within the cutoff); "
            f"the closest is {stats.min_distance:.3f} Å ({where}). The sensitivity functions are "
            f"centred at or above soft_min, so these contacts are poorly resolved: lower soft_min "
            f"to about {suggest:.2f} Å and/or add a short-range repulsion (ZBL).")


def _floor_to(x: float, step: float) -> float:
    return math.floor(x / step + 1e-9) * step


def _auto_soft_min(stats: PairDistanceStats) -> float:
    q = stats.quantiles.get(1e-4, stats.quantile(1e-4))
    if not math.isfinite(q):
        return 0.75  # no pairs: HIP-NN's usual default
    return max(0.25, round(_floor_to(0.9 * q, 0.01), 2))


def auto_sensitivity_range(stats: PairDistanceStats, cutoff: float) -> tuple[float, float]:
    """(soft_min, soft_max) in Å for the model cutoff ``cutoff`` (rules in the module doc).

    Without any pair in ``stats`` the result is (0.75, 0.85·cutoff rounded down).
    """
    cutoff = float(cutoff)
    soft_min = _auto_soft_min(stats)
    if not soft_min < 0.95 * cutoff:
        raise ValueError(f"cutoff {cutoff} Å is too short for the training distances "
                         f"(soft_min would be {soft_min} Å)")
    q99 = stats.quantiles.get(0.99, stats.quantile(0.99))
    bulk = 0.85 * cutoff if not math.isfinite(q99) else min(q99, 0.85 * cutoff)
    soft_max = max(soft_min + 0.5, _floor_to(bulk, 0.05))
    soft_max = min(soft_max, 0.95 * cutoff)
    return soft_min, round(soft_max, 4)
