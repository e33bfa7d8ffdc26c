"""What the benchmark scripts share: where the data is, units, the benchmark model,
labelled batches, one training step, timing, threads and fixed-width tables.

The scripts run as ``python benchmarks/NAME.py``, so this folder is on ``sys.path`` and
they ``import _common``.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mfgnn.units import energy_factor

# ---------------------------------------------------------------- data
REPO = Path(__file__).resolve().parents[1]
#: environment variable naming the shared data folder (default: ``../shared/data``
#: beside the repository)
DATA_ENV = "MFGNN_SHARED_DATA"


def shared_data(*parts: str) -> Path:
    """``$MFGNN_SHARED_DATA`` (else ``shared/data`` beside the repository) joined with
    ``parts``."""
    root = os.environ.get(DATA_ENV)
    return (Path(root) if root else REPO.parent / "shared" / "data").joinpath(*parts)


SHARED_DATA = shared_data()
#: rMD17 aspirin, 1000 frames of 21 atoms (kcal/mol, kcal/mol/Å)
ASPIRIN = SHARED_DATA / "rmd17" / "rmd17_aspirin_train_01.npz"
#: H2CO at MP2 and CCSD(T)-F12 (eV, eV/Å), the same 3601 geometries
H2CO_MP2 = SHARED_DATA / "mp2_ccsdt" / "ch2o_mp2_avtz_3601.npz"
H2CO_F12 = SHARED_DATA / "mp2_ccsdt" / "ch2o_ccf12_avtz_3601.npz"

# ---------------------------------------------------------------- units and constants
#: eV per kcal/mol (CODATA, as ASE)
KCAL_MOL = energy_factor("kcal/mol")
#: radius-graph cutoff of every benchmark, Å
CUTOFF = 6.5
#: liquid-like atom density of the random H/C/N/O systems, atoms / Å³
DENSITY = 0.1
#: the elements of the random systems and of the benchmark models
HCNO = (1, 6, 7, 8)
#: the two fidelities of the untrained benchmark models
FIDELITIES = ("low", "high")

# ---------------------------------------------------------------- models
#: the benchmark architecture: 128 features, 2 interaction blocks of 3 atom layers,
#: 20 sensitivities, cutoff 6.5 Å (tensor order and anything else per script)
BENCH_MODEL = {"n_features": 128, "n_interactions": 2, "n_atom_layers": 3,
               "n_sensitivities": 20, "cutoff": CUTOFF}


def model_config(**overrides) -> dict:
    """:data:`BENCH_MODEL` with ``overrides`` (a ``model:`` section)."""
    return {**BENCH_MODEL, **overrides}


def build_model(config: Mapping, elements=HCNO, fidelities: Sequence[str] = FIDELITIES, *,
                seed: int = 0, device=None, dtype: torch.dtype | None = None):
    """An untrained :class:`~mfgnn.nn.MultiFidelityHIPNN` of ``config`` (a ``model:``
    section dict), seeded with ``seed``.

    ``elements``: atomic numbers, or a dataset (anything with ``.elements``).
    """
    from mfgnn.nn import MultiFidelityHIPNN

    torch.manual_seed(seed)
    model = MultiFidelityHIPNN(dict(config), list(fidelities),
                               getattr(elements, "elements", elements))
    if device is not None:
        model = model.to(device)
    if dtype is not None:
        model = model.to(dtype)
    return model


def n_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ---------------------------------------------------------------- inputs
def labelled_batch(numbers: Iterable, positions: Iterable, energy, forces,
                   dtype: torch.dtype = torch.float32, device=None,
                   cutoff: float = CUTOFF):
    """A PyG batch of structures with its radius graph and labels.

    Args:
        numbers, positions: per structure, atomic numbers (n,) and positions (n, 3) Å.
        energy: (structures, F) energies, eV (kept float64).
        forces: per structure (n, 3) forces of the first fidelity, eV/Å.

    Returns the batch (on ``device``) and the seconds the radius graph took.
    """
    from torch_geometric.data import Batch, Data

    from mfgnn.data.graph import radius_graph

    batch = Batch.from_data_list([
        Data(z=torch.as_tensor(np.asarray(z), dtype=torch.long),
             pos=torch.as_tensor(np.asarray(p), dtype=dtype))
        for z, p in zip(numbers, positions)])
    start = time.perf_counter()
    batch.edge_index = radius_graph(batch.pos, cutoff, batch.batch)
    graph_s = time.perf_counter() - start
    batch.energy = torch.as_tensor(np.asarray(energy), dtype=torch.float64)
    batch.forces = torch.as_tensor(np.concatenate([np.asarray(f) for f in forces]),
                                   dtype=dtype)
    return (batch if device is None else batch.to(device)), graph_s


def two_fidelity_energies(energy) -> np.ndarray:
    """(n, 2) labels from one level's energies: centred on their mean, and the same
    plus 0.1 eV as the second fidelity (the cost does not depend on the values)."""
    e = np.asarray(energy, dtype=np.float64)
    e = e - e.mean()
    return np.stack([e, e + 0.1], axis=1)


def aspirin_batches(n_batches: int, batch_size: int, dtype: torch.dtype = torch.float32,
                    device=None) -> tuple[list, float]:
    """``n_batches`` consecutive batches of rMD17 aspirin frames (eV, eV/Å, two
    fidelities); also returns the mean seconds of one batch's radius graph."""
    d = np.load(ASPIRIN)
    z = d["nuclear_charges"].astype(np.int64)
    batches, graph_s = [], 0.0
    for k in range(n_batches):
        rows = list(range(k * batch_size, (k + 1) * batch_size))
        batch, seconds = labelled_batch(
            [z] * batch_size, d["coords"][rows], two_fidelity_energies(d["energies"][rows] * KCAL_MOL),
            d["forces"][rows] * KCAL_MOL, dtype, device)
        batches.append(batch)
        graph_s += seconds
    return batches, graph_s / max(n_batches, 1)


