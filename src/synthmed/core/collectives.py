"""Work split over the processes of a launch, and put back together with tensor collectives.

Sampling (``synthmed.generators.sampling``) and the memorisation gate
(``synthmed.privacy.memorisation``) run unchanged on one process. Under a launcher with
several processes (``synthmed launch --processes N``, torchrun; ``synthmed.core.distributed``
reads the environment) each process takes a contiguous block of the work (`block`), and the
blocks are gathered on every process, in rank order, with ``all_gather`` of padded tensors
(`gather_rows`): every process then holds what one process would have computed alone.

Only tensor collectives: ``torch.distributed``'s ``*_object`` collectives pickle, which the
project does not use. The process group is the trainer's: ``accelerate.PartialState``
(what ``Accelerator`` in ``synthmed.generators.training`` initialises), gloo on the CPU,
NCCL on CUDA; `process_group` starts it on first use when the launcher has set
``WORLD_SIZE`` > 1 and nothing has started it yet. torch and accelerate are imported when a
function here is first called (the parameter check imports the modules that import this one).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from synthmed.core import distributed

if TYPE_CHECKING:
    import torch


def active() -> bool:
    """Whether this process is one of several that split the work (``WORLD_SIZE`` > 1)."""
    return distributed.is_distributed()


def process_group(cpu: bool = True) -> None:
    """Start the launch's process group if it is not running yet (several processes only).

    ``accelerate.PartialState``, as the trainer's ``Accelerator`` does: gloo when ``cpu``,
    NCCL on CUDA otherwise. A group already started (by training in the same run) is reused.
    """
    if not active():
        return
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return
    from accelerate import PartialState

    PartialState(cpu=cpu)


def local_device(device: torch.device) -> torch.device:
    """``device`` with this process's GPU when it names CUDA without an index under a launcher
    (``LOCAL_RANK``: process k on this machine takes GPU k, as Accelerate gives it for training)."""
    import torch

    if device.type != "cuda" or device.index is not None or not active():
        return device
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK") or 0))


def block(count: int, parts: int | None = None, part: int | None = None) -> tuple[int, int]:
    """``[start, stop)`` of block ``part`` when ``count`` items are cut into ``parts`` contiguous
    blocks whose sizes differ by at most one (the first ``count % parts`` blocks are one larger).

    Defaults: the launch's world size and this process's rank. A block may be empty (fewer
    items than processes).
    """
    parts = distributed.world_size() if parts is None else parts
    part = distributed.rank() if part is None else part
    if parts < 1 or not 0 <= part < parts or count < 0:
        raise ValueError(f"block: expected count >= 0 and 0 <= part < parts, got count={count}, part={part}, "
                         f"parts={parts}.")
    size, larger = divmod(count, parts)
    start = part * size + min(part, larger)
    return start, start + size + (1 if part < larger else 0)


def chunk_blocks(count: int, chunk: int, parts: int | None = None) -> list[tuple[int, int]]:
    """``[start, stop)`` rows of every process when ``count`` rows, taken in chunks of ``chunk``
    (the last one may be shorter), are split by whole chunks (`block` over the chunks).

    Sampling splits its batches this way and the gate its query chunks: a chunk computed whole
    on any process rounds as on one process. ``parts`` defaults to the launch's world size.
    """
    if chunk < 1:
        raise ValueError(f"chunk_blocks: expected chunk >= 1, got {chunk}.")
    parts = distributed.world_size() if parts is None else parts
    chunks = -(-count // chunk)
    return [(min(a * chunk, count), min(b * chunk, count))
            for a, b in (block(chunks, parts, r) for r in range(parts))]


def _group_device() -> torch.device:
    """Where the backend wants the tensors: the CPU for gloo, this process's GPU for NCCL."""
    import torch
    import torch.distributed as dist

    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def gather_rows(local: torch.Tensor, counts: list[int]) -> torch.Tensor:
    """Every process's ``local`` rows, concatenated in rank order, on every process.

    ``counts[r]``: the rows process ``r`` contributes (every process passes the same list;
    ``local`` has ``counts[rank]`` rows, the other dimensions and the dtype are the same
    everywhere). The blocks are padded to the largest, gathered with ``all_gather`` and cut
    back. One process: ``local`` itself. The result is on ``local``'s device.
    """
    import torch
    import torch.distributed as dist

    if not active():
        return local
    me = distributed.rank()
    if len(counts) != distributed.world_size() or local.shape[0] != counts[me]:
        raise ValueError(f"gather_rows on {distributed.describe()}: {local.shape[0]} local rows, counts {counts} "
                         f"(expected one count per process, {counts[me] if me < len(counts) else '?'} here).")
    largest = max(counts)
    if largest == 0:
        return local
    process_group(cpu=local.device.type != "cuda")
    device = _group_device()
    padded = torch.zeros((largest, *local.shape[1:]), dtype=local.dtype, device=device)
    padded[: local.shape[0]] = local.to(device)
    parts = [torch.empty_like(padded) for _ in counts]
    dist.all_gather(parts, padded)
    return torch.cat([part[:count] for part, count in zip(parts, counts)]).to(local.device)


def all_max(value: int) -> int:
    """The largest of every process's ``value`` (one process: ``value``)."""
    return _all_reduce(value, "max")


def all_min(value: int) -> int:
    """The smallest of every process's ``value`` (one process: ``value``)."""
    return _all_reduce(value, "min")


def _all_reduce(value: int, how: str) -> int:
    import torch
    import torch.distributed as dist

    if not active():
        return int(value)
    process_group()
    tensor = torch.tensor([int(value)], dtype=torch.int64)
    tensor = tensor.to(_group_device())
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX if how == "max" else dist.ReduceOp.MIN)
    return int(tensor.item())
