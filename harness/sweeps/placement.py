"""Where concurrent jobs run on one machine: one GPU each, and a disjoint, equal share of the CPU cores.

The local sweep executor runs `cuda` jobs one per GPU at once. Each job's process feeds its GPU from the
CPU (Python, kernel launches, data indexing), so jobs that share cores slow each other down unevenly.
Every job therefore gets its own block of cores, and all blocks have the same size so that jobs stay
comparable; cores left over after an even split stay idle.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from harness.errors import HarnessError


@dataclass(frozen=True)
class Slot:
    """One place to run a job: a GPU id for CUDA_VISIBLE_DEVICES and the cores the job may use."""

    gpu: str
    cores: tuple[int, ...]


def split_cores(cores: Sequence[int], parts: int) -> list[list[int]]:
    """`parts` disjoint blocks of equal size from `cores`, in order; the remainder is left out."""
    if parts < 1:
        raise ValueError(f"cannot split cores into {parts} parts")
    ordered = sorted(set(cores))
    size = len(ordered) // parts
    if size == 0:
        raise HarnessError(f"{parts} concurrent jobs need at least {parts} CPU cores, "
                           f"but this process may use {len(ordered)}")
    return [ordered[i * size:(i + 1) * size] for i in range(parts)]


def gpu_slots(gpus: Sequence[str], cores: Sequence[int]) -> list[Slot]:
    """One slot per GPU, each with its own cores; fewer slots than GPUs when there are fewer cores."""
    if not gpus:
        raise HarnessError("device cuda: no GPU visible (nvidia-smi lists none)")
    n = min(len(gpus), len(set(cores)))
    return [Slot(gpu, tuple(block)) for gpu, block in zip(gpus, split_cores(cores, n))]


def job_threads(requested: int, slot: Slot) -> int:
    """Threads of a job in `slot`: as requested (0 = all), never more than its cores."""
    return min(requested or len(slot.cores), len(slot.cores))


def ray_gpu_cores(cores: Sequence[int], gpu_ids: Sequence[str], node_gpus: int) -> tuple[int, ...] | None:
    """The cores of a Ray GPU job: the block the local executor gives the slot of the same GPU.

    `cores` are all of the node's cores, `gpu_ids` the GPU ids Ray assigned to the task (one: a job asks
    for one GPU) and `node_gpus` the node's GPU count. Ray's ids are node-local indices 0..node_gpus-1
    when its raylet sees every GPU; for anything else (no id, several, an id outside that range, e.g. a
    raylet started with a subset of CUDA_VISIBLE_DEVICES) the block is unknown and None is returned: the
    job then keeps every core, as before.
    """
    if len(gpu_ids) != 1 or not str(gpu_ids[0]).isdigit() or node_gpus < 1:
        return None
    index = int(gpu_ids[0])
    blocks = min(node_gpus, len(set(cores)))
    if index >= node_gpus:
        return None
    if index >= blocks:  # as gpu_slots: with fewer cores than GPUs, the GPUs beyond them get no slot
        raise HarnessError(f"GPU {index} of a node with {node_gpus} GPUs and {len(set(cores))} CPU cores: "
                           "every concurrent GPU job needs a core of its own")
    return tuple(split_cores(cores, blocks)[index])
