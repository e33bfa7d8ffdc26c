"""Load the dataset a spec names: :func:`load_dataset` and :func:`build_dataset`.

Each dataset of the spec is read on its own: fidelities naming the same file (and the same
geometry fields and length unit) are read together, so a file is opened once per dataset.
The dataset's first file provides the geometries; every other file of that dataset is
checked row by row to hold the same geometries. The datasets' rows are then concatenated
(:class:`~mfgnn.data.blocks.DatasetBlock` s of one
:class:`~mfgnn.data.dataset.MultiFidelityDataset`). Each fidelity's energy scale is
checked per dataset for an implausible declared unit (a warning, see
:mod:`.plausibility`).
"""

from __future__ import annotations

import os

import numpy as np

from .ani_h5 import read_ani_h5
from .blocks import DatasetBlock
from .dataset import MultiFidelityDataset
from .extxyz import read_extxyz
from .frames import Frames, check_same_geometries
from .npz import read_npz
from .plausibility import warn_energy_scale
from .spec import DatasetSpec, FidelitySpec, SourceSpec, read_spec
from .transforms import GraphTransform, RadiusGraph

#: Rows sampled per fidelity for the energy-scale check.
PLAUSIBILITY_ROWS = 20_000

READERS = {"npz": read_npz, "ani-h5": read_ani_h5, "extxyz": read_extxyz}


def _group_key(f: FidelitySpec) -> tuple:
    return (str(f.path), f.format, f.keys.get("positions"), f.keys.get("numbers"),
            f.length_unit)


def load_dataset(spec: str | os.PathLike | dict | DatasetSpec,
                 cutoff: float | None = None) -> MultiFidelityDataset:
    """Load the dataset a spec names: every fidelity aligned row by row, in eV and Å.

    Args:
        spec: YAML file, dict or :class:`~mfgnn.data.spec.DatasetSpec`.
        cutoff: radius (Å) of the graph each item carries as ``edge_index``
            (:class:`~mfgnn.data.transforms.RadiusGraph`); None: no edges.

    Returns:
        :class:`mfgnn.data.dataset.MultiFidelityDataset`.

    Raises:
        ConfigError: bad spec. DataError: bad or inconsistent data files.
        ValueError: cutoff not > 0 (before any file is read).
    """
    graph = None if cutoff is None else RadiusGraph(cutoff)
    return build_dataset(read_spec(spec), graph=graph)


def read_block(source: SourceSpec, provenance: list[str]) -> DatasetBlock:
    """Read the files of one dataset once, verify that they hold the same geometries row
    by row, and return its block; conversions are appended to ``provenance``."""
    groups: dict[tuple, list[FidelitySpec]] = {}
    for f in source.fidelities:
        groups.setdefault(_group_key(f), []).append(f)
    frames_of: dict[str, Frames] = {}
    reference: Frames | None = None
    for members in groups.values():
        frames = READERS[members[0].format](members)
        provenance.extend(frames.provenance)
        if reference is None:
            reference = frames
        else:
            worst = check_same_geometries(reference, frames)
            provenance.append(f"geometries of {frames.path.name} match {reference.path.name} "
                              f"row by row (max |ΔR| = {worst:.3g} Å)")
        for m in members:
            frames_of[m.name] = frames
    return DatasetBlock(source.name, [(frames_of[f.name], f.name) for f in source.fidelities])


def build_dataset(spec: DatasetSpec, graph: GraphTransform | None = None) -> MultiFidelityDataset:
    """Read every file of ``spec`` once per dataset, verify geometries within each
    dataset, concatenate the datasets, and return the dataset whose items go through
    ``graph`` (None: no edges)."""
    blocks: list[DatasetBlock] = []
    provenance: list[str] = []
    for source in spec.datasets:
        notes: list[str] = []
        blocks.append(read_block(source, notes))
        prefix = f"{source.name}: " if len(spec.datasets) > 1 else ""
        provenance.extend(prefix + p for p in notes)
    dataset = MultiFidelityDataset(blocks, graph=graph, provenance=provenance, spec=spec,
                                   fidelities=spec.names)
    rng = np.random.default_rng(0)
    for source in spec.datasets:
        block_rows = dataset.rows_of(source.name)
        for f in source.fidelities:
            k = dataset.fidelities.index(f.name)
            rows = block_rows[np.isfinite(dataset.energies[block_rows, k])]
            if len(rows) > PLAUSIBILITY_ROWS:  # a median over a random sample is plenty
                rows = np.sort(rng.choice(rows, PLAUSIBILITY_ROWS, replace=False))
            counts = dataset.element_counts_of(rows)
            present = counts.sum(axis=0) > 0  # this dataset's elements only
            warn_energy_scale(dataset.energies[rows, k], counts[:, present],
                              tuple(np.asarray(dataset.elements)[present].tolist()),
                              str(f.path), f.name, f.energy_unit)
    return dataset
