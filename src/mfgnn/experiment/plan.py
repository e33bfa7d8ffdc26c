"""Which experiments to run, named as in the paper (Messerly et al., Table 1).

``SF-<high>/E``, ``SF-<high>/EF`` (only with high-level forces), ``MF-<low>/E-<high>/E``,
``MF-<low>/EF-<high>/E``, ``MF-<low>/EF-<high>/EF`` (only with high-level forces) and
``SF-<low>/EF``. Every MF experiment runs once per head mode, the mode in brackets:
``MF-mp2/EF-ccsdt/E[delta]``.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ConfigError
from ..nn import HEAD_MODES


@dataclass(frozen=True)
class Experiment:
    """One training recipe: which labels of which fidelity, and the head mode."""

    name: str
    labels: dict
    heads: str = "independent"
    multi_fidelity: bool = False

    @property
    def folder(self) -> str:
        """A file-system-safe name."""
        return self.name.replace("/", "_").replace("[", "_").replace("]", "")


def plan_experiments(low: str, high: str, high_has_forces: bool,
                     low_has_forces: bool = True,
                     heads: tuple[str, ...] = ("independent", "delta", "tethered"),
                     only: tuple[str, ...] | None = None) -> list[Experiment]:
    """The experiment matrix for one low and one high fidelity.

    Experiments that need labels the data does not have are left out (no high-level
    forces: no ``.../<high>/EF``; no low-level forces: no ``<low>/EF``). ``only`` keeps
    the named experiments (in matrix order); a name that is not in the matrix is an error
    that lists the matrix.
    """
    if low == high:
        raise ConfigError(f"--low and --high must differ (both {low!r})")
    for mode in heads:
        if mode not in HEAD_MODES:
            raise ConfigError(f"--heads: unknown head mode {mode!r} "
                              f"(allowed: {', '.join(HEAD_MODES)})")
    E, EF = ["energy"], ["energy", "forces"]
    plan = [Experiment(f"SF-{high}/E", {high: E})]
    if high_has_forces:
        plan.append(Experiment(f"SF-{high}/EF", {high: EF}))
    mf = [(f"MF-{low}/E-{high}/E", {low: E, high: E})]
    if low_has_forces:
        mf.append((f"MF-{low}/EF-{high}/E", {low: EF, high: E}))
        if high_has_forces:
            mf.append((f"MF-{low}/EF-{high}/EF", {low: EF, high: EF}))
    for base, labels in mf:
        for mode in heads:
            plan.append(Experiment(f"{base}[{mode}]", labels, mode, multi_fidelity=True))
    if low_has_forces:
        plan.append(Experiment(f"SF-{low}/EF", {low: EF}))
    if only is None:
        return plan
    names = [e.name for e in plan]
    unknown = [name for name in only if name not in names]
    if unknown:
        raise ConfigError(f"--experiments: {', '.join(map(repr, unknown))} not in the "
                          f"matrix of this data and --heads (it has: {', '.join(names)})")
    return [e for e in plan if e.name in only]
