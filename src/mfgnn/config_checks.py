"""One way to validate every configuration section.

Each section is a dataclass that checks its own values in ``__post_init__``; mappings
from YAML become sections through :func:`build_section`, which rejects unknown keys with
:func:`check_keys` (naming the key, the closest valid one, and every allowed key). The
value checks below are shared so that every section words its errors the same way.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

from .errors import ConfigError

T = TypeVar("T")


def closest(key: str, allowed: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` for the closest allowed name, or ``""``."""
    match = difflib.get_close_matches(str(key), list(allowed), n=1, cutoff=0.5)
    return f"; did you mean {match[0]!r}?" if match else ""


def check_keys(mapping: Mapping[str, Any], allowed: type | Iterable[str], where: str) -> None:
    """ConfigError for the first key of ``mapping`` that is not a field of the dataclass
    ``allowed`` (or not in the iterable of names ``allowed``)."""
    if not isinstance(mapping, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {type(mapping).__name__}")
    if isinstance(allowed, type) and dataclasses.is_dataclass(allowed):
        names = [f.name for f in dataclasses.fields(allowed) if f.init]
    else:
        names = list(allowed)
    for key in mapping:
        if key not in names:
            raise ConfigError(f"{where}: unknown key {key!r}{closest(key, names)} "
                              f"(allowed: {', '.join(names)})")


def build_section(cls: type[T], values: Any, where: str) -> T:
    """Make the dataclass ``cls`` from a mapping (None gives the defaults); an instance
    passes through; unknown keys are refused by :func:`check_keys`."""
    if values is None:
        return cls()
    if isinstance(values, cls):
        return values
    check_keys(values, cls, where)
    return cls(**dict(values))


def check_choice(value: Any, choices: Iterable[str], where: str, what: str) -> None:
    """ConfigError ``"{where}: unknown {what} 'x'; did you mean 'y'? choose one of …"``
    unless ``value`` is one of ``choices``."""
    choices = list(choices)
    if not isinstance(value, str) or value not in choices:
        raise ConfigError(f"{where}: unknown {what} {value!r}{closest(str(value), choices)} "
                          f"(choose one of {', '.join(choices)})")


def check_number(value: Any, where: str, minimum: float | None = None,
                 strict: bool = False, integer: bool = False,
                 optional: bool = False) -> None:
    """ConfigError unless ``value`` is a number (an int when ``integer``) ≥ ``minimum``
    (> when ``strict``); None passes when ``optional``."""
    if value is None and optional:
        return
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds):
        what = "an integer" if integer else "a number"
        raise ConfigError(f"{where} must be {what}, got {value!r}")
    if minimum is not None and (value <= minimum if strict else value < minimum):
        raise ConfigError(f"{where} must be {'>' if strict else '>='} {minimum}, got {value!r}")
