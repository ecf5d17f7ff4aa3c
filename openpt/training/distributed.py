"""Data-parallel runs on Hugging Face ``accelerate``: the process group, shares, gradient sums.

``openpt run --num-processes N`` starts N copies of itself with accelerate's launcher (or run
``accelerate launch -m openpt.cli run ...`` yourself). Every process builds the same model and
draws the same global batches (same seeds); each takes its contiguous share of a batch, and the
gradients are summed across processes with weights ``n_local / n_global``, so that one step equals
the single-process step on the whole global batch (up to the order of float additions).
Evaluation splits the examples the same way and gathers the predictions. Only the main process
writes files. With one process every function here is a no-op.
"""
from __future__ import annotations

import os
import socket
import sys
from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

import torch

from ..errors import ConfigError

LAUNCHED_VARIABLE = "WORLD_SIZE"  # set by accelerate's (torchrun's) launcher in every process
CPU_VARIABLE = "OPENPT_DISTRIBUTED_CPU"  # "1": CPU processes over gloo even where there are GPUs (a run with device: cpu)


@dataclass(frozen=True)
class World:
    """This process's place in a data-parallel run (``size`` 1: a plain single-process run)."""

    size: int = 1
    rank: int = 0
    device: str = "cpu"  # where collective tensors live: the process's GPU under NCCL

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def share(self, count: int) -> range:
        """This process's contiguous share of ``count`` items (shares differ by at most one)."""
        base, extra = divmod(count, self.size)
        start = self.rank * base + min(self.rank, extra)
        return range(start, start + base + (self.rank < extra))

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Element-wise sum over processes."""
        if self.size == 1:
            return tensor
        from accelerate.utils import reduce

        return reduce(tensor, reduction="sum")

    def sync_gradients(self, params: Sequence[torch.nn.Parameter], weight: float) -> None:
        """Replace each gradient by the ``weight``-weighted sum of the processes' gradients."""
        if self.size == 1:
            return
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = self.sum(torch.cat([g.reshape(-1) for g in grads]) * weight)
        offset = 0
        for p in params:
            p.grad = flat[offset:offset + p.numel()].view_as(p).clone()
            offset += p.numel()

    def gather(self, local: Sequence[int], count: int) -> list[int]:
        """All processes' :meth:`share` results of ``count`` items, back in item order."""
        if self.size == 1:
            return list(local)
        from accelerate.utils import gather

        width = -(-count // self.size)
        padded = torch.full((width,), -1, dtype=torch.long, device=self.device)
        padded[: len(local)] = torch.as_tensor(list(local), dtype=torch.long)
        rows = gather(padded).view(self.size, width)
        return [v for rank in range(self.size) for v in rows[rank, : len(World(self.size, rank).share(count))].tolist()]

    def barrier(self) -> None:
        """Wait for every process (on this process's GPU under NCCL; gloo needs no device)."""
        if self.size > 1:
            import torch.distributed as dist

            dist.barrier(device_ids=[torch.device(self.device).index or 0] if self.device.startswith("cuda") else None)


@lru_cache(maxsize=1)
def current() -> World:
    """The :class:`World` of this process; joins the process group when launched distributed."""
    if int(os.environ.get(LAUNCHED_VARIABLE, "1")) <= 1:
        return World()
    from accelerate import PartialState

    cpu = os.environ.get(CPU_VARIABLE) == "1" or not torch.cuda.is_available()
    state = PartialState(cpu=cpu)  # NCCL with one GPU per process (local rank), or gloo on the CPU
    device = state.device if state.device.type == "cuda" else torch.device("cpu")
    return World(state.num_processes, state.process_index, str(device))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch_command(num_processes: int, arguments: Sequence[str], *, cpu: bool = True) -> list[str]:
    """The ``accelerate launch`` command that runs ``openpt <arguments>`` in ``num_processes`` processes
    on this machine (accelerate's torchrun-based launcher): one per GPU over NCCL, or (``cpu``) CPU
    processes over gloo; run it with :data:`CPU_VARIABLE` set to ``1`` in the environment for the latter."""
    if num_processes < 2:
        raise ConfigError(f"--num-processes must be at least 2 to launch a data-parallel run, got {num_processes}")
    if not cpu and torch.cuda.device_count() < num_processes:
        raise ConfigError(f"--num-processes {num_processes} needs one GPU per process; this machine has {torch.cuda.device_count()} "
                          "(device: cpu runs CPU processes)", key="device")
    # precision and compilation are openpt's own (prompt.precision, prompt.compile): accelerate's are "no", given
    # explicitly so that its launcher does not print its defaults as a warning
    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_machines", "1",
            "--num_processes", str(num_processes), "--mixed_precision", "no", "--dynamo_backend", "no",
            "--main_process_port", str(free_port()),
            "-m", "openpt.cli", *arguments]
