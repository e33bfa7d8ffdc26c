"""One fidelity order (lowest level first) for several datasets.

Each dataset of a spec lists its fidelities from the lowest to the highest level. When a
spec holds several datasets, the run needs one order of the union of their fidelities:

* a top-level ``order:`` gives it explicitly (it must list every fidelity once; it wins
  over the datasets' own orders);
* otherwise the datasets' orders are merged into one chain. Two datasets that order two
  fidelities differently, or a merge that leaves the place of a fidelity open (e.g. one
  dataset holds only ``mp2``, another only ``ccsdt``), raise a
  :class:`~mfgnn.errors.ConfigError` naming the datasets and asking for ``order:``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import combinations

from ..config_checks import closest
from ..errors import ConfigError


def _union(orders: Mapping[str, Sequence[str]]) -> list[str]:
    """Every fidelity once, in order of first appearance."""
    seen: dict[str, None] = {}
    for names in orders.values():
        for name in names:
            seen.setdefault(name, None)
    return list(seen)


def _holders(orders: Mapping[str, Sequence[str]], fidelity: str) -> list[str]:
    return [d for d, names in orders.items() if fidelity in names]


def _ask_for_order(union: list[str]) -> str:
    return (f"add a top-level 'order: [{', '.join(union)}]' listing every fidelity from "
            "the lowest to the highest level")


def check_explicit_order(order: Sequence[str], orders: Mapping[str, Sequence[str]],
                         where: str) -> tuple[str, ...]:
    """The declared ``order`` when it lists every fidelity of ``orders`` exactly once."""
    union = _union(orders)
    if isinstance(order, str) or not isinstance(order, Sequence):
        raise ConfigError(f"{where}: 'order' must be a list of fidelity names, lowest level "
                          f"first, got {order!r}")
    seen: set[str] = set()
    for name in order:
        if not isinstance(name, str) or name not in union:
            raise ConfigError(f"{where}: order: fidelity {name!r} is in no dataset"
                              f"{closest(str(name), union)} (the datasets have: "
                              f"{', '.join(union)})")
        if name in seen:
            raise ConfigError(f"{where}: order: fidelity {name!r} is listed twice")
        seen.add(name)
    missing = [f for f in union if f not in seen]
    if missing:
        raise ConfigError(
            f"{where}: order: fidelity {missing[0]!r} (dataset "
            f"{', '.join(map(repr, _holders(orders, missing[0])))}) is missing; 'order' "
            "must list every fidelity of every dataset")
    return tuple(order)


def merge_orders(orders: Mapping[str, Sequence[str]], order: Sequence[str] | None = None,
                 where: str = "dataset spec") -> tuple[str, ...]:
    """The fidelity order of several datasets, lowest level first.

    Args:
        orders: dataset name -> its fidelity names, lowest level first.
        order: the spec's explicit ``order:`` (None: merge ``orders``).
        where: the spec, for error messages.

    Raises:
        ConfigError: ``order`` does not list every fidelity exactly once; two datasets
            order fidelities differently; the merge is ambiguous (both datasets named).
    """
    if order is not None:
        return check_explicit_order(order, orders, where)
    union = _union(orders)
    if len(orders) <= 1:
        return tuple(union)
    position = {d: {f: i for i, f in enumerate(names)} for d, names in orders.items()}
    for a, b in combinations(orders, 2):
        common = [f for f in orders[a] if f in position[b]]
        for x, y in combinations(common, 2):  # x before y in a
            if position[b][x] > position[b][y]:
                raise ConfigError(
                    f"{where}: datasets {a!r} and {b!r} order their fidelities differently "
                    f"({x!r} below {y!r} in {a!r}, {y!r} below {x!r} in {b!r}); "
                    f"{_ask_for_order(union)}")
    after: dict[str, set[str]] = {f: set() for f in union}
    n_before = {f: 0 for f in union}
    for names in orders.values():
        for lo, hi in zip(names[:-1], names[1:]):
            if hi not in after[lo]:
                after[lo].add(hi)
                n_before[hi] += 1
    chain: list[str] = []
    while len(chain) < len(union):
        ready = [f for f in union if n_before[f] == 0 and f not in chain]
        if len(ready) != 1:
            left = ready if ready else [f for f in union if f not in chain]
            datasets = sorted({d for f in left for d in _holders(orders, f)},
                              key=list(orders).index)
            what = (f"fidelities {', '.join(map(repr, left))} are never ordered against each "
                    "other" if ready else f"the orders of fidelities {', '.join(map(repr, left))} "
                    "form a cycle")
            raise ConfigError(
                f"{where}: cannot merge the fidelity orders of datasets "
                f"{', '.join(map(repr, datasets))}: {what}; {_ask_for_order(union)}")
        chain.append(ready[0])
        for hi in after[ready[0]]:
            n_before[hi] -= 1
    return tuple(chain)
