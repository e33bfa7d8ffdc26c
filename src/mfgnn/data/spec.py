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

Several datasets (rows concatenated; a fidelity a dataset lacks is NaN there)::

    datasets:
      h2co:
        fidelities:
          mp2: {path: .../ch2o_mp2_avtz_3601.npz, energy_unit: eV}
          ccsdt: {path: .../ch2o_cc_avtz_3601.npz, energy_unit: eV}
      hcooh:
        fidelities:
          mp2: {path: .../meuwly_db_HCOOH_MP2.npz, energy_unit: eV}
    order: [mp2, ccsdt]    # optional: needed when the datasets' orders do not merge

Within a dataset every file holds the same geometries row by row; the fidelities of all
datasets are ordered by ``order:`` or by merging the datasets' orders
(:func:`~mfgnn.data.fidelity_order.merge_orders`). The single-dataset form above means one
dataset named by ``name``, else the spec file's stem, else ``data``.

Relative paths are relative to the spec file (or to ``base_dir`` / the working directory
for a spec given as a dict). ``energy_key`` / ``forces_key`` are shorthands for
``keys.energy`` / ``keys.forces``; ``forces: null`` (or ``forces_key: null``) declares a
fidelity without forces.
Parsing errors raise :class:`mfgnn.errors.ConfigError`, naming the key and suggesting the
closest valid one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..config_checks import check_choice, check_keys
from ..errors import ConfigError
from ..fileio import write_text_atomic
from ..units import ENERGY_UNITS, LENGTH_UNITS
from .fidelity_order import merge_orders

FORMATS = ("npz", "ani-h5", "extxyz")
_SUFFIX_FORMATS = {".npz": "npz", ".h5": "ani-h5", ".hdf5": "ani-h5", ".hdf": "ani-h5",
                   ".xyz": "extxyz", ".extxyz": "extxyz"}
_TOP_KEYS = ("fidelities", "datasets", "order", "name", "description")
_DATASET_KEYS = ("fidelities", "description")
#: Name of the one dataset of a single-dataset spec given as a mapping without ``name``.
DEFAULT_DATASET_NAME = "data"
_FIDELITY_KEYS = ("path", "format", "energy_unit", "length_unit", "keys", "energy_key",
                  "forces_key", "forces")
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


def default_dataset_name(name: str | None, source: Path | None) -> str:
    """Name of the one dataset of a single-dataset spec: ``name``, else the spec file's
    stem, else :data:`DEFAULT_DATASET_NAME`."""
    if name:
        return name
    if source is not None and Path(source).stem:
        return Path(source).stem
    return DEFAULT_DATASET_NAME


@dataclass
class SourceSpec:
    """One dataset of a spec: fidelities (lowest level first) whose files hold the same
    geometries row by row."""

    name: str
    fidelities: tuple[FidelitySpec, ...]
    description: str | None = None

    @property
    def names(self) -> tuple[str, ...]:
        """Fidelity names of this dataset, lowest level first."""
        return tuple(f.name for f in self.fidelities)

    def to_dict(self, relative_to: Path | None = None) -> dict[str, Any]:
        """Plain dict (YAML-ready) of the dataset's entry under ``datasets:``."""
        out: dict[str, Any] = {}
        if self.description:
            out["description"] = self.description
        out["fidelities"] = {f.name: f.to_dict(relative_to) for f in self.fidelities}
        return out