def h2co_batches(n_batches: int, batch_size: int, dtype: torch.dtype = torch.float32,
                 device=None) -> list:
    """``n_batches`` consecutive batches of H2CO MP2 geometries (eV, eV/Å, two
    fidelities); padding atoms (Z = 0) are dropped."""
    d = np.load(H2CO_MP2)
    batches = []
    for k in range(n_batches):
        rows = list(range(k * batch_size, (k + 1) * batch_size))
        keep = [d["Z"][r] > 0 for r in rows]
        batch, _ = labelled_batch(
            [d["Z"][r][m] for r, m in zip(rows, keep)], [d["R"][r][m] for r, m in zip(rows, keep)],
            two_fidelity_energies(d["E"][rows]), [d["F"][r][m] for r, m in zip(rows, keep)],
            dtype, device)
        batches.append(batch)
    return batches


def training_step(model, batches: Sequence, lr: float = 1e-4,
                  hierarchicality: float = 1e-3) -> Callable[[], None]:
    """A function doing one force-training step per call, cycling through ``batches``:
    energies of every fidelity and forces of the first with ``create_graph``, an energy
    + force + hierarchicality loss, backward (a double backward through the forces) and
    an Adam step."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    first = [model.fidelities[0]]
    count = [0]

    def step() -> None:
        b = batches[count[0] % len(batches)]
        count[0] += 1
        out = model(b, forces=first, training=True)
        loss = ((out["energy"] - b.energy).square().mean()
                + (out["forces"][:, 0] - b.forces).square().mean())
        loss = loss + hierarchicality * model.hierarchicality(out).sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


# ---------------------------------------------------------------- timing
def synchronize(device=None) -> None:
    """Wait for queued CUDA work (on ``device``, or wherever CUDA was used); no-op on CPU."""
    if device is None:
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.synchronize()
    elif torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class Timing:
    """Seconds of each timed call: wall clock and process CPU time (all threads)."""

    wall: list[float]
    cpu: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.wall)

    @property
    def min(self) -> float:
        return min(self.wall)

    @property
    def cpu_median(self) -> float:
        return statistics.median(self.cpu)


def time_call(fn: Callable[[], object], repeats: int, warmup: int = 0, device=None) -> Timing:
    """Call ``fn`` ``warmup`` times untimed, then ``repeats`` times timed (wall clock
    and process CPU time), synchronising CUDA around each timed call."""
    for _ in range(warmup):
        fn()
    wall, cpu = [], []
    for _ in range(max(repeats, 1)):
        synchronize(device)
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        synchronize(device)
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return Timing(wall, cpu)


# ---------------------------------------------------------------- threads and reporting
def add_threads_argument(parser, default: int = 0) -> None:
    """``--threads N``: torch intra-op threads (0: torch's default)."""
    parser.add_argument("--threads", type=int, default=default,
                        help=f"torch intra-op threads (0: torch's default; default {default})")


def add_split_arguments(parser, train: int = 1000, valid: int = 200, test: int = 1000) -> None:
    """``--train``, ``--valid``, ``--test``: split sizes (structures)."""
    parser.add_argument("--train", type=int, default=train, help="training structures")
    parser.add_argument("--valid", type=int, default=valid, help="validation structures")
    parser.add_argument("--test", type=int, default=test, help="test structures")


def set_threads(n: int | None) -> int:
    """Use ``n`` torch intra-op threads when ``n`` > 0; returns the number in use."""
    if n and n > 0:
        torch.set_num_threads(n)
    return torch.get_num_threads()


def describe_machine(device=None) -> str:
    """``torch X, N thread(s)[, device D], processor`` for the first line of a report."""
    parts = [f"torch {torch.__version__}", f"{torch.get_num_threads()} thread(s)"]
    if device is not None:
        parts.append(f"device {device}")
    parts.append(platform.processor() or platform.machine())
    return ", ".join(parts)


class Table:
    """A fixed-width text table printed row by row.

    ``columns``: ``(title, width, number_format)``; width as a format spec with the
    alignment (``"<26"``, ``">9"``); number_format for numbers (``".1f"``, ``"d"``,
    ``""``). Strings and ``None`` (shown as ``-``) are only aligned.
    """

    def __init__(self, *columns: tuple[str, str, str], sep: str = " ") -> None:
        self.columns = columns
        self.sep = sep

    def header(self) -> str:
        return self.sep.join(f"{title:{width}}" for title, width, _ in self.columns)

    def rule(self) -> str:
        return "-" * len(self.header())

    def row(self, *values) -> str:
        """One row; fewer values than columns fill the first columns only."""
        cells = []
        for (_, width, fmt), value in zip(self.columns, values):
            if value is None or isinstance(value, str):
                cells.append(f"{'-' if value is None else value:{width}}")
            else:
                cells.append(f"{value:{width}{fmt}}")
        return self.sep.join(cells)
