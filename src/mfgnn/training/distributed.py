r"""Data-parallel training with ``torch.distributed`` (``torchrun``; NCCL on GPUs, gloo
on CPUs).

Every rank holds the whole model and takes a disjoint shard of each *global* batch
(``train.batch_size`` structures, split into near-equal contiguous parts by rank), so a
run's result does not depend on how many processes ran it. Three things make the
N-process step equal to the 1-process step on the same global batch:

1. **Loss normalised over all ranks.** The loss is built from additive statistics
   (Σd², Σ|d|, label count per term; :meth:`mfgnn.loss.MultiFidelityLoss.statistics`).
   :meth:`Distributed.sum_statistics` replaces each rank's statistics S_r by

   .. math::  \tilde S_r = \textstyle\sum_q S_q + N\,(S_r - \mathrm{sg}(S_r)),

   whose value is the global sum on every rank (so every rank computes the same loss
   value, normalised by the label counts of the whole global batch) and whose gradient
   is N ∂S_r/∂θ. A rank whose shard has no label of some fidelity contributes zeros.
2. **Averaged gradients.** After backward, :meth:`Distributed.average_gradients`
   all-reduces all gradients as one flat buffer and divides by N: the average of
   N ∂L/∂S ∂S_r/∂θ over ranks is ∂L/∂S Σ_r ∂S_r/∂θ, the gradient of the global loss;
   gradients of terms that depend on parameters only (head penalties, learned task
   weights) are the same on every rank and stay unchanged. Every parameter takes part
   in every all-reduce (a missing gradient counts as zero), so a head that no label of a
   rank's shard reaches cannot stall the collective — the "unused parameters" failure
   of multi-head training with ``DistributedDataParallel``'s per-parameter hooks. The
   reduction is one collective after the (double) backward instead of DDP's bucketed
   overlap; that keeps force training (``create_graph``) and masked heads simple.
3. **One clock.** Budget decisions (learning rate by elapsed fraction, ``max_time``)
   use rank 0's clock, broadcast (:meth:`Distributed.agree`), so every rank applies the
   same learning rate and stops after the same step.

Rank 0 alone writes the run folder (checkpoints, ``metrics.csv``, ``model.pt``); every
rank reads the checkpoint when resuming. Single-process training uses
:data:`SINGLE` and calls no collective.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

#: Environment variables ``torchrun`` sets for every worker.
TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


@dataclass(frozen=True)
class Distributed:
    """This process's place in a data-parallel run: ``rank`` of ``world_size``."""

    rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes files and prints progress."""
        return self.rank == 0

    # ------------------------------------------------------------------ sharding
    def shard(self, positions: Sequence[int] | np.ndarray) -> np.ndarray:
        """This rank's contiguous part of a global batch (near-equal parts by rank; a
        rank's part is empty when the batch has fewer structures than ranks)."""
        positions = np.asarray(positions, dtype=np.int64)
        if not self.enabled:
            return positions
        return np.array_split(positions, self.world_size)[self.rank]

    # ------------------------------------------------------------------ collectives
    def sum_(self, tensor: torch.Tensor) -> torch.Tensor:
        """All-reduce ``tensor`` in place (sum over ranks); returns it. A tensor that is
        not where the backend reduces (a CPU tensor under NCCL) goes there and back."""
        if self.enabled:
            where = _collective_device()
            if tensor.device == where:
                dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
            else:
                moved = tensor.to(where)
                dist.all_reduce(moved, op=dist.ReduceOp.SUM)
                tensor.copy_(moved)
        return tensor

    def sum_statistics(self, stats: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The loss statistics summed over ranks in one all-reduce, with the gradient
        N ∂S_r/∂θ of this rank's own part (see the module docstring)."""
        if not self.enabled or not stats:
            return stats
        keys = list(stats)
        local = torch.cat([stats[k].reshape(-1) for k in keys])
        total = self.sum_(local.detach().clone())
        combined = total + self.world_size * (local - local.detach())
        out, k = {}, 0
        for key in keys:
            n = stats[key].numel()
            out[key] = combined[k:k + n].view_as(stats[key])
            k += n
        return out

    def any_(self, flags: torch.Tensor) -> torch.Tensor:
        """Elementwise "any rank" of a bool tensor."""
        if not self.enabled:
            return flags
        counts = flags.to(torch.float64)
        return self.sum_(counts) > 0

    def average_gradients(self, parameters) -> None:
        """Replace every gradient by its mean over ranks (one flat all-reduce; a missing
        gradient counts as zeros and is then filled in)."""
        if not self.enabled:
            return
        params = [p for p in parameters if p.requires_grad]
        if not params:
            return
        flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1)
                          for p in params])
        self.sum_(flat).div_(self.world_size)
        k = 0
        for p in params:
            n = p.numel()
            value = flat[k:k + n].view_as(p)
            if p.grad is None:
                p.grad = value.clone()
            else:
                p.grad.copy_(value)
            k += n

    def agree(self, value: float) -> float:
        """Rank 0's ``value`` on every rank (e.g. the elapsed time of the budget)."""
        if not self.enabled:
            return value
        t = torch.tensor([float(value)], dtype=torch.float64, device=_collective_device())
        dist.broadcast(t, src=0)
        return float(t.item())

    def gather(self, obj) -> list:
        """``obj`` of every rank, in rank order (pickled; for small objects)."""
        if not self.enabled:
            return [obj]
        out: list = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()


