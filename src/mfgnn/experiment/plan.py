"""Which experiments to run, named as in the paper (Messerly et al., Table 1).

``SF-<high>/E``, ``SF-<high>/EF`` (only with high-level forces), ``MF-<low>/E-<high>/E``,
``MF-<low>/EF-<high>/E``, ``MF-<low>/EF-<high>/EF`` (only with high-level forces) and
``SF-<low>/EF``. Every MF experiment runs once per head mode, the mode in brackets:
``MF-mp2/EF-ccsdt/E[delta]``. That matrix is the ``mfl`` paradigm (multi-fidelity
learning); the others train the same labels in stages (:mod:`mfgnn.experiment.paradigms`):

* ``tl``: ``TL-<low>/EF→<high>/E``, pre-training on the low level, fine-tuning on the
  high one;
* ``frozen``: ``Frozen-<low>/EF→<high>/E``, the same with the trunk frozen in the second
  stage: the high level is the low model plus a correction linear in its features;
* ``delta``: ``Δ-<low>/EF+<high>/E``, a low model plus a correction model of
  E_high − E_low;
* ``reptile``: ``Reptile-k<k>-<low>/EF,<high>/E``, Reptile over the two levels' tasks,
  then fine-tuning on the high level.

Each needs low-level forces; without them it is skipped with a message.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config_checks import check_choice
from ..errors import ConfigError
from ..nn import HEAD_MODES

#: Training paradigms of ``mfgnn experiment --paradigms`` (``mfl``: the matrix).
PARADIGMS = ("mfl", "tl", "frozen", "delta", "reptile")


@dataclass(frozen=True)
class Experiment:
    """One training recipe: which labels of which fidelity, and the head mode."""

    name: str
    labels: dict
    heads: str = "independent"
    multi_fidelity: bool = False
    paradigm: str = "mfl"

    @property
    def folder(self) -> str:
        """A file-system-safe (ASCII) name."""
        name = self.name.replace("/", "_").replace("[", "_").replace("]", "")
        return name.replace("→", "-to-").replace("Δ", "Delta").replace(",", "+")


def check_paradigms(paradigms: tuple[str, ...]) -> None:
    """ConfigError for an unknown paradigm name (listing the valid ones) or none."""
    if not paradigms:
        raise ConfigError(f"--paradigms: name at least one of {', '.join(PARADIGMS)}")
    for name in paradigms:
        check_choice(name, PARADIGMS, "--paradigms", "paradigm")


def plan_paradigms(low: str, high: str, low_has_forces: bool,
                   paradigms: tuple[str, ...], reptile_k: int = 5,
                   skipped: list[str] | None = None) -> list[Experiment]:
    """One experiment per staged paradigm of ``paradigms`` (``mfl`` is the matrix, see
    :func:`plan_experiments`), in the order of :data:`PARADIGMS`. A paradigm the data
    cannot run (no low-level forces) is left out and its reason appended to
    ``skipped``."""
    check_paradigms(paradigms)
    labels = {low: ["energy", "forces"], high: ["energy"]}
    names = {"tl": f"TL-{low}/EF→{high}/E", "frozen": f"Frozen-{low}/EF→{high}/E",
             "delta": f"Δ-{low}/EF+{high}/E",
             "reptile": f"Reptile-k{reptile_k}-{low}/EF,{high}/E"}
    plan = []
    for paradigm in PARADIGMS[1:]:
        if paradigm not in paradigms:
            continue
        if not low_has_forces:
            if skipped is not None:
                skipped.append(f"skipping {paradigm}: {names[paradigm]} needs {low} forces, "
                               "which the data does not have")
            continue
        plan.append(Experiment(names[paradigm], dict(labels), multi_fidelity=True,
                               paradigm=paradigm))
    return plan


def plan_experiments(low: str, high: str, high_has_forces: bool,
                     low_has_forces: bool = True,
                     heads: tuple[str, ...] = ("independent", "delta", "tethered"),
                     only: tuple[str, ...] | None = None,
                     paradigms: tuple[str, ...] = ("mfl",), reptile_k: int = 5,
                     skipped: list[str] | None = None) -> list[Experiment]:
    """The experiments of ``paradigms`` for one low and one high fidelity: the matrix
    (``mfl``) and then one experiment per staged paradigm (:func:`plan_paradigms`).

    Experiments that need labels the data does not have are left out (no high-level
    forces: no ``.../<high>/EF``; no low-level forces: no ``<low>/EF``, no staged
    paradigm; the reasons of skipped paradigms go to ``skipped``). ``only`` keeps the
    named experiments of the matrix (in matrix order; the staged paradigms' experiments
    are chosen by ``paradigms`` and always kept); a name that is not in the plan is an
    error that lists the plan.
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
    check_paradigms(paradigms)
    if "mfl" not in paradigms:
        plan = []
    plan += plan_paradigms(low, high, low_has_forces, paradigms, reptile_k, skipped)
    if only is None:
        return plan
    names = [e.name for e in plan]
    unknown = [name for name in only if name not in names]
    if unknown:
        raise ConfigError(f"--experiments: {', '.join(map(repr, unknown))} not in the "
                          f"matrix of this data and --heads (it has: {', '.join(names)})")
    return [e for e in plan if e.name in only or e.paradigm != "mfl"]
