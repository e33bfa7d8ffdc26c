"""Batches by index arithmetic: the selected rows of a dataset held as flat tensors.

The PyG path builds one ``Data`` per structure (atoms, labels, radius graph), selects
the model's label columns per structure and collates a list per batch; that Python work
per structure dominates an epoch of a small model. :class:`StructureStore` does the same
once, in bulk: it reads the selected rows of a
:class:`~mfgnn.data.dataset.MultiFidelityDataset` or
:class:`~mfgnn.data.packed.PackedDataset` into flat arrays, selects the label columns,
builds every structure's radius graph with a batch vector in chunks, and then makes each
batch by gathering atoms and shifting cached edges::

    store = StructureStore(dataset, rows, columns=[0, None], kinds=None)
    for batch in store.loader(loader_order(len(store), 64, shuffle=True, generator=g)):
        ...   # as Batch.from_data_list([SelectColumns(columns)(dataset[rows[p]]) ...])

A batch has the fields, dtypes and values of the PyG path: ``z`` (ΣN,) long, ``pos``
(ΣN, 3) float32 Å, ``energy`` (B, F_model) float64 eV, ``forces`` (ΣN, F_model, 3)
float32 eV/Å (NaN = no label), ``idx`` (B,) long dataset rows, ``dataset`` (B,) long,
``edge_index`` (2, E) long (only with a graph), ``batch`` (ΣN,), ``ptr`` (B + 1,), and
PyG's slice/increment tables, so ``num_graphs`` and ``to_data_list`` work.
:class:`~mfgnn.data.collate_mapped.MappedStructureStore` is the memory-bounded variant
for large packs (atoms read from the memory maps per batch).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence

import numpy as np
import torch
from torch import Tensor
from torch_geometric.data import Batch, Data

from .bulk import LabelSelection, base_rows, read_rows
from .graph import radius_graph
from .transforms import RadiusGraph

#: ``cutoff`` default of the stores: the radius of the dataset's own graph step.
FROM_DATASET = "dataset"
#: At most this many atoms per radius-graph call while building the cached edges.
GRAPH_CHUNK_ATOMS = 1 << 14


def graph_cutoff(dataset, cutoff: float | None | str = FROM_DATASET) -> float | None:
    """The radius (Å) of the stores' graphs: ``cutoff`` when given (None: no edges), else
    the dataset's :class:`~mfgnn.data.transforms.RadiusGraph` radius (None without a graph).

    Raises:
        TypeError: the dataset has another graph step (pass ``cutoff`` explicitly).
    """
    if cutoff != FROM_DATASET:
        return None if cutoff is None else float(cutoff)
    graph = getattr(dataset, "graph", None)
    if graph is None:
        return None
    if isinstance(graph, RadiusGraph):
        return graph.cutoff
    raise TypeError(f"the dataset's graph step {graph!r} is not a RadiusGraph; give the "
                    "store a cutoff (Å) explicitly")


# ------------------------------------------------------------------------ batches
def positions_array(positions, n: int) -> np.ndarray:
    """(B,) int64 positions into a store of ``n`` rows (IndexError/ValueError when out of
    range or empty)."""
    p = positions.cpu().numpy() if isinstance(positions, Tensor) else np.asarray(positions)
    p = p.astype(np.int64, copy=False).reshape(-1)
    if p.size == 0:
        raise ValueError("a batch needs at least one structure")
    if p.min() < 0 or p.max() >= n:
        raise IndexError(f"batch positions must lie in [0, {n}), got {p.min()}..{p.max()}")
    return p


def segment_arange(start: Tensor, count: Tensor, total: int) -> Tensor:
    """Concatenated ranges ``start[k] .. start[k] + count[k] - 1`` (total entries)."""
    first = torch.cumsum(count, 0) - count
    return (torch.arange(total, device=start.device)
            + torch.repeat_interleave(start - first, count, output_size=total))


def make_batch(fields: dict[str, Tensor], n_atoms: np.ndarray,
               n_edges: np.ndarray | None, device: torch.device) -> Batch:
    """A PyG ``Batch`` of concatenated ``fields`` (z, pos, energy, forces, idx, dataset
    and optionally a global edge_index) of structures with ``n_atoms`` (B,) atoms and
    ``n_edges`` (B,) edges: adds ``batch``, ``ptr`` and PyG's slice/increment tables."""
    counts = torch.from_numpy(n_atoms)
    cpu_ptr = torch.cat([counts.new_zeros(1), torch.cumsum(counts, 0)])
    b = len(n_atoms)
    out = Batch(_base_cls=Data)
    for key, value in fields.items():
        setattr(out, key, value)
    out.batch = torch.repeat_interleave(torch.arange(b, device=device), counts.to(device),
                                        output_size=int(cpu_ptr[-1]))
    out.ptr = cpu_ptr.to(device)
    graphs, zeros = torch.arange(b + 1), torch.zeros(b, dtype=torch.long)
    out._num_graphs = b
    out._slice_dict = {k: (cpu_ptr if k in ("z", "pos", "forces") else graphs) for k in fields}
    out._inc_dict = {k: zeros for k in fields}
    if n_edges is not None:
        out._slice_dict["edge_index"] = torch.cat(
            [torch.zeros(1, dtype=torch.long), torch.cumsum(torch.from_numpy(n_edges), 0)])
        out._inc_dict["edge_index"] = cpu_ptr[:-1]
    return out


