"""Data layer of mfgnn: loaders, dataset spec, multi-fidelity dataset, graphs, splits.

Units everywhere: energies in eV (float64), lengths in Å, forces in eV/Å.
"""

from __future__ import annotations

from .bundled import demo_spec_path
from .dataset import DatasetSubset, MultiFidelityDataset
from .graph import radius_graph
from .self_energy import SelfEnergies, fit_self_energies
from .spec import DatasetSpec, FidelitySpec, load_dataset, parse_spec, read_spec
from .splits import Split, make_split
from .summary import format_summary, run_summary, summarize

__all__ = [
    "DatasetSpec",
    "DatasetSubset",
    "FidelitySpec",
    "MultiFidelityDataset",
    "SelfEnergies",
    "Split",
    "demo_spec_path",
    "fit_self_energies",
    "format_summary",
    "load_dataset",
    "make_split",
    "parse_spec",
    "radius_graph",
    "read_spec",
    "run_summary",
    "summarize",
]