@dataclass
class DatasetSpec:
    """A parsed dataset spec: one or more datasets whose rows are concatenated.

    Give either ``fidelities`` (one dataset, named by :func:`default_dataset_name`) or
    ``datasets``; the other is filled in.

    Attributes:
        fidelities: every :class:`FidelitySpec` of every dataset, in dataset order (a
            fidelity name repeats when several datasets hold it; :attr:`names` is the
            merged order).
        source: the YAML file, when read from one.
        name, description: optional.
        datasets: the datasets, in spec order (their rows are concatenated in this order).
        order: the declared top-level ``order:`` (None: merged from the datasets).
    """

    fidelities: tuple[FidelitySpec, ...] = ()
    source: Path | None = None
    name: str | None = None
    description: str | None = None
    datasets: tuple[SourceSpec, ...] = ()
    order: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        where = str(self.source) if self.source is not None else "dataset spec"
        if not self.datasets:
            if not self.fidelities:
                raise ConfigError(f"{where}: a dataset spec needs 'fidelities' or 'datasets'")
            self.datasets = (SourceSpec(default_dataset_name(self.name, self.source),
                                        tuple(self.fidelities)),)
        self.datasets = tuple(self.datasets)
        flat = tuple(f for d in self.datasets for f in d.fidelities)
        if self.fidelities and tuple(self.fidelities) != flat:
            raise ConfigError(f"{where}: give either 'fidelities' (one dataset) or "
                              "'datasets', not both")
        self.fidelities = flat
        names = [d.name for d in self.datasets]
        if len(set(names)) != len(names):
            raise ConfigError(f"{where}: dataset names must be unique, got {names}")
        for d in self.datasets:
            if not d.fidelities:
                raise ConfigError(f"{where}: dataset {d.name!r} has no fidelities")
            if len(set(d.names)) != len(d.names):
                raise ConfigError(f"{where}: dataset {d.name!r} lists a fidelity twice")
        if self.order is not None and not isinstance(self.order, str):
            self.order = tuple(self.order)
        self._names = merge_orders({d.name: d.names for d in self.datasets}, self.order, where)

    @property
    def names(self) -> tuple[str, ...]:
        """Fidelity names of all datasets in one order, lowest level first."""
        return self._names

    @property
    def dataset_names(self) -> tuple[str, ...]:
        """Dataset names, in the order their rows are concatenated."""
        return tuple(d.name for d in self.datasets)

    def dataset(self, name: str) -> SourceSpec:
        """The dataset called ``name`` (ConfigError naming the valid ones otherwise)."""
        for d in self.datasets:
            if d.name == name:
                return d
        check_choice(name, self.dataset_names, "dataset spec", "dataset")
        raise AssertionError(name)  # check_choice raised

    def to_dict(self, relative_to: Path | None = None) -> dict[str, Any]:
        """Plain dict (YAML-ready); paths relative to ``relative_to`` when given. A single
        dataset named as :func:`default_dataset_name` would name it is written in the
        single-dataset form (``fidelities:`` at the top)."""
        out: dict[str, Any] = {}
        if self.name:
            out["name"] = self.name
        if self.description:
            out["description"] = self.description
        single = (len(self.datasets) == 1 and not self.datasets[0].description
                  and self.datasets[0].name == default_dataset_name(self.name, self.source))
        if single:
            out["fidelities"] = {f.name: f.to_dict(relative_to) for f in self.fidelities}
        else:
            out["datasets"] = {d.name: d.to_dict(relative_to) for d in self.datasets}
        if self.order is not None:
            out["order"] = list(self.order)
        return out

    def save(self, path: str | Path) -> Path:
        """Write the spec as YAML (atomically), paths relative to the spec's folder."""
        path = Path(path)
        text = yaml.safe_dump(self.to_dict(path.parent.resolve()), sort_keys=False)
        return write_text_atomic(path, text)


def _unit(value: Any, table: dict[str, float], what: str, where: str) -> str:
    check_choice(value, list(table), where, what)
    return value


def guess_format(path: Path) -> str | None:
    """Format from the file suffix (``.npz``, ``.h5``/``.hdf5``, ``.xyz``/``.extxyz``)."""
    return _SUFFIX_FORMATS.get(path.suffix.lower())


def _named_entry(name: Any, d: Any, where: str, kind: str, needs: str, keys) -> str:
    """Check one named entry of a spec (a fidelity or a dataset): a non-empty name, a
    mapping, known keys. Returns the entry's place for messages."""
    where = f"{where}: {kind} {name!r}"
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{where}: {kind} names must be non-empty strings")
    if not isinstance(d, dict):
        raise ConfigError(f"{where}: expected a mapping with {needs}, got {d!r}")
    check_keys(d, keys, where)
    return where