def loader_order(n: int, batch_size: int, shuffle: bool = False,
                 generator: torch.Generator | None = None) -> list[Tensor]:
    """Positions of each batch of one pass, in the order torch's ``DataLoader(...,
    batch_size, shuffle, generator=generator)`` (the PyG path) draws them, so a run
    keeps its batches when it switches to a store (for a shuffle, give the generator:
    without one the loader seeds a private generator)."""
    if not shuffle:
        return list(torch.arange(n).split(batch_size))
    torch.empty((), dtype=torch.int64).random_(generator=generator)  # the loader's base seed
    return list(torch.randperm(n, generator=generator).split(batch_size))


class _BatchesOf(torch.utils.data.Dataset):
    """Map-style dataset whose items are whole batches: item ``positions`` is
    ``store.batch(positions)``."""

    def __init__(self, store) -> None:
        self.store = store

    def __len__(self) -> int:
        return len(self.store)

    def __getitem__(self, positions) -> Batch:
        return self.store.batch(positions)


def _as_is(batch: Batch) -> Batch:
    return batch


def batch_loader(store, batches: Sequence, num_workers: int = 0,
                 **loader_args) -> torch.utils.data.DataLoader:
    """Iterable of ``store.batch(p)`` for each ``p`` of ``batches`` (position arrays), in
    order; with ``num_workers`` > 0, worker processes make batches ahead. ``loader_args``
    go to ``torch.utils.data.DataLoader`` (``pin_memory``, ``prefetch_factor``...)."""
    if num_workers > 0 and getattr(store, "device", torch.device("cpu")).type != "cpu":
        raise ValueError("worker processes need a store on the CPU; move batches instead")
    return torch.utils.data.DataLoader(_BatchesOf(store), batch_size=None,
                                       sampler=list(batches), num_workers=num_workers,
                                       collate_fn=_as_is, **loader_args)


