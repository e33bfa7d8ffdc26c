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

from .dataset import DatasetSubset, MultiFidelityDataset
from .frames import InMemoryFrames
from .graph import radius_graph
from .packed import PackedDataset, atom_index, open_arrays
from .transforms import RadiusGraph

#: ``cutoff`` default of the stores: the radius of the dataset's own graph step.
FROM_DATASET = "dataset"
#: At most this many atoms per radius-graph call while building the cached edges.
GRAPH_CHUNK_ATOMS = 1 << 14
#: Rows read from a pack at once while building a store.
READ_CHUNK_ROWS = 1 << 15
_KINDS = frozenset({"energy", "forces"})


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


class LabelSelection:
    """:class:`~mfgnn.training.batches.SelectColumns` on flat arrays: for each model
    fidelity t its dataset column ``columns[t]`` (None: all-NaN), keeping only the label
    kinds ``kinds[t]`` (a subset of {"energy", "forces"}; None keeps both)."""

    def __init__(self, columns: Sequence[int | None],
                 kinds: Sequence[Iterable[str]] | None = None) -> None:
        self.columns = [None if c is None else int(c) for c in columns]
        if kinds is not None and len(kinds) != len(self.columns):
            raise ValueError(f"{len(kinds)} label kinds for {len(self.columns)} columns")
        kinds = [_KINDS] * len(self.columns) if kinds is None else [frozenset(k) for k in kinds]
        if any(k - _KINDS for k in kinds):
            raise ValueError(f"label kinds must be among {sorted(_KINDS)}, got {kinds}")
        self.energy_columns = [c if c is not None and "energy" in k else None
                               for c, k in zip(self.columns, kinds)]
        self.force_columns = [c if c is not None and "forces" in k else None
                              for c, k in zip(self.columns, kinds)]

    @property
    def needs_forces(self) -> set[int]:
        """The dataset columns whose force labels are kept (none: forces are not read)."""
        return {c for c in self.force_columns if c is not None}

    @staticmethod
    def _take(values: np.ndarray | None, cols: list[int | None], shape: tuple) -> np.ndarray:
        out = np.full(shape, np.nan, dtype=np.float64 if len(shape) == 2 else np.float32)
        for t, c in enumerate(cols):
            if c is not None:
                out[:, t] = values[:, c]
        return out

    def energy(self, energy: np.ndarray) -> np.ndarray:
        """(m, F_model) float64 eV from the dataset's (m, F) energies."""
        return self._take(energy, self.energy_columns, (len(energy), len(self.columns)))

    def forces(self, forces: np.ndarray | None, n_atoms: int) -> np.ndarray:
        """(M, F_model, 3) float32 eV/Å from the dataset's (M, F, 3) forces (None when
        :attr:`needs_forces` is False)."""
        return self._take(forces, self.force_columns, (n_atoms, len(self.columns), 3))


# ------------------------------------------------------------------------ reading rows
def base_rows(dataset, rows) -> tuple[object, np.ndarray]:
    """(dataset, (n,) int64 rows) with subsets resolved to their underlying dataset
    (``Data.idx`` is that dataset's row); negative rows count from the end."""
    rows = np.asarray(rows, dtype=np.int64).reshape(-1)
    n = len(dataset)
    if rows.size and (rows.min() < -n or rows.max() >= n):
        raise IndexError(f"rows out of range for a dataset of {n} structures")
    rows = np.where(rows < 0, rows + n, rows)
    while isinstance(dataset, DatasetSubset):
        dataset, rows = dataset.dataset, np.asarray(dataset.rows)[rows]
    return dataset, rows


def read_pack(arrays: dict[str, np.ndarray], rows: np.ndarray, forces: bool) -> dict:
    """Atoms and labels of pack ``rows`` (any order, repeats allowed) from its memory
    maps, read in ascending row order: ``z`` (ΣN,) int64, ``pos`` (ΣN, 3) float32,
    ``energy`` (n, F) float64, ``forces`` (ΣN, F, 3) float32 (None unless ``forces``),
    ``ptr`` (n + 1,) int64, ``dataset`` (n,) int64."""
    order = np.argsort(rows, kind="stable")
    sorted_rows = rows[order]
    src, sorted_ptr = atom_index(arrays["offsets"], sorted_rows)
    inverse = np.empty_like(order)
    inverse[order] = np.arange(len(order))
    back, ptr = atom_index(sorted_ptr, inverse)  # atoms of row k sit at sorted slot inverse[k]
    return {"z": arrays["z"][src][back].astype(np.int64),
            "pos": np.asarray(arrays["pos"][src][back], dtype=np.float32),
            "energy": np.asarray(arrays["energy"][sorted_rows][inverse], dtype=np.float64),
            "forces": np.asarray(arrays["forces"][src][back], dtype=np.float32) if forces else None,
            "ptr": ptr,
            "dataset": np.asarray(arrays["dataset_index"][sorted_rows][inverse], dtype=np.int64)}


