"""Where a training process runs (torchrun ranks, device) and which samples each rank draws per epoch."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import Sampler

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class DistributedContext:
    """Where this process runs: its rank among ``world_size`` processes and its device."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str = "auto") -> DistributedContext:
    """Read torchrun's RANK/WORLD_SIZE/LOCAL_RANK, pick the device, and join the process group.

    Without those variables this is a single process. CUDA processes use ``cuda:LOCAL_RANK``
    and nccl; CPU processes use gloo.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if use_cuda:
        if not torch.cuda.is_available():
            raise RuntimeError("device: 'cuda' was asked for but PyTorch sees no CUDA device")
        if local_rank >= torch.cuda.device_count():
            raise RuntimeError(f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} CUDA devices are visible")
        torch.cuda.set_device(local_rank)
        target = torch.device("cuda", local_rank)
    else:
        target = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo", timeout=timedelta(minutes=30),
                                **({"device_id": target} if use_cuda else {}))
    return DistributedContext(rank=rank, world_size=world_size, local_rank=local_rank, device=target)


def all_finite(value: torch.Tensor, context: DistributedContext) -> bool:
    """Whether ``value`` is finite on every rank (all ranks must stop together)."""
    flag = torch.isfinite(value.detach()).all().to(torch.float32).reshape(1)
    if context.distributed:
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item() > 0)


# ----------------------------------------------------------------------------- sampling


class EpochSampler(Sampler[int]):
    """Indices of one epoch over concatenated datasets, for one rank, from any batch on.

    Dataset ``d`` contributes ``round(weight_d * size_d)`` draws per epoch: whole shuffled
    passes over it, then a random part of one more. The epoch's draws are shuffled
    together, padded by wrapping to a multiple of ``world_size`` and dealt out
    round-robin, as :class:`torch.utils.data.DistributedSampler` does. Everything is a
    function of (seed, epoch), so ``start_batch`` can resume mid-epoch exactly.
    """

    def __init__(self, sizes: Sequence[int], weights: Sequence[float], batch_size: int, seed: int = 0,
                 rank: int = 0, world_size: int = 1) -> None:
        if len(sizes) != len(weights) or not sizes:
            raise ValueError(f"EpochSampler: expected one weight per dataset, got {len(sizes)} sizes and "
                             f"{len(weights)} weights")
        if any(s < 1 for s in sizes):
            raise ValueError(f"EpochSampler: every dataset needs at least one sample, got sizes {list(sizes)}")
        self.sizes = [int(s) for s in sizes]
        self.weights = [float(w) for w in weights]
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)[:-1]]).astype(np.int64)
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.start_batch = 0
        if self.batches_per_epoch() < 1:
            raise ValueError(f"an epoch of {self.draws_per_epoch()} samples over {world_size} process(es) gives "
                             f"no full batch of {batch_size}; lower batch_size or add data")

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch = int(epoch)
        self.start_batch = int(start_batch)

    def draws_per_epoch(self) -> int:
        return sum(max(1, round(w * s)) for s, w in zip(self.sizes, self.weights))

    def per_rank(self) -> int:
        return math.ceil(self.draws_per_epoch() / self.world_size)

    def batches_per_epoch(self) -> int:
        """Full batches per rank per epoch (the last partial batch is dropped)."""
        return self.per_rank() // self.batch_size

    def epoch_indices(self) -> np.ndarray:
        """This rank's indices of the whole epoch, in order."""
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        draws = []
        for offset, size, weight in zip(self.offsets, self.sizes, self.weights):
            count = max(1, round(weight * size))
            passes = [torch.randperm(size, generator=generator).numpy() for _ in range(math.ceil(count / size))]
            draws.append(np.concatenate(passes)[:count] + offset)
        order = np.concatenate(draws)[torch.randperm(self.draws_per_epoch(), generator=generator).numpy()]
        total = self.per_rank() * self.world_size
        order = np.resize(order, total)  # wraps around to pad
        return order[self.rank::self.world_size][: self.batches_per_epoch() * self.batch_size]

    def __iter__(self) -> Iterator[int]:
        return iter(self.epoch_indices()[self.start_batch * self.batch_size:].tolist())

    def __len__(self) -> int:
        return max(0, (self.batches_per_epoch() - self.start_batch) * self.batch_size)
