"""Multi-process (DDP) training as launched by `torchrun` / `accelerate launch`: which process this is, and the
few collective steps the train job needs. Every function is also right in a single process (rank 0 of 1).

Under DDP each process trains on its own batches and the Trainer averages the gradients; only rank 0 evaluates,
logs to MLflow, reports to the sweep and saves (`is_main`). The other ranks wait for it at `barrier`s: after
mining (rank 0 fills the cache, the others read it) and at the end.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator


def world_size() -> int:
    """Processes in the job: torch.distributed's world when it is up, else the launcher's WORLD_SIZE (1)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return int(dist.get_world_size())
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    """This process's rank (0 in a single process)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return int(dist.get_rank())
    return int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    """Rank 0: the process that evaluates, logs, reports and saves."""
    return rank() == 0


def init(device: str | None = None) -> None:
    """Start the process group under a launcher (WORLD_SIZE > 1): gloo on CPU, nccl on CUDA; a no-op otherwise.
    The Trainer (accelerate) reuses it."""
    import torch
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return
    cuda = torch.cuda.is_available() and (device or "cuda") != "cpu"
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend="nccl" if cuda else "gloo")


def barrier() -> None:
    """Wait for every rank (a no-op in a single process)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


@contextlib.contextmanager
def main_first() -> Iterator[None]:
    """Rank 0 runs the block first (e.g. fills a cache); the other ranks run it after it is done."""
    if not is_main():
        barrier()
    try:
        yield
    finally:
        if is_main():
            barrier()
