"""Data layer of mfgnn: loaders, dataset spec, multi-fidelity dataset, graphs, splits.

Import order: spec (YAML -> dataclasses) <- readers <- loading (``load_dataset``); spec
imports neither the readers nor loading.

Units everywhere: energies in eV (float64), lengths in Å, forces in eV/Å.
"""

from __future__ import annotations

from .bundled import demo_spec_path
from .blocks import DatasetBlock
from .dataset import DatasetSubset, MultiFidelityDataset
from .fidelity_order import merge_orders
from .graph import radius_graph
from .loading import load_dataset
from .pack import pack_dataset
from .packed import PackedDataset, open_dataset
from .self_energy import SelfEnergies, fit_self_energies
from .spec import DatasetSpec, FidelitySpec, SourceSpec, parse_spec, read_spec
from .splits import Split, SplitConfig, make_dataset_split, make_split
from .summary import format_summary, run_summary, summarize
from .transforms import RadiusGraph

__all__ = [
    "PackedDataset",
    "open_dataset",
    "pack_dataset",
    "DatasetBlock",
    "DatasetSpec",
    "DatasetSubset",
    "FidelitySpec",
    "MultiFidelityDataset",
    "RadiusGraph",
    "SelfEnergies",
    "SourceSpec",
    "Split",
    "SplitConfig",
    "demo_spec_path",
    "fit_self_energies",
    "format_summary",
    "load_dataset",
    "make_dataset_split",
    "make_split",
    "merge_orders",
    "parse_spec",
    "radius_graph",
    "read_spec",
    "run_summary",
    "summarize",
]
