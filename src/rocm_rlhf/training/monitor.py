"""Watching a training run while it runs: accelerate's experiment trackers, a sample grid, peak memory.

:class:`Monitor` sends the rows of ``log.csv`` (every column, at each row's step) to the configured trackers every
``train.log_every`` steps, when the loop also rewrites the run's ``log.csv``, and a grid of the held-out probe's
images (fixed validation prompts and noise, :mod:`rocm_rlhf.training.probe`) as an image every
``train.sample_every`` steps. Trackers (``train.trackers``): ``tensorboard`` (the default; event files in
``results/runs/<run>/tb``, read with ``tensorboard --logdir results/runs``), ``wandb`` and ``mlflow`` (project or
experiment ``train.tracker_project``, run name the run id; their own environment variables, e.g. ``WANDB_MODE=offline``
or ``MLFLOW_TRACKING_URI``, apply). Only process 0 of a run logs. Monitoring reads the run and never draws the
training's randomness: a run's ``log.csv`` and adapter are the same with or without it. :func:`tracker_problems` is
torch-free (the config validation calls it), :func:`peak_memory` is what ``run.json`` records.
"""

from __future__ import annotations

import importlib.util
import math
import platform
from pathlib import Path

#: tracker name -> the pip package it needs
TRACKERS = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}
TB_DIR = "tb"
"""The TensorBoard folder inside a run's folder: ``results/runs/<run>/tb``."""


def tracker_problems(trackers) -> list[str]:
    """Config errors of ``train.trackers``: unknown names and trackers whose package is not installed (checked
    before any job runs, so that a run never trains for an hour and then fails to log)."""
    out = []
    for name in trackers:
        if name not in TRACKERS:
            out.append(f"config key 'train.trackers': unknown tracker '{name}'; known: {', '.join(TRACKERS)} "
                       f"(or [] for none)")
        elif importlib.util.find_spec(TRACKERS[name]) is None:
            out.append(f"config key 'train.trackers': tracker '{name}' needs the Python package '{TRACKERS[name]}', "
                       f"which is not installed: pip install {TRACKERS[name]} (in the training environment), or "
                       f"remove '{name}' from train.trackers")
    return out


def peak_memory(device) -> dict:
    """What ``run.json`` records of the process's memory and device: ``device_name``, ``peak_memory_bytes`` and
    ``peak_memory_kind`` (on CUDA ``torch.cuda.max_memory_allocated``, the tensors' peak on the device; on CPU the
    process's peak resident set size, ``ru_maxrss``, which includes the Python interpreter and the libraries). The
    peak is of the process that finished the run: a resumed run reports its last session."""
    import resource

    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return {"device_name": torch.cuda.get_device_name(device),
                "peak_memory_bytes": int(torch.cuda.max_memory_allocated(device)),
                "peak_memory_kind": "torch.cuda.max_memory_allocated"}
    rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux (bytes on macOS)
    scale = 1 if platform.system() == "Darwin" else 1024
    return {"device_name": _cpu_name(), "peak_memory_bytes": int(rss_kib * scale),
            "peak_memory_kind": "peak resident set size (ru_maxrss)"}


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


class Monitor:
    """The trackers of one run (process 0 only). ``trackers``: names from :data:`TRACKERS`; ``hparams``: plain
    values stored with a W&B or MLflow run (its settings; run.json has them for TensorBoard); ``start_step``: the step the run resumes after (TensorBoard then hides
    the events a killed session wrote past it, so a resumed run's curves have no doubled steps)."""

    def __init__(self, run_dir: str | Path, run_name: str, trackers, *, project: str = "rocm-rlhf",
                 hparams: dict | None = None, start_step: int = 0):
        problems = tracker_problems(trackers)
        if problems:
            raise ValueError("; ".join(problems))
        self.run_dir = Path(run_dir)
        self.trackers = []
        self.logged_step = start_step
        for name in trackers:
            self.trackers.append(self._make(name, run_name, project, start_step))
        for t in self.trackers:
            t.start()
            if hparams and t.name != "tensorboard":  # TensorBoard's hparams would add a run per session to the list
                try:
                    t.store_init_configuration(hparams)
                except Exception as err:  # noqa: BLE001 -- a tracker that rejects a value must not stop training
                    print(f"tracker {t.name}: could not store the run's settings ({type(err).__name__}: {err})",
                          flush=True)

    def _make(self, name: str, run_name: str, project: str, start_step: int):
        from accelerate.tracking import MLflowTracker, TensorBoardTracker, WandBTracker

        if name == "tensorboard":
            return TensorBoardTracker(TB_DIR, self.run_dir, purge_step=start_step + 1 if start_step else None)
        if name == "wandb":
            return WandBTracker(project, name=run_name, dir=str(self.run_dir), resume="allow", id=_wandb_id(
                self.run_dir, run_name))
        return MLflowTracker(experiment_name=project, run_name=run_name)

    def log_rows(self, rows: list[dict]) -> None:
        """Every row of ``log.csv`` after the last logged step, each at its own step (numbers only; NaN is left
        out, as an empty cell of log.csv)."""
        for row in rows:
            step = int(row["step"])
            if step <= self.logged_step:
                continue
            values = {f"train/{k}": float(v) for k, v in row.items()
                      if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)
                      and math.isfinite(float(v))}
            for t in self.trackers:
                t.log(values, step=step)
            self.logged_step = step

    def log_images(self, grid, step: int, tag: str = "samples") -> None:
        """A sample grid ((H, W, 3) uint8, :func:`rocm_rlhf.evaluation.sample_grid`) at ``step``."""
        for t in self.trackers:
            if t.name == "tensorboard":
                t.log_images({tag: grid[None]}, step=step, dataformats="NHWC")
            elif t.name == "wandb":
                t.log_images({tag: [grid]}, step=step)
            else:  # accelerate's MLflowTracker has no log_images
                import mlflow

                mlflow.log_image(grid, key=tag, step=step)

    def finish(self) -> None:
        for t in self.trackers:
            t.finish()
        self.trackers = []


def _wandb_id(run_dir: Path, run_name: str) -> str:
    """A W&B run id kept in the run's folder, so that a resumed run continues its W&B run."""
    import uuid

    path = run_dir / "wandb_run_id"
    if path.exists():
        return path.read_text().strip()
    run_dir.mkdir(parents=True, exist_ok=True)
    rid = uuid.uuid4().hex  # W&B ids take few characters: a run id's dots and slashes are not among them
    path.write_text(rid)
    return rid