def _parse_fidelity(name: Any, d: Any, base_dir: Path, where: str) -> FidelitySpec:
    where = _named_entry(name, d, where, "fidelity", "at least 'path'", _FIDELITY_KEYS)
    if "path" not in d or not isinstance(d["path"], str | os.PathLike) or not str(d["path"]):
        raise ConfigError(f"{where}: 'path' (the data file) is required")
    path = Path(d["path"]).expanduser()
    path = path if path.is_absolute() else base_dir / path
    fmt = d.get("format") or guess_format(path)
    if fmt is None:
        raise ConfigError(
            f"{where}: cannot guess the format of {path.name!r} from its suffix; "
            f"add 'format' ({', '.join(FORMATS)})")
    check_choice(fmt, FORMATS, where, "format")
    declared = "energy_unit" in d
    energy_unit = _unit(d.get("energy_unit", DEFAULT_ENERGY_UNIT[fmt]), ENERGY_UNITS,
                        "energy_unit", where)
    length_unit = _unit(d.get("length_unit", "Angstrom"), LENGTH_UNITS, "length_unit", where)
    keys_in = d.get("keys") or {}
    if not isinstance(keys_in, dict):
        raise ConfigError(f"{where}: 'keys' must be a mapping, got {keys_in!r}")
    check_keys(keys_in, _KEY_NAMES, f"{where}: keys")
    keys: dict[str, str | None] = {}
    for k, v in keys_in.items():
        if v is None and k != "forces":
            raise ConfigError(f"{where}: keys.{k} cannot be null (only 'forces' can)")
        if v is not None and not isinstance(v, str):
            raise ConfigError(f"{where}: keys.{k} must be a string, got {v!r}")
        keys[k] = v
    for short, k in (("energy_key", "energy"), ("forces_key", "forces"), ("forces", "forces")):
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


def _parse_fidelities(fids: Any, base: Path, where: str) -> tuple[FidelitySpec, ...]:
    if not isinstance(fids, dict) or not fids:
        raise ConfigError(f"{where}: 'fidelities' must be a non-empty mapping "
                          "(name -> {path, format, energy_unit, ...}), lowest level first")
    return tuple(_parse_fidelity(k, v, base, where) for k, v in fids.items())


def _parse_dataset(name: Any, d: Any, base: Path, where: str) -> SourceSpec:
    where = _named_entry(name, d, where, "dataset", "'fidelities'", _DATASET_KEYS)
    if d.get("description") is not None and not isinstance(d["description"], str):
        raise ConfigError(f"{where}: 'description' must be a string")
    return SourceSpec(name=name, fidelities=_parse_fidelities(d.get("fidelities"), base, where),
                      description=d.get("description"))


def parse_spec(obj: dict, base_dir: str | Path | None = None,
               source: Path | None = None) -> DatasetSpec:
    """Parse a spec dict (single-dataset ``fidelities:`` or multi-dataset ``datasets:``
    form); relative paths are resolved against ``base_dir`` (default: the working
    directory)."""
    where = str(source) if source is not None else "dataset spec"
    if not isinstance(obj, dict):
        raise ConfigError(f"{where}: expected a mapping with 'fidelities' or 'datasets', "
                          f"got {type(obj).__name__}")
    check_keys(obj, _TOP_KEYS, where)
    for key in ("name", "description"):
        if obj.get(key) is not None and not isinstance(obj[key], str):
            raise ConfigError(f"{where}: {key!r} must be a string")
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    order = obj.get("order")
    if order is not None and (isinstance(order, str) or not isinstance(order, list)):
        raise ConfigError(f"{where}: 'order' must be a list of fidelity names, lowest level "
                          f"first, got {order!r}")
    common = {"source": source, "name": obj.get("name"), "description": obj.get("description"),
              "order": None if order is None else tuple(order)}
    if "datasets" in obj:
        if "fidelities" in obj:
            raise ConfigError(f"{where}: give either 'fidelities' (one dataset) or 'datasets' "
                              "(several), not both")
        sets = obj["datasets"]
        if not isinstance(sets, dict) or not sets:
            raise ConfigError(f"{where}: 'datasets' must be a non-empty mapping "
                              "(name -> {fidelities: {...}})")
        parsed = tuple(_parse_dataset(k, v, base, where) for k, v in sets.items())
        return DatasetSpec(datasets=parsed, **common)
    return DatasetSpec(fidelities=_parse_fidelities(obj.get("fidelities"), base, where),
                       **common)


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
