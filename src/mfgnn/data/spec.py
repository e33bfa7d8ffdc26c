"""Dataset spec: the YAML file every command uses to name a multi-fidelity dataset.

Example::

    fidelities:            # ordered from lowest to highest level
      mp2:
        path: ../shared/data/mp2_ccsdt/ch2o_mp2_avtz_3601.npz
        format: npz        # npz | ani-h5 | extxyz; guessed from the suffix when absent
        energy_unit: eV    # eV | hartree | kcal/mol (also meV, kJ/mol)
        length_unit: Angstrom   # optional: Angstrom | bohr
        keys: {positions: R, numbers: Z, energy: E, forces: F}   # optional
      ccsdt:
        path: ../shared/data/mp2_ccsdt/ch2o_cc_avtz_3601.npz
        energy_unit: eV

Relative paths are relative to the spec file (or to ``base_dir`` / the working directory
for a spec given as a dict). ``energy_key`` / ``forces_key`` are shorthands for
``keys.energy`` / ``keys.forces``; ``forces: null`` declares a fidelity without forces.
Parsing errors raise :class:`mfgnn.errors.ConfigError`, naming the key and suggesting the
closest valid one.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError
from ..fileio import write_text_atomic
from ..units import ENERGY_UNITS, LENGTH_UNITS

FORMATS = ("npz", "ani-h5", "extxyz")
_SUFFIX_FORMATS = {".npz": "npz", ".h5": "ani-h5", ".hdf5": "ani-h5", ".hdf": "ani-h5",
                   ".xyz": "extxyz", ".extxyz": "extxyz"}
_TOP_KEYS = ("fidelities", "name", "description")
_FIDELITY_KEYS = ("path", "format", "energy_unit", "length_unit", "keys", "energy_key",
                  "forces_key")
_KEY_NAMES = ("positions", "numbers", "energy", "forces")
#: Default energy unit per format (the ANI layout defines hartree; others assume eV).
DEFAULT_ENERGY_UNIT = {"npz": "eV", "ani-h5": "hartree", "extxyz": "eV"}


@dataclass
class FidelitySpec:
    """One fidelity (level of theory) of a dataset: where its labels are and in which units.

    Attributes:
        name: fidelity name (the spec's mapping key).
        path: data file (absolute after parsing).
        format: ``npz`` | ``ani-h5`` | ``extxyz``.
        energy_unit: unit of the stored energies (converted to eV on load).
        length_unit: unit of the stored positions (converted to Å); forces are in
            energy_unit / length_unit.
        keys: explicit field names given in the spec (``positions``, ``numbers``,
            ``energy``, ``forces``); a value of None disables the field (only
            ``forces``). Fields not given are detected from the file.
        energy_unit_declared: False when ``energy_unit`` was not in the spec (default used).
    """

    name: str
    path: Path
    format: str
    energy_unit: str = "eV"
    length_unit: str = "Angstrom"
    keys: dict[str, str | None] = field(default_factory=dict)
    energy_unit_declared: bool = True

    def to_dict(self, relative_to: Path | None = None) -> dict[str, Any]:
        """Plain dict for YAML; the path relative to ``relative_to`` when given."""
        path = str(self.path)
        if relative_to is not None:
            try:
                path = os.path.relpath(self.path, relative_to)
            except ValueError:  # different drive
                path = str(self.path)
        out: dict[str, Any] = {"path": Path(path).as_posix(), "format": self.format,
                               "energy_unit": self.energy_unit}
        if self.length_unit not in ("Angstrom", "A", "Å"):
            out["length_unit"] = self.length_unit
        if self.keys:
            out["keys"] = dict(self.keys)
        return out


@dataclass
class DatasetSpec:
    """A parsed dataset spec: fidelities ordered from the lowest to the highest level."""

    fidelities: tuple[FidelitySpec, ...]
    source: Path | None = None
    name: str | None = None
    description: str | None = None

    @property
    def names(self) -> tuple[str, ...]:
        """Fidelity names in order, lowest level first."""
        return tuple(f.name for f in self.fidelities)

    def to_dict(self, relative_to: Path | None = None) -> dict[str, Any]:
        """Plain dict (YAML-ready); paths relative to ``relative_to`` when given."""
        out: dict[str, Any] = {}
        if self.name:
            out["name"] = self.name
        if self.description:
            out["description"] = self.description
        out["fidelities"] = {f.name: f.to_dict(relative_to) for f in self.fidelities}
        return out

    def save(self, path: str | Path) -> Path:
        """Write the spec as YAML (atomically), paths relative to the spec's folder."""
        path = Path(path)
        text = yaml.safe_dump(self.to_dict(path.parent.resolve()), sort_keys=False)
        return write_text_atomic(path, text)


def _suggest(key: str, valid: tuple[str, ...] | list[str]) -> str:
    close = difflib.get_close_matches(str(key), list(valid), n=1, cutoff=0.5)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"{hint}valid: {', '.join(valid)}"


def _check_keys(d: dict, valid: tuple[str, ...], where: str) -> None:
    for key in d:
        if key not in valid:
            raise ConfigError(f"{where}: unknown key {key!r}; {_suggest(key, valid)}")


def _unit(value: Any, table: dict[str, float], what: str, where: str) -> str:
    if not isinstance(value, str) or value not in table:
        raise ConfigError(f"{where}: unknown {what} {value!r}; {_suggest(str(value), list(table))}")
    return value


def guess_format(path: Path) -> str | None:
    """Format from the file suffix (``.npz``, ``.h5``/``.hdf5``, ``.xyz``/``.extxyz``)."""
    return _SUFFIX_FORMATS.get(path.suffix.lower())


def _parse_fidelity(name: Any, d: Any, base_dir: Path, where: str) -> FidelitySpec:
    where = f"{where}: fidelity {name!r}"
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{where}: fidelity names must be non-empty strings")
    if not isinstance(d, dict):
        raise ConfigError(f"{where}: expected a mapping with at least 'path', got {d!r}")
    _check_keys(d, _FIDELITY_KEYS, where)
    if "path" not in d or not isinstance(d["path"], str | os.PathLike) or not str(d["path"]):
        raise ConfigError(f"{where}: 'path' (the data file) is required")
    path = Path(d["path"]).expanduser()
    path = path if path.is_absolute() else base_dir / path
    fmt = d.get("format") or guess_format(path)
    if fmt is None:
        raise ConfigError(
            f"{where}: cannot guess the format of {path.name!r} from its suffix; "
            f"add 'format' ({', '.join(FORMATS)})")
    if fmt not in FORMATS:
        raise ConfigError(f"{where}: unknown format {fmt!r}; {_suggest(fmt, FORMATS)}")
    declared = "energy_unit" in d
    energy_unit = _unit(d.get("energy_unit", DEFAULT_ENERGY_UNIT[fmt]), ENERGY_UNITS,
                        "energy_unit", where)
    length_unit = _unit(d.get("length_unit", "Angstrom"), LENGTH_UNITS, "length_unit", where)
    keys_in = d.get("keys") or {}
    if not isinstance(keys_in, dict):
        raise ConfigError(f"{where}: 'keys' must be a mapping, got {keys_in!r}")
    _check_keys(keys_in, _KEY_NAMES, f"{where}: keys")
    keys: dict[str, str | None] = {}
    for k, v in keys_in.items():
        if v is None and k != "forces":
            raise ConfigError(f"{where}: keys.{k} cannot be null (only 'forces' can)")
        if v is not None and not isinstance(v, str):
            raise ConfigError(f"{where}: keys.{k} must be a string, got {v!r}")
        keys[k] = v
    for short, k in (("energy_key", "energy"), ("forces_key", "forces")):
        if short in d:
            v = d[short]
            if (v is None and k == "energy") or (v is not None and not isinstance(v, str)):
                raise ConfigError(f"{where}: {short} must be a string, got {v!r}")
            if k in keys and keys[k] != v:
                raise ConfigError(f"{where}: {short}={v!r} conflicts with keys.{k}={keys[k]!r}")
            keys[k] = v
    if fmt == "extxyz" and ({"positions", "numbers"} & set(keys)):
        raise ConfigError(f"{where}: extxyz positions and numbers come from ASE; "
                          "only keys.energy and keys.forces can be set")
    if fmt == "ani-h5" and "energy" not in keys:
        raise ConfigError(f"{where}: ani-h5 needs energy_key (e.g. 'wb97x_dz.energy')")
    return FidelitySpec(name=name, path=path.resolve(), format=fmt, energy_unit=energy_unit,
                        length_unit=length_unit, keys=keys, energy_unit_declared=declared)


def parse_spec(obj: dict, base_dir: str | Path | None = None,
               source: Path | None = None) -> DatasetSpec:
    """Parse a spec dict; relative paths are resolved against ``base_dir`` (default: the
    working directory)."""
    where = str(source) if source is not None else "dataset spec"
    if not isinstance(obj, dict):
        raise ConfigError(f"{where}: expected a mapping with 'fidelities', got {type(obj).__name__}")
    _check_keys(obj, _TOP_KEYS, where)
    fids = obj.get("fidelities")
    if not isinstance(fids, dict) or not fids:
        raise ConfigError(f"{where}: 'fidelities' must be a non-empty mapping "
                          "(name -> {path, format, energy_unit, ...}), lowest level first")
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    parsed = tuple(_parse_fidelity(k, v, base, where) for k, v in fids.items())
    for key in ("name", "description"):
        if obj.get(key) is not None and not isinstance(obj[key], str):
            raise ConfigError(f"{where}: {key!r} must be a string")
    return DatasetSpec(fidelities=parsed, source=source, name=obj.get("name"),
                       description=obj.get("description"))


def read_spec(spec: str | Path | dict | DatasetSpec) -> DatasetSpec:
    """A :class:`DatasetSpec` from a YAML file path, a dict or a DatasetSpec (returned as is)."""
    if isinstance(spec, DatasetSpec):
        return spec
    if isinstance(spec, dict):
        return parse_spec(spec)
    if not isinstance(spec, str | os.PathLike):
        raise ConfigError("dataset spec must be a path, dict or DatasetSpec, "
                          f"got {type(spec).__name__}")
    path = Path(spec).expanduser()
    if not path.is_file():
        raise ConfigError(f"dataset spec not found: {path}")
    try:
        obj = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    return parse_spec(obj, base_dir=path.resolve().parent, source=path)
