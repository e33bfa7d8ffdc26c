"""Train / validation / test splits of dataset rows: random with a seed, saved as JSON.

Each row (one geometry with all its fidelities) goes to exactly one split, so no geometry
is ever in two splits. Sizes are counts (int) or fractions of n (float in [0, 1]);
``test=None`` means "all remaining rows".
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config_checks import check_number
from ..errors import ConfigError, DataError
from ..fileio import write_json_atomic

_NAMES = ("train", "valid", "test")


@dataclass
class SplitConfig:
    """The ``split:`` section of a run: counts (int) or fractions (float in (0, 1]) per
    split.

    ``test: null`` puts every row not in train/valid into test. ``file`` loads a saved
    split (JSON written by a previous run) instead of drawing one.
    """

    train: int | float = 0.8
    valid: int | float = 0.1
    test: int | float | None = None
    seed: int = 0
    file: str | None = None

    def __post_init__(self) -> None:
        for name in _NAMES:
            value = getattr(self, name)
            check_number(value, f"split.{name}", minimum=0, optional=name == "test")
            if isinstance(value, float) and value > 1:
                raise ConfigError(f"split.{name}: a fraction must be at most 1, got {value} "
                                  "(write a count as an integer)")
        check_number(self.seed, "split.seed", minimum=0, integer=True)
        if self.file is not None and not isinstance(self.file, str):
            raise ConfigError(f"split.file must be a path, got {self.file!r}")


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

    def to_dict(self) -> dict:
        """JSON-ready dict."""
        return {"n": self.n, "seed": self.seed,
                **{name: getattr(self, name).tolist() for name in _NAMES}}

    def save(self, path: str | Path) -> Path:
        """Write JSON atomically."""
        return write_json_atomic(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> Split:
        """Read a split written by :meth:`save`."""
        path = Path(path)
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
