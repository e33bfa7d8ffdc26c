"""``mfgnn data summary SPEC [--json FILE]``: what a dataset spec holds, per dataset and
per fidelity.

Per dataset: structures, the fidelities it holds, elements, and the residual RMSE (eV per
structure) of its rows under the self-energies fitted on all datasets together (a
dataset whose energies use another reference stands out). Per fidelity: structures, how
many have an energy, how many have forces, elements present (in the rows with that
fidelity's energy), the datasets holding it, self-energies fitted on all those rows of
every dataset (eV per atom), the rank of the fit's element-count matrix and its residual
RMSE (eV per structure). Errors are raised as :class:`mfgnn.errors.DataError` /
:class:`mfgnn.errors.ConfigError` for the command line to print.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from ase.data import chemical_symbols

from ..errors import ConfigError
from ..fileio import write_json_atomic
from .loading import load_dataset
from .self_energy import fit_self_energies
from .spec import DatasetSpec, read_spec


def _symbol(z: int) -> str:
    return chemical_symbols[z] if 0 < z < len(chemical_symbols) else str(z)


def _num(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


def _rmse(x: np.ndarray) -> float | None:
    x = x[np.isfinite(x)]
    return float(np.sqrt(np.mean(x * x))) if x.size else None


def _elements(ds, present: np.ndarray) -> list[int]:
    return [int(z) for z, p in zip(ds.elements, present) if p]


def summarize(spec: str | Path | dict | DatasetSpec) -> dict:
    """Summary of the dataset a spec names, as a JSON-ready dict (energies in eV)."""
    parsed = read_spec(spec)
    ds = load_dataset(parsed)
    counts = ds.element_counts()
    se = fit_self_energies(ds)
    residual = ds.energies - se.energy(counts)
    n_atoms = ds.n_atoms
    datasets = []
    for d in parsed.datasets:
        rows = ds.rows_of(d.name)
        elements = _elements(ds, counts[rows].sum(axis=0) > 0)
        cols = {f: ds.fidelities.index(f) for f in d.names}
        datasets.append({
            "name": d.name,
            "n_structures": len(rows),
            "fidelities": list(d.names),
            "elements": elements,
            "element_symbols": [_symbol(z) for z in elements],
            "n_energy": {f: int(np.isfinite(ds.energies[rows, k]).sum()) for f, k in cols.items()},
            "n_forces": {f: int(ds.has_force_rows[rows, k].sum()) for f, k in cols.items()},
            "residual_rmse_eV": {f: _rmse(residual[rows, k]) for f, k in cols.items()},
        })
    fidelities = []
    for k, name in enumerate(ds.fidelities):
        sources = [(d.name, f) for d in parsed.datasets for f in d.fidelities if f.name == name]
        first = sources[0][1]
        has_e = np.isfinite(ds.energies[:, k])
        present = counts[has_e].sum(axis=0) > 0
        elements = _elements(ds, present)
        fidelities.append({
            "name": name,
            "path": str(first.path),
            "format": first.format,
            "energy_unit": first.energy_unit,
            "datasets": [d for d, _ in sources],
            "sources": [{"dataset": d, "path": str(f.path), "format": f.format,
                         "energy_unit": f.energy_unit} for d, f in sources],
            "n_structures": len(ds),
            "n_energy": int(has_e.sum()),
            "n_forces": int(ds.has_force_rows[:, k].sum()),
            "has_forces": bool(ds.has_forces[name]),
            "elements": elements,
            "element_symbols": [_symbol(z) for z in elements],
            "self_energies_eV": {_symbol(z): float(v) for z, v, p
                                 in zip(ds.elements, se.values[k], present) if p},
            "self_energy_rank": se.rank[name],
            "self_energy_rows": se.n_rows[name],
            "residual_rmse_eV": _num(se.residual_rmse[name]),
        })
    return {
        "spec": str(parsed.source) if parsed.source is not None else None,
        "name": parsed.name,
        "n_structures": len(ds),
        "atoms_per_structure": {"min": int(n_atoms.min()), "max": int(n_atoms.max()),
                                "mean": float(n_atoms.mean())},
        "elements": [int(z) for z in ds.elements],
        "element_symbols": [_symbol(z) for z in ds.elements],
        "datasets": datasets,
        "fidelities": fidelities,
        "provenance": list(ds.provenance),
    }


def _table(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]


def _eV(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.4g}"


def format_summary(d: dict) -> str:
    """Human-readable tables of a :func:`summarize` dict."""
    a = d["atoms_per_structure"]
    atoms = str(a["min"]) if a["min"] == a["max"] else f"{a['min']}-{a['max']}"
    title = d.get("name") or d.get("spec") or "dataset"
    sets = d.get("datasets") or []
    lines = [f"{title}: {d['n_structures']} structures in {len(sets) or 1} "
             f"dataset{'s' if len(sets) > 1 else ''}, {atoms} atoms each, "
             f"elements {' '.join(d['element_symbols'])}", ""]
    if sets:
        rows = [("dataset", "structures", "fidelities", "elements", "residual (eV)")]
        for s in sets:
            rows.append((s["name"], str(s["n_structures"]), " ".join(s["fidelities"]),
                         " ".join(s["element_symbols"]),
                         "  ".join(f"{f} {_eV(r)}" for f, r in s["residual_rmse_eV"].items())))
        lines += _table(rows) + [""]
    rows = [("fidelity", "structures", "energy", "forces", "elements", "rank", "residual (eV)")]
    for f in d["fidelities"]:
        rows.append((f["name"], str(f["n_structures"]), str(f["n_energy"]),
                     str(f["n_forces"]) if f["has_forces"] else "-",
                     " ".join(f["element_symbols"]),
                     f"{f['self_energy_rank']}/{len(f['self_energies_eV'])}",
                     _eV(f["residual_rmse_eV"])))
    lines += _table(rows)
    lines += ["", "self-energies (eV/atom), fitted on the labelled rows of all datasets "
              "(rank of the element counts, residual per structure):"]
    for f in d["fidelities"]:
        vals = "  ".join(f"{s} {v:.6f}" for s, v in f["self_energies_eV"].items())
        n_el = len(f["self_energies_eV"])
        rank = (f"  (rank {f['self_energy_rank']} of {n_el}, residual "
                f"{_eV(f['residual_rmse_eV'])} eV)")
        if f["self_energy_rank"] < n_el:
            rank += ("  rank-deficient: minimum-norm solution; only sums per molecule are "
                     "meaningful")
        lines.append(f"  {f['name']}: {vals}{rank}")
    if d.get("provenance"):
        lines += ["", "provenance:"] + [f"  - {p}" for p in d["provenance"]]
    return "\n".join(lines)


def run_summary(spec_path: str, json_path: str | None = None) -> int:
    """Print the summary of ``spec_path``; write it as JSON (atomically) when asked.

    Returns:
        0 (errors raise DataError / ConfigError).
    """
    d = summarize(spec_path)
    print(format_summary(d))
    if json_path:
        try:
            write_json_atomic(json_path, d)
        except OSError as exc:
            raise ConfigError(f"--json {json_path}: cannot write: {exc.strerror or exc}") from None
        print(f"\nwrote {json_path}")
    return 0
