"""Collective IR ops for tensor parallelism."""

import torch

from ir.registry import ir_op


@ir_op("all_reduce", opaque=True, example=lambda: (torch.randn(5, 32), 1))
def all_reduce(x: torch.Tensor, group_size: int) -> torch.Tensor:
    """Sum `x` over the `group_size` ranks of the tensor-parallel group.

    With one rank (or no process group, as when a TP>1 graph is only captured) it is the
    identity; otherwise it sums through `torch.distributed` (NCCL on GPU, gloo on CPU).
    """
    import torch.distributed as dist

    out = x.clone()
    if group_size > 1 and dist.is_available() and dist.is_initialized():
        dist.all_reduce(out)
    return out