def _read_levels(dataset: MultiFidelityDataset, rows: np.ndarray, forces: set[int]) -> dict:
    """What ``MultiFidelityDataset.__getitem__`` gives for ``rows``, in bulk: in-memory
    frames by index arithmetic, lazy frames (HDF5) row by row (still no ``Data``); force
    labels of the dataset columns ``forces`` only (the others stay NaN)."""
    ptr = np.concatenate([[0], np.cumsum(dataset.n_atoms[rows])]).astype(np.int64)
    n_fid = len(dataset.fidelities)
    z = np.zeros(ptr[-1], dtype=np.int64)
    pos = np.zeros((ptr[-1], 3), dtype=np.float32)
    out_f = np.full((ptr[-1], n_fid, 3), np.nan, dtype=np.float32) if forces else None
    blocks, offsets = dataset._blocks, dataset._offsets  # noqa: SLF001 (no bulk accessor)
    for b in np.unique(dataset.dataset_index[rows]):
        where = np.flatnonzero(dataset.dataset_index[rows] == b)
        local = rows[where] - offsets[b]
        dest, _ = atom_index(ptr, where)
        frames = blocks[b].frames
        if isinstance(frames, InMemoryFrames):
            src, _ = atom_index(frames.ptr, local)
            z[dest], pos[dest] = frames.z[src], frames.pos[src]
        else:
            for w, j in zip(where, local):
                zj, pj = frames.geometry(int(j))
                z[ptr[w]:ptr[w + 1]], pos[ptr[w]:ptr[w + 1]] = zj, pj
        for fr, fid, k in dataset._columns[b]:  # noqa: SLF001
            if k not in forces:
                continue
            ok = dataset.has_force_rows[rows[where], k]
            if isinstance(fr, InMemoryFrames):  # forces_row: None without the row's forces
                flat = fr.forces.get(fid)
                if flat is not None:
                    ok = ok & fr.has_force_rows[fid][local]
                    out_f[atom_index(ptr, where[ok])[0], k] = flat[atom_index(fr.ptr, local[ok])[0]]
                continue
            for w, j in zip(where[ok], local[ok]):
                f = fr.forces_row(int(j), fid)
                if f is not None:
                    out_f[ptr[w]:ptr[w + 1], k] = f
    return {"z": z, "pos": pos, "energy": np.asarray(dataset.energies[rows], dtype=np.float64),
            "forces": out_f, "ptr": ptr,
            "dataset": np.asarray(dataset.dataset_index[rows], dtype=np.int64)}


def read_rows(dataset, rows: np.ndarray, forces: set[int]) -> dict:
    """Flat atoms and labels of dataset ``rows`` (see :func:`read_pack`), plus ``idx``;
    ``forces``: the dataset columns whose force labels are needed (none: ``forces`` is
    None; a pack reads all its columns).

    Raises:
        TypeError: not a MultiFidelityDataset, PackedDataset or a subset of one."""
    if isinstance(dataset, PackedDataset):
        arrays = open_arrays(dataset.path, dataset.meta)
        parts = [read_pack(arrays, rows[s:s + READ_CHUNK_ROWS], bool(forces))
                 for s in range(0, max(len(rows), 1), READ_CHUNK_ROWS)]
        out = {k: (None if parts[0][k] is None else np.concatenate([p[k] for p in parts]))
               for k in ("z", "pos", "energy", "forces", "dataset")}
        out["ptr"] = np.concatenate([[0], np.cumsum(dataset.n_atoms[rows])]).astype(np.int64)
    elif isinstance(dataset, MultiFidelityDataset):
        out = _read_levels(dataset, rows, forces)
    else:
        raise TypeError(f"a store reads a MultiFidelityDataset or a PackedDataset (or a "
                        f"subset of one), got {type(dataset).__name__}")
    out["idx"] = rows.astype(np.int64)
    return out


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
