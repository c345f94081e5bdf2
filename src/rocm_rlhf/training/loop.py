"""The training loop shared by ROCM and the baselines: everything that is not a method's own mathematics.

:class:`Trainer` runs a method for ``settings.steps`` steps: seeds, AdamW over the LoRA parameters, gradient clipping,
mixed precision, reward-query counting (:class:`CountingScorer`), cost accounting, ``log.csv``, checkpoints with
resume, NaN detection, the final adapter and ``run.json``. A method has ``train_step(ctx, step) -> dict`` (updating
through :meth:`Context.update`) and optionally ``setup(ctx)``, ``queries_per_step()`` and ``extra_state()`` /
``load_extra_state(d)``; :class:`TrainSettings` are the loop's settings. Every step draws its randomness from
generators seeded by (run seed, step), so a resumed run replays exactly. Several devices and the cost units:
docs/method.md, section 'The training loop, checkpoints, several devices'.
"""

from __future__ import annotations

import json
import logging
import math
import os
import resource
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from ..infra.utils import atomic_path, versions, write_json
from .lora import load_lora_state_dict, lora_state_dict, save_lora
from .monitor import peak_memory

log = logging.getLogger(__name__)


class TrainingDivergedError(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class CheckpointError(RuntimeError):
    """A checkpoint cannot be written, or cannot be resumed from (the message says why)."""


CHECKPOINT_FILES = ("adapter.safetensors", "trainer.pt", "log.csv")
# how a run is checkpointed, logged and watched, not what it learns
OPERATIONAL_SETTINGS = ("checkpoint_every", "log_every", "sample_every", "trackers", "tracker_project")


def _sha256(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _fingerprint(ref) -> str:
    """For a local file or folder: (path, size, modification time) of its files, so that rebuilding it changes the
    fingerprint; anything else (a hub id, whose cached snapshot is pinned) as it is."""
    path = Path(str(ref)).expanduser() if str(ref) else None
    if path is None or not path.exists():
        return str(ref)
    files = [path] if path.is_file() else sorted(f for f in path.rglob("*") if f.is_file())
    return json.dumps([(str(f.relative_to(path)) if f != path else f.name, f.stat().st_size, f.stat().st_mtime_ns)
                       for f in files])


def _fsync(path: Path) -> None:
    """Flush a file's (or a folder's entries') data to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class CountingScorer(torch.nn.Module):
    """Wraps a reward model and counts every image it scores (the reward-query budget); what it returns is checked
    (:func:`rocm_rlhf.rewards.checked_scores`: one score per image, or one error naming the scorer); a non-finite
    score is counted (``nonfinite``), and the run stops on the non-finite loss or reward it makes, naming it."""

    def __init__(self, scorer, world_size: int = 1):
        super().__init__()
        self.scorer = scorer
        self.queries = 0
        self.world_size = world_size  # equal shards: every process scores as many images, the count is global
        self.nonfinite = 0  # non-finite scores returned so far: named when the run stops on a non-finite loss

    def forward(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        from ..rewards import scores_of

        self.queries += images.shape[0] * self.world_size
        scores = scores_of(self.scorer, images, prompts)
        self.nonfinite += int((~torch.isfinite(scores.detach())).sum())
        return scores

    def nonfinite_cause(self) -> str:
        """Words for an error message: how many non-finite scores the reward returned so far ('' if none)."""
        from ..rewards import scorer_name

        if not self.nonfinite:
            return ""
        return f" (the reward, {scorer_name(self.scorer)}, returned {self.nonfinite} non-finite score(s) so far)"


MIXED_PRECISION = ("no", "bf16")


def check_mixed_precision(value: str) -> None:
    """fp16 autocast needs a loss scaler (small LoRA gradients underflow in fp16), which this trainer does not have:
    refused, pointing to bf16 (float32's exponent range, no scaler needed)."""
    from ..infra.config import FP16_REFUSED

    if value == "fp16":
        raise ValueError(f"train.mixed_precision: {FP16_REFUSED}")
    if value not in MIXED_PRECISION:
        raise ValueError(f"train.mixed_precision must be one of {MIXED_PRECISION}, got {value!r}")


@dataclass
class TrainSettings:
    steps: int
    batch_size: int
    lr: float
    seed: int
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    checkpoint_every: int = 20
    log_every: int = 1
    mixed_precision: str = "no"
    gradient_checkpointing: bool = False
    truncated_backprop: int = 0
    num_steps: int = 4
    guidance_scale: float = 3.0
    trackers: tuple[str, ...] = ()  # rocm_rlhf.training.monitor.TRACKERS; () = log.csv only
    sample_every: int | None = None  # sample grids: None = at the probe's steps, 0 = none, N = every N steps
    tracker_project: str = "rocm-rlhf"

    def __post_init__(self):
        check_mixed_precision(self.mixed_precision)

    @classmethod
    def from_config(cls, config: dict, seed: int) -> "TrainSettings":
        t = config["train"]
        return cls(steps=t["steps"], batch_size=t["batch_size"], lr=t["lr"], seed=seed,
                   weight_decay=t["weight_decay"], grad_clip=t["grad_clip"], checkpoint_every=t["checkpoint_every"],
                   log_every=t["log_every"], mixed_precision=t["mixed_precision"],
                   gradient_checkpointing=t["gradient_checkpointing"], truncated_backprop=t["truncated_backprop"],
                   num_steps=config["model"]["num_steps"], guidance_scale=config["model"]["guidance_scale"],
                   trackers=tuple(t.get("trackers", ())), sample_every=t.get("sample_every"),
                   tracker_project=t.get("tracker_project", "rocm-rlhf"))


@dataclass
class Context:
    """What a method sees: the pipeline, the adapter's parameters, the reward, the prompts, the settings."""

    pipe: Any
    params: list[torch.nn.Parameter]
    reward: CountingScorer
    prompts: list[str]
    settings: TrainSettings
    device: torch.device
    optimizer: torch.optim.Optimizer
    group: Any = None  # the process group (rocm_rlhf.training.distributed); None: one process
    updates: int = 0
    grad_norms: list[float] = field(default_factory=list)

    def __post_init__(self):
        if self.group is None:
            from .distributed import SingleProcess

            self.group = SingleProcess(self.device)

    def shard(self, x):
        """This process's share of a global batch (a list, or a tensor along dim 0); the whole batch in one process."""
        return self.group.shard(x)

    def gather(self, t: torch.Tensor) -> torch.Tensor:
        """A per-sample tensor over the global batch (for logging); itself in one process."""
        return self.group.gather(t)

    @property
    def unet(self):
        return self.pipe.unet

    def autocast(self):
        mp = self.settings.mixed_precision
        if mp == "no" or self.device.type != "cuda":
            return torch.autocast(device_type=self.device.type, enabled=False)
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)

    def generator(self, step: int, stream: int = 0) -> torch.Generator:
        """A CPU generator seeded by (seed, step, stream): the same numbers whenever the step is replayed."""
        s = np.random.SeedSequence([self.settings.seed, step, stream]).generate_state(1)[0]
        return torch.Generator().manual_seed(int(s))

    def batch_prompts(self, step: int, n: int | None = None) -> list[str]:
        rng = np.random.default_rng([self.settings.seed, step, 99])
        n = n or self.settings.batch_size
        return [self.prompts[i] for i in rng.integers(0, len(self.prompts), size=n)]

    def update(self, loss: torch.Tensor) -> None:
        """Backward, average the gradients over the processes, clip, step. Raises TrainingDivergedError on a
        non-finite loss (in any process) or gradient, before stepping."""
        if not self.group.all_finite(loss.detach()):
            value = loss.item()
            what = value if not math.isfinite(value) else "not finite in another process"
            cause = getattr(self.reward, "nonfinite_cause", str)()  # a non-finite reward named
            raise TrainingDivergedError(f"loss is {what} at update {self.updates + 1}{cause}")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.group.average_gradients(self.params)
        clip = self.settings.grad_clip if self.settings.grad_clip > 0 else float("inf")
        norm = torch.nn.utils.clip_grad_norm_(self.params, clip)
        if not torch.isfinite(norm):
            raise TrainingDivergedError(f"gradient norm is {norm.item()} at update {self.updates + 1}")
        self.optimizer.step()
        self.updates += 1
        self.grad_norms.append(float(norm))


def reward_stats(reward: torch.Tensor) -> dict:
    """The logged reward of one step's freshly sampled batch: ``reward_mean`` and ``reward_std`` (unbiased). The std
    of a single image is undefined: with a batch of one (the paper's ROCM setting) ``reward_std`` is NaN, an empty
    cell in ``log.csv``, never a number that looks like zero spread."""
    r = reward.detach().double()
    return {"reward_mean": r.mean().item(), "reward_std": r.std().item() if r.numel() > 1 else float("nan")}


def _cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class Trainer:
    """Runs a method for ``settings.steps`` steps in ``run_dir`` with checkpoints and resume."""

    def __init__(self, method, pipe, params, reward, prompts, settings: TrainSettings, run_dir: str | Path,
                 device: torch.device, run_info: dict | None = None, pipeline_cls=None, group=None, probe=None):
        self.method = method
        self.probe = probe  # rocm_rlhf.training.probe.HeldOutProbe or None: held-out scores at the checkpoints
        self.settings = settings
        self.run_dir = Path(run_dir)
        self.ckpt_dir = self.run_dir / "checkpoints"
        self.run_info = dict(run_info or {})
        self.pipeline_cls = pipeline_cls
        opt = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)
        world = group.world_size if group is not None else 1
        self.ctx = Context(pipe=pipe, params=params, reward=CountingScorer(reward, world), prompts=list(prompts),
                           settings=settings, device=device, optimizer=opt, group=group)
        self.group = self.ctx.group
        if self.group.world_size > 1 and not getattr(method, "data_parallel", False):
            raise ValueError(f"{type(method).__name__} runs in one process: only ROCM shards its batch over "
                             f"train.num_processes > 1 processes")
        self.rows: list[dict] = []
        self.curve: list[dict] = []  # the probe's rows (curve.csv), checkpointed with the optimizer state
        self.start_step = 0
        self.elapsed_wall = 0.0
        self.elapsed_device_s = 0.0
        self.monitor = None  # process 0's trackers while run() runs (rocm_rlhf.training.monitor)

    # ------------------------------------------------------------------ checkpoints
    def complete_checkpoints(self) -> list[Path]:
        """``checkpoints/step_*`` folders that were renamed into place (they hold ``state.json``), oldest first."""
        if not self.ckpt_dir.exists():
            return []
        return sorted((p for p in self.ckpt_dir.glob("step_*") if (p / "state.json").exists()),
                      key=lambda p: int(p.name.split("_")[1]))

    def latest_checkpoint(self) -> Path | None:
        done = self.complete_checkpoints()
        return done[-1] if done else None

    def training_digest(self) -> str:
        """A hash of everything that shapes the trajectory: the method and its settings, the loop's settings except
        the operational ones and ``steps`` (a run may be extended: randomness is per step and no schedule depends
        on the total), the model, the reward, LoRA, dtype, the prompts and the held-out probe (whose rows a
        checkpoint carries). A checkpoint of another digest was made
        under other settings and is never resumed from."""
        import dataclasses
        import hashlib

        settings = {k: v for k, v in self.settings.__dict__.items() if k not in ("steps", *OPERATIONAL_SETTINGS)}
        method = ({f.name: getattr(self.method, f.name) for f in dataclasses.fields(self.method) if f.init}
                  if dataclasses.is_dataclass(self.method) else {})
        info = {k: v for k, v in self.run_info.items() if k not in ("config", "run_id")}
        info["model_files"] = _fingerprint(info.get("model_id", ""))  # a rebuilt local model is another model
        kwargs = info.get("reward_kwargs") or {}  # one scorer's options, or a weighted sum's {term: options}
        kwargs = {f"{k}.{kk}" if isinstance(v, dict) else k: vv for k, v in kwargs.items()
                  for kk, vv in (v.items() if isinstance(v, dict) else [(k, v)])}
        info["reward_files"] = {k: _fingerprint(v) for k, v in kwargs.items() if isinstance(v, (str, os.PathLike))}
        surrogate = method.get("surrogate_kwargs") or {}  # the hybrid's surrogate: a rebuilt one is another one
        if surrogate:
            info["surrogate_files"] = {k: _fingerprint(v) for k, v in surrogate.items()
                                       if isinstance(v, (str, os.PathLike))}
        if info.get("init_adapter"):  # the warm start's weights: another adapter is another starting point
            info["init_adapter_files"] = _fingerprint(info["init_adapter"])
        cfg = self.run_info.get("config") or {}
        shaping = {"lora": cfg.get("train", {}).get("lora"), "dtype": cfg.get("model", {}).get("dtype")}
        prompts = hashlib.sha256("\n".join(self.ctx.prompts).encode()).hexdigest()
        probe = self.probe.digest() if self.probe is not None else None  # the curve rows a checkpoint carries
        blob = json.dumps({"method": type(self.method).__name__, "fields": method, "settings": settings,
                           "info": info, "shaping": shaping, "prompts": prompts, "probe": probe}, sort_keys=True,
                          default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def save_checkpoint(self, step: int) -> Path:
        """Process 0 writes ``checkpoints/step_<step>`` atomically; every process waits until it exists."""
        final = self.ckpt_dir / f"step_{step:06d}"
        if self.group.is_main:
            try:
                self._write_checkpoint(step, final)
            except (OSError, RuntimeError) as err:
                shutil.rmtree(self.ckpt_dir / f".tmp_step_{step:06d}", ignore_errors=True)
                previous = self.latest_checkpoint()
                raise CheckpointError(
                    f"could not write checkpoint {final} ({type(err).__name__}: {err}). Is the disk full or the folder "
                    f"read-only? Free space or fix the permissions of {self.ckpt_dir}, then rerun the job: it resumes "
                    f"from " + (f"{previous}, which is intact" if previous else "the start")) from err
        self.group.barrier()
        return final

    def _write_checkpoint(self, step: int, final: Path) -> Path:
        tmp = self.ckpt_dir / f".tmp_step_{step:06d}"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in lora_state_dict(self.ctx.unet).items()}, tmp / "adapter.safetensors")
        extra = self.method.extra_state() if hasattr(self.method, "extra_state") else {}
        torch.save({"optimizer": self.ctx.optimizer.state_dict(), "extra": extra, "curve": self.curve},
                   tmp / "trainer.pt")
        pd.DataFrame(self.rows).to_csv(tmp / "log.csv", index=False)
        state = {"step": step, "reward_queries": self.ctx.reward.queries, "updates": self.ctx.updates,
                 "elapsed_wall": self.elapsed_wall, "elapsed_device_s": self.elapsed_device_s,
                 "training_digest": self.training_digest(),
                 "sha256": {name: _sha256(tmp / name) for name in CHECKPOINT_FILES}}
        (tmp / "state.json").write_text(json.dumps(state))
        for f in tmp.iterdir():  # on disk before the folder is renamed into place
            _fsync(f)
        _fsync(tmp)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync(self.ckpt_dir)
        for old in self.ckpt_dir.glob("step_*"):  # keep the newest two
            if old != final and int(old.name.split("_")[1]) < step - self.settings.checkpoint_every:
                shutil.rmtree(old, ignore_errors=True)
        return final

    def read_checkpoint(self, path: Path) -> dict:
        """Read and verify a checkpoint without touching the model: raises :class:`CheckpointError` saying why it
        cannot be resumed from (made under other settings, past the run's steps, or damaged: a file missing, its
        checksum wrong, unreadable, or a log whose rows do not match its step). ``trainer.pt`` is loaded with
        ``weights_only=True``: a checkpoint holds tensors and plain values, never code."""
        from safetensors.torch import load_file

        try:
            state = json.loads((path / "state.json").read_text())
            step = int(state["step"])
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise CheckpointError(f"damaged: state.json unreadable ({type(err).__name__}: {err})") from err
        if state.get("training_digest") != self.training_digest():
            raise CheckpointError("stale: made under other training settings (its training digest differs)")
        if step > self.settings.steps:
            raise CheckpointError(f"stale: at step {step}, past this run's {self.settings.steps} steps")
        sums = state.get("sha256") or {}
        for name in CHECKPOINT_FILES:
            if not (path / name).is_file():
                raise CheckpointError(f"damaged: {name} is missing")
            if sums.get(name) != _sha256(path / name):
                raise CheckpointError(f"damaged: {name} does not match its checksum")
        try:
            adapter = load_file(path / "adapter.safetensors")
            blob = torch.load(path / "trainer.pt", map_location="cpu", weights_only=True)
            rows = pd.read_csv(path / "log.csv").to_dict("records") if (path / "log.csv").stat().st_size > 1 else []
        except Exception as err:  # noqa: BLE001 -- any failure to read means: cannot resume from it
            raise CheckpointError(f"damaged: unreadable ({type(err).__name__}: {err})") from err
        if len(rows) != step or (rows and int(rows[-1]["step"]) != step):
            raise CheckpointError(f"damaged: log.csv has {len(rows)} rows for step {step}")
        if not all(torch.isfinite(v).all() for v in adapter.values()):
            raise CheckpointError("damaged: the adapter holds non-finite weights")
        return {"state": state, "adapter": adapter, "trainer": blob, "rows": rows}

    def usable_checkpoint(self) -> dict | None:
        """The newest checkpoint this run can resume from, read and verified; every newer one that cannot be is set
        aside (moved to ``checkpoints.set-aside/``, never deleted) with the reason printed to the job's log. None:
        start from scratch. Process 0 decides and moves; the others then read what it kept."""
        if self.group.is_main:
            for path in reversed(self.complete_checkpoints()):
                try:
                    self.read_checkpoint(path)
                    break
                except CheckpointError as err:
                    self._set_aside(path, str(err))
        self.group.barrier()
        latest = self.latest_checkpoint()
        return None if latest is None else {"path": latest, **self.read_checkpoint(latest)}

    def _set_aside(self, path: Path, why: str) -> None:
        dest_dir = self.run_dir / "checkpoints.set-aside"
        dest_dir.mkdir(parents=True, exist_ok=True)
        dest = dest_dir / f"{path.name}.{time.strftime('%Y%m%dT%H%M%S')}"
        n = 1
        while dest.exists():
            dest, n = dest_dir / f"{path.name}.{time.strftime('%Y%m%dT%H%M%S')}.{n}", n + 1
        os.replace(path, dest)
        print(f"checkpoint {path} set aside ({why}): moved to {dest}", flush=True)

    def load_checkpoint(self, ckpt: dict) -> None:
        """Apply a checkpoint read by :meth:`read_checkpoint` (``ckpt["path"]`` names it)."""
        load_lora_state_dict(self.ctx.unet, ckpt["adapter"])
        blob = ckpt["trainer"]
        self.ctx.optimizer.load_state_dict(blob["optimizer"])
        if blob.get("extra") and hasattr(self.method, "load_extra_state"):
            self.method.load_extra_state(blob["extra"])
        state = ckpt["state"]
        self.start_step = state["step"]
        self.ctx.reward.queries = state["reward_queries"]
        self.ctx.updates = state["updates"]
        self.elapsed_wall = state["elapsed_wall"]
        self.elapsed_device_s = state["elapsed_device_s"]
        self.rows = ckpt["rows"]
        self.curve = list(blob.get("curve", []))
        if self.group.is_main:
            print(f"resumed from {ckpt['path']} at step {self.start_step}", flush=True)

    # ------------------------------------------------------------------ the loop
    def batch_arithmetic(self) -> str:
        s = self.settings
        per = getattr(self.method, "queries_per_step", lambda: None)() or s.batch_size
        g = self.group
        spread = (f", {g.world_size} processes x {s.batch_size // g.world_size} samples" if g.world_size > 1 else "")
        return (f"batch arithmetic: {s.steps} steps x {per} reward queries per step = {s.steps * per} reward "
                f"queries; batch size {per}{spread}, {s.num_steps} sampler steps, guidance "
                f"{s.guidance_scale}, lr {s.lr}, {sum(p.numel() for p in self.ctx.params):,} trainable parameters, "
                f"device {self.ctx.device}, mixed precision {s.mixed_precision}")

    def run(self, max_steps: int | None = None) -> dict:
        """Train (resuming if a checkpoint exists). ``max_steps`` stops early (used to test kill-and-resume)."""
        if hasattr(self.method, "setup"):
            self.method.setup(self.ctx)  # creates the method's own state; a checkpoint then overwrites it
        ckpt = self.usable_checkpoint()
        if ckpt is not None:
            self.load_checkpoint(ckpt)
        if self.group.is_main:
            print(self.batch_arithmetic(), flush=True)
        self.monitor = self.start_monitor()
        try:
            end = self.settings.steps if max_steps is None else min(self.settings.steps, max_steps)
            self.train_steps(end)
        finally:
            if self.monitor is not None:
                self.monitor.finish()
        if end < self.settings.steps:
            return {"stopped_at": end}
        return self.finish()

    def start_monitor(self):
        """Process 0's trackers (:class:`rocm_rlhf.training.monitor.Monitor`), None without any."""
        if not self.settings.trackers or not self.group.is_main:
            return None
        from .monitor import Monitor

        s = self.settings
        hparams = {"run_id": self.run_info.get("run_id", ""), "method": self.run_info.get("method", ""),
                   "reward": str(self.run_info.get("reward", "")),
                   **{k: v for k, v in s.__dict__.items() if isinstance(v, (bool, int, float, str))}}
        return Monitor(self.run_dir, self.run_info.get("run_id", self.run_dir.name), s.trackers,
                       project=s.tracker_project, hparams=hparams, start_step=self.start_step)

    def train_steps(self, end: int) -> None:
        """Steps ``start_step + 1 .. end``: log.csv and the trackers every ``log_every`` steps, the probe and a
        checkpoint every ``checkpoint_every`` steps, sample grids every ``sample_every`` steps."""
        s = self.settings
        on_gpu = self.ctx.device.type == "cuda"
        bar = tqdm(total=s.steps, initial=self.start_step, desc=self.run_info.get("run_id", "train"),
                   mininterval=5.0, ascii=True, disable=not self.group.is_main)
        if self.start_step == 0:
            self.watch(0, probe=True)
            self.group.barrier()  # the other processes must not count process 0's probe as training time
        for step in range(self.start_step + 1, end + 1):
            t0, c0 = time.time(), _cpu_seconds()
            out = self.method.train_step(self.ctx, step)
            if on_gpu:
                torch.cuda.synchronize()
            dt = time.time() - t0
            self.elapsed_wall += dt  # every process: devices x wall time on GPU, all processes' CPU time on CPU
            self.elapsed_device_s += self.group.sum(dt if on_gpu else (_cpu_seconds() - c0))
            row = {"step": step, "wall_s": self.elapsed_wall, "device_hours": self.elapsed_device_s / 3600,
                   "device": self.ctx.device.type, "reward_queries": self.ctx.reward.queries,
                   "updates": self.ctx.updates,
                   "grad_norm": self.ctx.grad_norms[-1] if self.ctx.grad_norms else float("nan")}
            row.update({k: (float(v) if not isinstance(v, str) else v) for k, v in out.items()})
            for k in ("reward_mean", "loss"):
                if k in row and not math.isfinite(row[k]):
                    self.flush_log()  # the rows up to the failing step, for the post-mortem
                    raise TrainingDivergedError(f"{k} is {row[k]} at step {step}{self.ctx.reward.nonfinite_cause()}; "
                                                f"last good checkpoint kept in {self.ckpt_dir}")
            self.rows.append(row)
            bar.update(1)
            bar.set_postfix(reward=f"{row.get('reward_mean', float('nan')):.4f}")
            if step % s.log_every == 0 or step == end:
                self.flush_log()
            checkpoint = step % s.checkpoint_every == 0 or step == s.steps
            self.watch(step, probe=checkpoint)
            if checkpoint:
                self.save_checkpoint(step)
        bar.close()

    def flush_log(self) -> None:
        """Process 0 rewrites the run's ``log.csv`` (atomically) with every row so far and sends the new rows to the
        trackers. A resumed run rewrites it from its checkpoint's rows on, so the file ends as an uninterrupted run's."""
        if not self.group.is_main:
            return
        with atomic_path(self.run_dir / "log.csv") as tmp:
            pd.DataFrame(self.rows).to_csv(tmp, index=False)
        if self.monitor is not None:
            self.monitor.log_rows(self.rows)

    def watch(self, step: int, probe: bool) -> None:
        """At ``step``: with ``probe`` the held-out probe scores its images into ``self.curve``; at a sample step
        (``sample_every``; None: the probe's steps) the same images go to the trackers as a grid. Process 0 samples,
        outside the timed training steps; the others wait, so that its sampling is not counted as their training."""
        if self.probe is None:
            return
        every = self.settings.sample_every
        grid = bool(self.settings.trackers) and (probe if every is None else bool(every) and step % every == 0)
        if not (probe or grid):
            return
        if self.group.is_main:
            images = self.probe.sample(self.ctx.pipe)
            if probe:
                values = self.probe.score(images, self.ctx.device)
                self.curve = [r for r in self.curve if r["step"] != step]
                self.curve += self.probe.rows(values, step=step, reward_queries=self.ctx.reward.queries,
                                              device_hours=self.elapsed_device_s / 3600, wall_s=self.elapsed_wall)
            if grid and self.monitor is not None:
                from ..evaluation import sample_grid

                self.monitor.log_images(sample_grid(images, self.probe.units), step)
        if grid and not probe and step:
            self.group.barrier()

    def finish(self) -> dict:
        df = pd.DataFrame(self.rows)
        tail = df.tail(max(1, len(df) // 10))
        final = {
            "reward_mean_first": float(df["reward_mean"].iloc[0]),
            "reward_mean_last10pct": float(tail["reward_mean"].mean()),
            "divergence_mean_last10pct": float(tail["divergence_mean"].mean()) if "divergence_mean" in df else None,
            "reward_queries": int(self.ctx.reward.queries),
            "updates": int(self.ctx.updates),
            "wall_s": self.elapsed_wall,
            "device_hours": self.elapsed_device_s / 3600,
        }
        info = dict(self.run_info)
        info.update({
            "seed": self.settings.seed,
            "settings": self.settings.__dict__,
            "device": str(self.ctx.device),
            "num_processes": self.group.world_size,
            "device_hours_unit": "gpu_hours" if self.ctx.device.type == "cuda" else "cpu_core_hours",
            "batch_arithmetic": self.batch_arithmetic(),
            **peak_memory(self.ctx.device),
            "versions": versions(),
            "final": final,
        })
        if self.group.is_main:
            from .probe import CURVE_COLUMNS

            self.flush_log()
            with atomic_path(self.run_dir / "curve.csv") as tmp:  # header only without a probe
                pd.DataFrame(self.curve, columns=list(CURVE_COLUMNS)).to_csv(tmp, index=False)
            save_lora(self.ctx.unet, self.run_dir / "adapter", self.pipeline_cls)
            write_json(self.run_dir / "run.json", info)
        self.group.barrier()
        return info
