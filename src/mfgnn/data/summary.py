"""``mfgnn data summary SPEC [--json FILE]``: what a dataset spec holds, per fidelity.

Per fidelity: structures, how many have an energy, how many have forces, elements present
(in the rows with that fidelity's energy), self-energies fitted on all those rows (eV per
atom) and the fit's residual RMSE (eV per structure). Errors are raised as
:class:`mfgnn.errors.DataError` / :class:`mfgnn.errors.ConfigError` for the command line
to print.
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


def summarize(spec: str | Path | dict | DatasetSpec) -> dict:
    """Summary of the dataset a spec names, as a JSON-ready dict (energies in eV)."""
    parsed = read_spec(spec)
    ds = load_dataset(parsed)
    counts = ds.element_counts()
    se = fit_self_energies(ds)
    n_atoms = ds.n_atoms
    fidelities = []
    for k, f in enumerate(parsed.fidelities):
        has_e = np.isfinite(ds.energies[:, k])
        present = counts[has_e].sum(axis=0) > 0
        elements = [int(z) for z, p in zip(ds.elements, present) if p]
        fidelities.append({
            "name": f.name,
            "path": str(f.path),
            "format": f.format,
            "energy_unit": f.energy_unit,
            "n_structures": len(ds),
            "n_energy": int(has_e.sum()),
            "n_forces": int(ds.has_force_rows[:, k].sum()),
            "has_forces": bool(ds.has_forces[f.name]),
            "elements": elements,
            "element_symbols": [_symbol(z) for z in elements],
            "self_energies_eV": {_symbol(z): float(v) for z, v, p
                                 in zip(ds.elements, se.values[k], present) if p},
            "self_energy_rank": se.rank[f.name],
            "residual_rmse_eV": _num(se.residual_rmse[f.name]),
        })
    return {
        "spec": str(parsed.source) if parsed.source is not None else None,
        "name": parsed.name,
        "n_structures": len(ds),
        "atoms_per_structure": {"min": int(n_atoms.min()), "max": int(n_atoms.max()),
                                "mean": float(n_atoms.mean())},
        "elements": [int(z) for z in ds.elements],
        "element_symbols": [_symbol(z) for z in ds.elements],
        "fidelities": fidelities,
        "provenance": list(ds.provenance),
    }


def format_summary(d: dict) -> str:
    """Human-readable table of a :func:`summarize` dict."""
    a = d["atoms_per_structure"]
    atoms = str(a["min"]) if a["min"] == a["max"] else f"{a['min']}-{a['max']}"
    title = d.get("name") or d.get("spec") or "dataset"
    lines = [f"{title}: {d['n_structures']} structures, {atoms} atoms each, "
             f"elements {' '.join(d['element_symbols'])}", ""]
    header = ("fidelity", "structures", "energy", "forces", "elements", "residual (eV)")
    rows = [header]
    for f in d["fidelities"]:
        res = "n/a" if f["residual_rmse_eV"] is None else f"{f['residual_rmse_eV']:.4g}"
        rows.append((f["name"], str(f["n_structures"]), str(f["n_energy"]),
                     str(f["n_forces"]) if f["has_forces"] else "-",
                     " ".join(f["element_symbols"]), res))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    for r in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    lines += ["", "self-energies (eV/atom), fitted on all labelled rows:"]
    for f in d["fidelities"]:
        vals = "  ".join(f"{s} {v:.6f}" for s, v in f["self_energies_eV"].items())
        rank = "" if f["self_energy_rank"] >= len(f["self_energies_eV"]) else \
            "  (rank-deficient: minimum-norm solution; only sums per molecule are meaningful)"
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