#: A single process: no collective is ever called.
SINGLE = Distributed()


def launched_by_torchrun() -> bool:
    """The process was started by ``torchrun`` / ``torch.distributed.run``."""
    return all(k in os.environ for k in TORCHRUN_VARIABLES)


def restarted_by_torchrun() -> bool:
    """``torchrun --max-restarts`` restarted the worker group after a failure."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0) > 0


def _collective_device() -> torch.device:
    if dist.is_initialized() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def setup_distributed(device: str = "auto") -> tuple[Distributed, str]:
    """Join the process group when started by ``torchrun`` (NCCL when the run uses CUDA,
    gloo otherwise; also for a single process, which then calls no collective); returns
    this process's :class:`Distributed` and the device setting to use
    (``cuda:LOCAL_RANK`` for a CUDA run). Outside ``torchrun``: :data:`SINGLE`."""
    if not launched_by_torchrun():
        return SINGLE, device  # (one torchrun process still joins its group: NCCL set up)
    use_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if use_cuda:
        local = int(os.environ["LOCAL_RANK"])
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    global _JOINED
    if not dist.is_initialized():
        _join(backend="nccl" if use_cuda else "gloo")
        _JOINED = True
    return Distributed(dist.get_rank(), dist.get_world_size()), device


def _join(backend: str) -> None:
    """``init_process_group`` on torchrun's store under a key prefix of its own for each
    attempt of the worker group: after a restart, a rank that starts slowly could
    otherwise read the address another rank published in the failed attempt and give
    up connecting to it (seen with gloo)."""
    import datetime

    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    attempt = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0)
    agent_store = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world,
                          is_master=not agent_store and rank == 0,
                          timeout=datetime.timedelta(minutes=30), wait_for_workers=False)
    dist.init_process_group(backend, store=dist.PrefixStore(f"mfgnn/attempt_{attempt}", store),
                            rank=rank, world_size=world)


def teardown_distributed() -> None:
    """Leave the process group :func:`setup_distributed` joined (one the caller made
    itself is left alone)."""
    global _JOINED
    if _JOINED and dist.is_initialized():
        dist.destroy_process_group()
    _JOINED = False


_JOINED = False

#: Testing hook: ``"RANK:EPOCH"`` makes that rank kill itself (SIGKILL) right after the
#: first step of epoch EPOCH + 1, in the first attempt of a ``torchrun`` worker group only
#: (by then every rank has passed the checkpoint of epoch EPOCH).
KILL_ENV = "MFGNN_TEST_KILL_RANK_AFTER_EPOCH"


def kill_for_test(dist_info: Distributed, epoch: int) -> None:
    """The :data:`KILL_ENV` hook (does nothing unless the variable is set)."""
    value = os.environ.get(KILL_ENV)
    if not value or restarted_by_torchrun():
        return
    rank, after = (int(x) for x in value.split(":"))
    if dist_info.rank == rank and epoch == after:
        import signal

        os.kill(os.getpid(), signal.SIGKILL)


def empty_share(model, device) -> tuple[dict, object, torch.Tensor]:
    """Model outputs, labels and hierarchicality of an empty share of a global batch:
    every loss statistic of it is zero, with the same keys as a real share's, so the
    rank still takes part in the loss's all-reduce."""
    from types import SimpleNamespace

    n = len(model.fidelities)
    out = {"energy": torch.zeros(0, n, dtype=torch.float64, device=device),
           "forces": torch.zeros(0, n, 3, dtype=model.dtype, device=device)}
    batch = SimpleNamespace(energy=out["energy"], forces=out["forces"], num_nodes=0,
                            batch=torch.zeros(0, dtype=torch.long, device=device))
    return out, batch, torch.zeros(n, dtype=model.dtype, device=device)
