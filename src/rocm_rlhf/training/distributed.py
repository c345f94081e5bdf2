"""One training run on several devices: data parallelism through Hugging Face accelerate.

``train.num_processes: N`` (N > 1) spreads a ROCM run over N processes, one device each: each keeps its shard of the
global batch, the LoRA gradients are averaged before clipping and process 0 alone writes files; the baselines run in
one process. API: :func:`launch_run` (the train stage's entry: ``accelerate launch`` of N workers calling
``train_run``), :func:`process_group` (a :class:`SingleProcess` or :class:`AcceleratedGroup`, what the loop uses),
:func:`processes_for`, :func:`launch`, :func:`launch_command`, :func:`free_port`, :func:`in_worker`. The conventions
and why gradients are averaged by hand: docs/method.md, section 'The training loop, checkpoints, several devices'.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from typing import Any, Sequence

import torch

WORKER_ENV = "ROCM_RLHF_DISTRIBUTED_WORKER"


def in_worker() -> bool:
    """True inside a process started by :func:`launch` (the parent sets the marker, accelerate the ranks)."""
    return os.environ.get(WORKER_ENV) == "1" and int(os.environ.get("WORLD_SIZE", "1")) > 1


class SingleProcess:
    """The trivial group: one process, every collective the identity."""

    rank = 0
    world_size = 1
    is_main = True

    def __init__(self, device: torch.device):
        self.device = device

    def shard(self, x):
        return x

    def gather(self, t: torch.Tensor) -> torch.Tensor:
        return t

    def average_gradients(self, params: Sequence[torch.nn.Parameter]) -> None:
        return None

    def all_finite(self, t: torch.Tensor) -> bool:
        return bool(torch.isfinite(t).all())

    def sum(self, x: float) -> float:
        return float(x)

    def barrier(self) -> None:
        return None

    def describe(self) -> str:
        return "1 process"


class AcceleratedGroup(SingleProcess):
    """N processes joined by ``accelerate.Accelerator`` (NCCL on GPUs, gloo on CPUs)."""

    def __init__(self):
        from accelerate import Accelerator

        self.accelerator = Accelerator(cpu=not torch.cuda.is_available(), mixed_precision="no")
        self.rank = self.accelerator.process_index
        self.world_size = self.accelerator.num_processes
        self.is_main = self.accelerator.is_main_process
        dev = self.accelerator.device
        self.device = torch.device("cpu") if dev.type == "cpu" else dev

    def _slice(self, n: int) -> slice:
        if n % self.world_size:
            raise ValueError(f"a batch of {n} does not split evenly over {self.world_size} processes: make "
                             f"train.batch_size a multiple of train.num_processes")
        per = n // self.world_size
        return slice(self.rank * per, (self.rank + 1) * per)

    def shard(self, x):
        """This process's contiguous share of a global batch (a list, or a tensor along dim 0)."""
        return x[self._slice(len(x))]

    def gather(self, t: torch.Tensor) -> torch.Tensor:
        """The global batch of a per-sample tensor (concatenated in rank order: the single-process order)."""
        return self.accelerator.gather(t.detach().contiguous().to(self.device)).to(t.device)

    def average_gradients(self, params: Sequence[torch.nn.Parameter]) -> None:
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.reshape(-1) for g in grads]).to(self.device)
        flat = self.accelerator.reduce(flat, reduction="mean")
        offset = 0
        for p, g in zip(params, grads):
            n = g.numel()
            p.grad = flat[offset:offset + n].view_as(g).to(g.device, g.dtype)
            offset += n

    def all_finite(self, t: torch.Tensor) -> bool:
        flag = torch.tensor([0.0 if bool(torch.isfinite(t).all()) else 1.0], device=self.device)
        return float(self.accelerator.reduce(flag, reduction="sum")) == 0.0

    def sum(self, x: float) -> float:
        return float(self.accelerator.reduce(torch.tensor([float(x)], device=self.device, dtype=torch.float64),
                                             reduction="sum"))

    def barrier(self) -> None:
        self.accelerator.wait_for_everyone()

    def describe(self) -> str:
        return f"{self.world_size} processes ({self.accelerator.distributed_type.value}), this is rank {self.rank}"


def process_group(device: torch.device) -> SingleProcess:
    """The group this process trains in: an :class:`AcceleratedGroup` inside a launched worker, else one process
    on ``device``."""
    return AcceleratedGroup() if in_worker() else SingleProcess(device)


def free_port() -> int:
    """A TCP port free on this machine now (the rendezvous port of one launch; concurrent runs each get their own)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def launch_command(num_processes: int, module_args: Sequence[str], threads: int = 1,
                   port: int | None = None) -> list[str]:
    """``accelerate launch`` of ``python -m <module_args>`` on ``num_processes`` local processes."""
    if num_processes < 2:
        raise ValueError(f"a distributed launch needs at least 2 processes, got {num_processes}")
    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(num_processes),
            "--num_machines", "1", "--machine_rank", "0", "--main_process_port", str(port or free_port()),
            "--mixed_precision", "no", "--dynamo_backend", "no", "--num_cpu_threads_per_process", str(max(1, threads)),
            "-m", *module_args]


def processes_for(config: dict, method: str) -> int:
    """Processes (devices) of one training run: ``train.num_processes`` for ROCM, 1 for the baselines."""
    return int(config["train"]["num_processes"]) if method == "rocm" else 1


def launch_run(num_processes: int, run_kwargs: dict[str, Any], threads: int = 1) -> None:
    """``training.run.train_run(**run_kwargs)`` on ``num_processes`` processes (see :func:`launch`); the arguments
    travel in a temporary JSON file, removed when the launch ends."""
    import json
    import tempfile

    fd, path = tempfile.mkstemp(prefix="rocm_rlhf_run.", suffix=".json")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump({"threads": threads, "train_run": {**run_kwargs, "run_dir": str(run_kwargs["run_dir"])}}, fh)
        launch(num_processes, [__name__, path], threads=threads)
    finally:
        os.unlink(path)


def _worker(argv: Sequence[str]) -> None:
    """One process of :func:`launch_run`: ``python -m rocm_rlhf.training.distributed <arguments.json>``."""
    import json

    from ..infra.utils import set_threads
    from .run import train_run

    if len(argv) != 1 or not in_worker():
        raise SystemExit("usage: accelerate launch ... -m rocm_rlhf.training.distributed <arguments.json> "
                         "(started by launch_run, which sets the worker environment)")
    with open(argv[0]) as fh:
        job = json.load(fh)
    set_threads(job["threads"])
    train_run(**job["train_run"])


def launch(num_processes: int, module_args: Sequence[str], threads: int = 1, env: dict[str, Any] | None = None
           ) -> None:
    """Run ``python -m <module_args>`` on ``num_processes`` processes through accelerate and wait for them.

    Their output is streamed to this process's stdout (the job's log). Raises ``RuntimeError`` naming the exit
    status when a worker fails; accelerate then stops the others.
    """
    cmd = launch_command(num_processes, module_args, threads=threads)
    child_env = {**os.environ, **(env or {}), WORKER_ENV: "1"}
    print("launching: " + " ".join(cmd), flush=True)
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=child_env,
                          bufsize=1) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stdout.write(line)
            sys.stdout.flush()
        rc = proc.wait()
    if rc != 0:
        raise RuntimeError(f"the {num_processes}-process training run failed (accelerate launch exit status {rc}); "
                           f"the workers' output is above")


if __name__ == "__main__":
    _worker(sys.argv[1:])
