"""Train / validation / test splits of dataset rows: random with a seed, saved as JSON.

Each row (one geometry with all its fidelities) goes to exactly one split, so no geometry
is ever in two splits. Sizes are counts (int) or fractions of n (float in [0, 1]);
``test=None`` means "all remaining rows".

Data of several datasets (:attr:`MultiFidelityDataset.dataset_index
<mfgnn.data.dataset.MultiFidelityDataset>`) can be split per dataset
(:func:`make_dataset_split`): ``stratify="dataset"`` gives every split the same share of
every dataset (counts distributed in proportion to the datasets' sizes, largest remainder
first), and per-dataset sizes (``{"h2co": 1000, "hcooh": 500}``) give exact counts per
dataset. The saved JSON holds row indices either way.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config_checks import check_choice, check_number, closest
from ..errors import ConfigError, DataError

_NAMES = ("train", "valid", "test")
#: Values of ``split.stratify``.
STRATIFY = ("dataset",)

#: A split size: a count, a fraction, or a per-dataset mapping of either.
Size = int | float | Mapping[str, int | float]


def _check_size(value, where: str, optional: bool) -> None:
    check_number(value, where, minimum=0, optional=optional)
    if isinstance(value, float) and value > 1:
        raise ConfigError(f"{where}: a fraction must be at most 1, got {value} "
                          "(write a count as an integer)")


@dataclass
class SplitConfig:
    """The ``split:`` section of a run: counts (int) or fractions (float in (0, 1]) per
    split, or per-dataset mappings of them.

    ``test: null`` puts every row not in train/valid into test (per dataset, with
    per-dataset sizes). ``file`` loads a saved split (JSON written by a previous run)
    instead of drawing one. ``stratify: dataset`` gives each split the same share of every
    dataset. Per-dataset sizes (``train: {h2co: 1000, hcooh: 500}``) give exact counts
    (or fractions of that dataset); a dataset missing from a mapping gets no rows there.
    With per-dataset sizes, ``train`` and ``valid`` (and ``test`` unless null) are all
    mappings.
    """

    train: Size = 0.8
    valid: Size = 0.1
    test: Size | None = None
    seed: int = 0
    file: str | None = None
    stratify: str | None = None

    def __post_init__(self) -> None:
        for name in _NAMES:
            value = getattr(self, name)
            if isinstance(value, Mapping):
                if not value:
                    raise ConfigError(f"split.{name}: a per-dataset mapping must name at "
                                      "least one dataset (dataset name -> count or fraction)")
                for dataset, size in value.items():
                    if not isinstance(dataset, str) or not dataset:
                        raise ConfigError(f"split.{name}: dataset names must be non-empty "
                                          f"strings, got {dataset!r}")
                    _check_size(size, f"split.{name}.{dataset}", optional=False)
                setattr(self, name, dict(value))
            else:
                _check_size(value, f"split.{name}", optional=name == "test")
        if self.per_dataset:
            scalar = [n for n in _NAMES if getattr(self, n) is not None
                      and not isinstance(getattr(self, n), Mapping)]
            if scalar:
                raise ConfigError(
                    f"split.{scalar[0]}: with per-dataset sizes, train and valid (and test "
                    f"unless null) must all be mappings dataset name -> size, got "
                    f"{getattr(self, scalar[0])!r}")
        check_number(self.seed, "split.seed", minimum=0, integer=True)
        if self.file is not None and not isinstance(self.file, str):
            raise ConfigError(f"split.file must be a path, got {self.file!r}")
        if self.stratify is not None:
            check_choice(self.stratify, STRATIFY, "split.stratify", "stratify mode")

    @property
    def per_dataset(self) -> bool:
        """True when the sizes are per-dataset mappings."""
        return any(isinstance(getattr(self, n), Mapping) for n in _NAMES)


@dataclass
class Split:
    """Row indices of each split (int64 arrays); ``n`` and ``seed`` record their origin."""

    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray
    n: int | None = None
    seed: int | None = None

    def __post_init__(self) -> None:
        for name in _NAMES:
            setattr(self, name, np.asarray(getattr(self, name), dtype=np.int64).reshape(-1))
        self.check()

    def check(self, n: int | None = None) -> None:
        """Raise DataError if splits overlap, repeat a row, or leave range(n)."""
        n = self.n if n is None else n
        allrows = np.concatenate([self.train, self.valid, self.test])
        if len(np.unique(allrows)) != len(allrows):
            raise DataError("split has a row in two splits (or twice in one)")
        if len(allrows) and allrows.min() < 0:
            raise DataError("split has negative row indices")
        if n is not None and len(allrows) and allrows.max() >= n:
            raise DataError(f"split has row {int(allrows.max())} but the dataset has {n} rows")

    def sizes(self) -> dict[str, int]:
        """Number of rows per split."""
        return {name: len(getattr(self, name)) for name in _NAMES}

    def by_dataset(self, dataset_index: np.ndarray,
                   names: Sequence[str]) -> dict[str, dict[str, int]]:
        """Rows per split of each dataset: ``{dataset: {"train": n, "valid": n, "test": n}}``."""
        index = np.asarray(dataset_index, dtype=np.int64)
        return {name: {s: int(np.count_nonzero(index[getattr(self, s)] == d)) for s in _NAMES}
                for d, name in enumerate(names)}

    def to_dict(self) -> dict:
        """JSON-ready dict."""
        return {"n": self.n, "seed": self.seed,
                **{name: getattr(self, name).tolist() for name in _NAMES}}

    def save(self, path: str | Path) -> Path:
        """Write JSON atomically (:func:`mfgnn.data.split_file.write_split`)."""
        from .split_file import write_split

        return write_split(self, path)

    @classmethod
    def load(cls, path: str | Path) -> Split:
        """Read a split written by :meth:`save` (large files without a Python object per
        index, see :func:`mfgnn.data.split_file.read_large`)."""
        from .split_file import LARGE_SPLIT_BYTES, read_large

        path = Path(path)
        try:
            if path.stat().st_size > LARGE_SPLIT_BYTES and (fast := read_large(path)):
                return cls(*(fast[k] for k in _NAMES), n=fast["n"], seed=fast["seed"])
        except FileNotFoundError:
            raise DataError(f"split file not found: {path}") from None
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise DataError(f"split file not found: {path}") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DataError(f"{path}: not a valid split JSON file ({exc})") from None
        if not isinstance(d, dict) or any(k not in d for k in _NAMES):
            raise DataError(f"{path}: a split file needs keys {', '.join(_NAMES)}")
        try:
            return cls(*(np.asarray(d[k], dtype=np.int64) for k in _NAMES),
                       n=d.get("n"), seed=d.get("seed"))
        except (TypeError, ValueError) as exc:
            raise DataError(f"{path}: split indices must be integer lists ({exc})") from None


def sample_rows(rows, limit: int, seed: int = 0) -> np.ndarray:
    """``rows`` (int64) when there are at most ``limit``, else a random sample of
    ``limit`` of them (seeded, sorted): what statistics of very large splits read."""
    rows = np.asarray(rows, dtype=np.int64).reshape(-1)
    if len(rows) <= limit:
        return rows
    pick = np.random.default_rng([int(seed), 104729]).choice(len(rows), size=limit,
                                                             replace=False)
    return rows[np.sort(pick)]


def _count(name: str, value: int | float | None, n: int) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise DataError(f"{name} must be a count (int) or a fraction (float), got {value!r}")
    if isinstance(value, int | np.integer):
        if value < 0:
            raise DataError(f"{name} count must be >= 0, got {value}")
        return int(value)
    if not 0.0 <= float(value) <= 1.0:
        raise DataError(f"{name} fraction must be in [0, 1], got {value}")
    return int(round(float(value) * n))


def make_split(n: int, train: int | float, valid: int | float,
               test: int | float | None = None, seed: int = 0) -> Split:
    """Random split of ``range(n)`` with ``np.random.default_rng(seed)``.

    Args:
        n: number of rows.
        train, valid, test: counts (int) or fractions of n (float); ``test=None`` (or
            fractions summing to 1) gives the test split all remaining rows.
        seed: random seed (same seed, same split).

    Raises:
        DataError: counts exceeding n, or a split that would be empty although a
            size > 0 was asked for.
    """
    n = int(n)
    if n < 0:
        raise DataError(f"n must be >= 0, got {n}")
    sizes = {k: _count(k, v, n) for k, v in (("train", train), ("valid", valid), ("test", test))}
    fractions = [v for v in (train, valid, test) if isinstance(v, float)]
    rest = test is None or (len(fractions) == 3 and abs(sum(fractions) - 1.0) < 1e-9)
    if rest:
        sizes["test"] = n - sizes["train"] - sizes["valid"]
    total = sum(sizes.values())
    if sizes["test"] < 0 or total > n:
        asked = f"train={sizes['train']}, valid={sizes['valid']}"
        if not rest:
            asked += f", test={sizes['test']}"
        raise DataError(f"requested split sizes {asked} exceed the {n} rows available")
    for name, asked in (("train", train), ("valid", valid), ("test", test)):
        if asked is not None and asked > 0 and sizes[name] == 0:
            raise DataError(f"split {name!r} would be empty ({asked!r} of {n} rows)")
    perm = np.random.default_rng(seed).permutation(n)
    a, b = sizes["train"], sizes["train"] + sizes["valid"]
    return Split(np.sort(perm[:a]), np.sort(perm[a:b]), np.sort(perm[b:b + sizes["test"]]),
                 n=n, seed=int(seed))


def apportion(total: int, weights: Sequence[int], caps: Sequence[int] | None = None) -> np.ndarray:
    """Split ``total`` into integers proportional to ``weights`` by largest remainder
    (Hamilton): each share is the floor or the ceiling of its quota, never above its
    cap (default: the weight); ties go to the earlier entry.

    Raises:
        DataError: ``total`` exceeds the sum of the caps.
    """
    w = np.asarray(weights, dtype=np.int64)
    caps = w if caps is None else np.asarray(caps, dtype=np.int64)
    if total > int(caps.sum()):
        raise DataError(f"cannot place {total} rows in {int(caps.sum())}")
    if total == 0 or w.sum() == 0:
        return np.zeros(len(w), dtype=np.int64)
    quota = total * w / w.sum()
    share = np.minimum(np.floor(quota).astype(np.int64), caps)
    order = sorted(range(len(w)), key=lambda d: (-(quota[d] - np.floor(quota[d])), d))
    left = total - int(share.sum())
    for d in order:  # largest remainder first
        if left and share[d] < caps[d]:
            share[d] += 1
            left -= 1
    while left:  # only when caps bind: fill the datasets with room, most room first
        d = int(np.argmax(caps - share))
        share[d] += 1
        left -= 1
    return share


def _per_dataset_sizes(sizes: Mapping, split: str, names: tuple[str, ...],
                       counts: np.ndarray) -> np.ndarray:
    """(D,) rows of each dataset for one per-dataset size mapping (missing names: 0)."""
    out = np.zeros(len(names), dtype=np.int64)
    for name, value in sizes.items():
        if name not in names:
            raise ConfigError(f"split.{split}: unknown dataset {name!r}"
                              f"{closest(str(name), names)} (the datasets are "
                              f"{', '.join(names)})")
        d = names.index(name)
        out[d] = _count(f"split.{split}.{name}", value, int(counts[d]))
    return out


def _asked(value) -> bool:
    """A size that asks for at least one row."""
    if isinstance(value, Mapping):
        return any(v > 0 for v in value.values())
    return value is not None and value > 0


def make_dataset_split(dataset_index: np.ndarray, names: Sequence[str], train: Size,
                       valid: Size, test: Size | None = None, seed: int = 0,
                       stratify: str | None = None) -> Split:
    """Random split of rows that belong to several datasets.

    Args:
        dataset_index: (n,) int, the dataset (index into ``names``) of each row.
        names: dataset names.
        train, valid, test: counts or fractions (of all rows; with ``stratify`` each
            dataset gets its proportional share, largest remainder first), or per-dataset
            mappings ``{name: count or fraction of that dataset}`` (a missing name gets no
            rows; ``test=None`` gives each dataset's remaining rows to test).
        seed: random seed; the rows of each dataset are drawn with one
            ``np.random.default_rng(seed)``, dataset after dataset.
        stratify: None (plain :func:`make_split` over all rows unless the sizes are
            per-dataset) or ``"dataset"``.

    Raises:
        ConfigError: unknown dataset name or stratify mode; per-dataset sizes mixed
            with plain ones. DataError: sizes exceeding a dataset's rows, or a split that
            would be empty although a size > 0 was asked for.
    """
    index = np.asarray(dataset_index, dtype=np.int64).reshape(-1)
    names = tuple(names)
    n = len(index)
    if n and (index.min() < 0 or index.max() >= len(names)):
        raise DataError(f"dataset_index holds values outside 0..{len(names) - 1}")
    if stratify is not None:
        check_choice(stratify, STRATIFY, "split.stratify", "stratify mode")
    sizes = {"train": train, "valid": valid, "test": test}
    per = [k for k, v in sizes.items() if isinstance(v, Mapping)]
    if not per and stratify is None:
        return make_split(n, train, valid, test, seed=seed)
    counts = np.bincount(index, minlength=len(names)).astype(np.int64)
    share: dict[str, np.ndarray] = {}
    if per:
        plain = [k for k, v in sizes.items() if v is not None and k not in per]
        if plain:
            raise ConfigError(f"split.{plain[0]}: with per-dataset sizes, train and valid (and "
                              "test unless null) must all be mappings dataset name -> size")
        for k in per:
            share[k] = _per_dataset_sizes(sizes[k], k, names, counts)
        rest = test is None
    else:
        total = {k: _count(k, v, n) for k, v in sizes.items()}
        fractions = [v for v in sizes.values() if isinstance(v, float)]
        rest = test is None or (len(fractions) == 3 and abs(sum(fractions) - 1.0) < 1e-9)
        asked = {k: v for k, v in total.items() if not (rest and k == "test")}
        if sum(asked.values()) > n:
            listed = ", ".join(f"{k}={v}" for k, v in asked.items())
            raise DataError(f"requested split sizes {listed} exceed the {n} rows available")
        share["train"] = apportion(total["train"], counts)
        share["valid"] = apportion(total["valid"], counts, counts - share["train"])
        if not rest:
            share["test"] = apportion(total["test"], counts,
                                      counts - share["train"] - share["valid"])
    if rest:
        share["test"] = counts - share["train"] - share["valid"]
    for d, name in enumerate(names):
        used = share["train"][d] + share["valid"][d] + max(int(share["test"][d]), 0)
        if share["test"][d] < 0 or used > counts[d]:
            asked = ", ".join(f"{k}={int(share[k][d])}" for k in _NAMES
                              if not (rest and k == "test"))
            raise DataError(f"requested split sizes {asked} of dataset {name!r} exceed its "
                            f"{int(counts[d])} rows")
    for k in _NAMES:
        if _asked(sizes[k]) and share[k].sum() == 0:
            raise DataError(f"split {k!r} would be empty ({sizes[k]!r} of {n} rows)")
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {k: [] for k in _NAMES}
    for d in range(len(names)):
        perm = rng.permutation(np.flatnonzero(index == d))
        a = int(share["train"][d])
        b = a + int(share["valid"][d])
        parts["train"].append(perm[:a])
        parts["valid"].append(perm[a:b])
        parts["test"].append(perm[b:b + int(share["test"][d])])
    rows = {k: np.sort(np.concatenate(v)) if v else np.zeros(0, np.int64) for k, v in parts.items()}
    return Split(rows["train"], rows["valid"], rows["test"], n=n, seed=int(seed))