class StructureStore:
    """Selected rows of a dataset, their model labels and radius graphs as flat tensors.

    Args:
        dataset: a :class:`~mfgnn.data.dataset.MultiFidelityDataset`, a
            :class:`~mfgnn.data.packed.PackedDataset` or a subset of one.
        rows: (n,) dataset rows; position p of a batch is structure ``rows[p]``.
        columns: for each model fidelity its column in the dataset's labels, or None
            (all-NaN labels), as :class:`~mfgnn.training.batches.SelectColumns`.
        kinds: per model column the label kinds kept ({"energy", "forces"}); None: both.
        cutoff: graph radius in Å; default the dataset's graph (none without one).

    Attributes (tensors on :attr:`device`): ``z`` (ΣN,) long, ``pos`` (ΣN, 3) float32 Å,
    ``energy`` (n, F_model) float64 eV, ``forces`` (ΣN, F_model, 3) float32 eV/Å,
    ``atom_ptr`` (n + 1,) long, ``idx`` (n,) long dataset rows, ``dataset`` (n,) long,
    ``edges`` (2, E) int32 local atom indices (j, i) of each structure's edges, sorted
    by target then source, concatenated; ``edge_ptr`` (n + 1,) long; ``cutoff``;
    ``n_atoms`` (n,) int64 numpy atoms per row.
    """

    def __init__(self, dataset, rows, columns: Sequence[int | None],
                 kinds: Sequence[Iterable[str]] | None = None, *,
                 cutoff: float | None | str = FROM_DATASET) -> None:
        self.cutoff = graph_cutoff(dataset, cutoff)
        select = LabelSelection(columns, kinds)
        base, base_rows_ = base_rows(dataset, rows)
        data = read_rows(base, base_rows_, select.needs_forces)
        ptr = data["ptr"]
        self.z = torch.from_numpy(data["z"])
        self.pos = torch.from_numpy(data["pos"])
        self.energy = torch.from_numpy(select.energy(data["energy"]))
        self.forces = torch.from_numpy(select.forces(data["forces"], int(ptr[-1])))
        self.atom_ptr = torch.from_numpy(ptr)
        self.idx = torch.from_numpy(data["idx"])
        self.dataset = torch.from_numpy(data["dataset"])
        self.n_atoms = np.diff(ptr)
        self._n_edges = None
        if self.cutoff is not None:
            self.edges, self._n_edges = _local_edges(self.pos, ptr, self.cutoff)
            self.edge_ptr = torch.from_numpy(
                np.concatenate([[0], np.cumsum(self._n_edges)]).astype(np.int64))
        self.device = torch.device("cpu")

    def __len__(self) -> int:
        return len(self.n_atoms)

    @property
    def nbytes(self) -> int:
        """Bytes of the store's tensors."""
        return sum(t.numel() * t.element_size() for t in self._tensors().values())

    def _tensors(self) -> dict[str, Tensor]:
        names = ["z", "pos", "energy", "forces", "atom_ptr", "idx", "dataset"]
        if self.cutoff is not None:
            names += ["edges", "edge_ptr"]
        return {k: getattr(self, k) for k in names}

    def to(self, device, max_fraction: float = 0.5) -> StructureStore:
        """Move the tensors to ``device`` (in place; returns the store) so batches are made
        there. A CUDA device whose free memory times ``max_fraction`` is below
        :attr:`nbytes` keeps the store where it is (check :attr:`device`)."""
        device = torch.device(device)
        if device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(device)
            if self.nbytes > max_fraction * free:
                warnings.warn(f"the batch store ({self.nbytes / 2**20:.0f} MiB) stays on "
                              f"{self.device}: {device} has {free / 2**20:.0f} MiB free",
                              RuntimeWarning, stacklevel=2)
                return self
        for k, t in self._tensors().items():
            setattr(self, k, t.to(device))
        self.device = device
        return self

    def batch(self, positions) -> Batch:
        """The ``Batch`` of the structures at ``positions`` (B,) (ints, array or tensor),
        equal to PyG's collation of their selected ``Data`` items, on :attr:`device`."""
        p_np = positions_array(positions, len(self))
        n_atoms = self.n_atoms[p_np]
        dev = self.device
        p = torch.from_numpy(p_np).to(dev)
        counts = torch.from_numpy(n_atoms).to(dev)
        atoms = segment_arange(self.atom_ptr[p], counts, int(n_atoms.sum()))
        fields = {"z": self.z[atoms], "pos": self.pos[atoms], "energy": self.energy[p],
                  "forces": self.forces[atoms], "idx": self.idx[p], "dataset": self.dataset[p]}
        n_edges = None
        if self.cutoff is not None:
            n_edges = self._n_edges[p_np]
            e_counts = torch.from_numpy(n_edges).to(dev)
            total = int(n_edges.sum())
            take = segment_arange(self.edge_ptr[p], e_counts, total)
            shift = torch.repeat_interleave(torch.cumsum(counts, 0) - counts, e_counts,
                                            output_size=total)
            fields["edge_index"] = self.edges[:, take].long() + shift
        return make_batch(fields, n_atoms, n_edges, dev)

    def loader(self, batches: Sequence, num_workers: int = 0, **loader_args):
        """Batches of each position array of ``batches``, in order (see
        :func:`batch_loader`)."""
        return batch_loader(self, batches, num_workers, **loader_args)


def _local_edges(pos: Tensor, ptr: np.ndarray, cutoff: float) -> tuple[Tensor, np.ndarray]:
    """Each structure's radius-graph edges in local atom indices, concatenated
    ((2, E) int32), and the edges per structure ((n,) int64); built with a batch vector
    on chunks of at most :data:`GRAPH_CHUNK_ATOMS` atoms (one structure at least)."""
    n = len(ptr) - 1
    n_atoms = np.diff(ptr)
    parts, counts = [], np.zeros(n, dtype=np.int64)
    lo = 0
    while lo < n:
        hi = int(np.searchsorted(ptr, ptr[lo] + GRAPH_CHUNK_ATOMS, side="right")) - 1
        hi = min(max(hi, lo + 1), n)
        batch = torch.from_numpy(np.repeat(np.arange(hi - lo), n_atoms[lo:hi]))
        edges = radius_graph(pos[ptr[lo]:ptr[hi]], cutoff, batch)
        owner = batch[edges[1]]
        local = torch.from_numpy(ptr[lo:hi] - ptr[lo])[owner]
        parts.append((edges - local).to(torch.int32))
        counts[lo:hi] = np.bincount(owner.numpy(), minlength=hi - lo)
        lo = hi
    edges = torch.cat(parts, dim=1) if parts else torch.zeros((2, 0), dtype=torch.int32)
    return edges, counts
