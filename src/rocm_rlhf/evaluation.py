"""Evaluation: paired samples on the held-out prompts, and per-image scores of every metric.

Every image is a unit (prompt_id, sample_seed) whose noise is drawn from :func:`unit_seed` of that pair alone, so the
base model and every trained run start from identical noise and differences between runs are paired.
API: :func:`eval_units`, :func:`generate_units` (:func:`generate_lcm_units` / :func:`generate_diffusion_units`),
:func:`save_samples` /
:func:`load_samples` (``images.npz`` and ``grid.png``), :func:`score_images` (every metric on every image, with
:func:`diversity`). The files and the diversity metric: docs/method.md, section 'Evaluation, statistics, tables and
figures'.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from tqdm.auto import tqdm

from .infra.utils import atomic_path


def unit_seed(prompt_id: str, sample_seed: int) -> int:
    """A 63-bit seed that depends on (prompt_id, sample_seed) only."""
    h = hashlib.sha256(f"{prompt_id}|{int(sample_seed)}".encode()).digest()
    return int.from_bytes(h[:8], "little") & (2**63 - 1)


def eval_units(prompts: pd.DataFrame, images_per_prompt: int) -> pd.DataFrame:
    """One row per image to generate: prompt_id, prompt, sample_seed (0 .. images_per_prompt-1)."""
    rows = [(pid, p, s) for pid, p in zip(prompts["prompt_id"], prompts["prompt"]) for s in range(images_per_prompt)]
    return pd.DataFrame(rows, columns=["prompt_id", "prompt", "sample_seed"])


@torch.no_grad()
def generate_lcm_units(pipe, units: pd.DataFrame, *, num_steps: int, guidance_scale: float,
                       batch_size: int = 64) -> torch.Tensor:
    """Images in [0, 1] for every unit, with the unit's own noise (see :func:`unit_seed`)."""
    from .models import lcm_generate

    seeds = [unit_seed(p, s) for p, s in zip(units["prompt_id"], units["sample_seed"])]
    return lcm_generate(pipe, units["prompt"].tolist(), num_steps=num_steps, guidance_scale=guidance_scale,
                        seeds=seeds, batch_size=batch_size)


@torch.no_grad()
def generate_diffusion_units(pipe, units: pd.DataFrame, *, num_steps: int, guidance_scale: float, eta: float,
                             batch_size: int = 64) -> torch.Tensor:
    """Images in [0, 1] from a diffusion pipeline through the stochastic DDIM sampler of the diffusion baselines,
    each unit with its own initial and per-step noise (see :func:`unit_seed`)."""
    from .models import ddim_generate

    seeds = [unit_seed(p, s) for p, s in zip(units["prompt_id"], units["sample_seed"])]
    return ddim_generate(pipe, units["prompt"].tolist(), num_steps=num_steps, guidance_scale=guidance_scale, eta=eta,
                         seeds=seeds, batch_size=batch_size)


def generate_units(pipe, units: pd.DataFrame, sampler: dict, batch_size: int = 64) -> torch.Tensor:
    """Images in [0, 1] for every unit through a run's own sampler: ``sampler`` is ``{"generator": "lcm",
    "num_steps", "guidance_scale"}`` or ``{"generator": "diffusion", "num_steps", "guidance_scale", "eta"}`` (a
    plain dict, as the pipeline stages build it from the config), used by the evaluation samples and by the training
    runs' held-out probe alike."""
    kw = dict(sampler)
    kind = kw.pop("generator")
    if kind == "lcm":
        return generate_lcm_units(pipe, units, batch_size=batch_size, **kw)
    if kind == "diffusion":
        return generate_diffusion_units(pipe, units, batch_size=batch_size, **kw)
    raise ValueError(f"unknown generator {kind!r} in a sampler spec; expected 'lcm' or 'diffusion'")


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) in [0, 1] -> (B, H, W, 3) uint8, rounding as PIL does when saving."""
    return (images.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def from_uint8(arr: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(arr).permute(0, 3, 1, 2).float() / 255.0


def sample_grid(images: torch.Tensor, units: pd.DataFrame, scale: int = 2) -> np.ndarray:
    """One picture of a set of samples, (H, W, 3) uint8: a row per prompt, a column per sample seed, white gaps;
    ``scale`` enlarges it (nearest neighbour). The evaluation's ``grid.png`` and the training runs' sample grids
    (rocm_rlhf.training.monitor) alike."""
    arr = to_uint8(images)
    n_seeds = int(units["sample_seed"].max()) + 1
    n_prompts = math.ceil(len(arr) / n_seeds)
    h, w = arr.shape[1:3]
    pad = 2
    grid = np.full((n_prompts * (h + pad) + pad, n_seeds * (w + pad) + pad, 3), 255, np.uint8)
    for i, (r, c) in enumerate(zip(np.arange(len(arr)) // n_seeds, units["sample_seed"].to_numpy())):
        grid[pad + r * (h + pad): pad + r * (h + pad) + h, pad + c * (w + pad): pad + c * (w + pad) + w] = arr[i]
    if scale > 1:
        grid = grid.repeat(scale, axis=0).repeat(scale, axis=1)
    return grid


def save_samples(images: torch.Tensor, units: pd.DataFrame, out_npz: str | Path, out_grid: str | Path,
                 scale: int = 2) -> None:
    arr = to_uint8(images)
    with atomic_path(out_npz) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, images=arr, prompt_id=units["prompt_id"].to_numpy(str),
                                sample_seed=units["sample_seed"].to_numpy(np.int64),
                                prompt=units["prompt"].to_numpy(str))
    with atomic_path(out_grid) as tmp:
        Image.fromarray(sample_grid(images, units, scale)).save(tmp, format="PNG")


def load_samples(path: str | Path) -> tuple[torch.Tensor, pd.DataFrame]:
    with np.load(path, allow_pickle=False) as z:
        images = from_uint8(z["images"])
        units = pd.DataFrame({"prompt_id": z["prompt_id"].astype(str), "sample_seed": z["sample_seed"],
                              "prompt": z["prompt"].astype(str)})
    return images, units


def diversity(images: torch.Tensor, units: pd.DataFrame) -> np.ndarray:
    """Per image: mean RMS pixel distance to the other images of the same prompt (NaN if it is alone)."""
    out = np.full(len(units), np.nan)
    flat = images.flatten(1).double()
    for _, idx in units.groupby("prompt_id", sort=False).indices.items():
        if len(idx) < 2:
            continue
        x = flat[idx]
        d = torch.cdist(x, x) / math.sqrt(x.shape[1])
        out[idx] = (d.sum(1) / (len(idx) - 1)).numpy()
    return out


@torch.no_grad()
def score_images(images: torch.Tensor, units: pd.DataFrame, scorers: dict, batch_size: int = 64,
                 device: str | torch.device = "cpu") -> pd.DataFrame:
    """Long table (prompt_id, sample_seed, prompt, metric, value) of every scorer on every image, batched."""
    from .rewards import scores_of

    frames = []
    prompts = units["prompt"].tolist()
    for name, scorer in scorers.items():
        vals = []
        for i in tqdm(range(0, len(images), batch_size), desc=name, mininterval=5.0, ascii=True):
            batch = images[i: i + batch_size].to(device)
            vals.append(scores_of(scorer, batch, prompts[i: i + batch_size]).float().cpu())
        frames.append(units.assign(metric=name, value=torch.cat(vals).numpy()))
    frames.append(units.assign(metric="diversity", value=diversity(images, units)))
    return pd.concat(frames, ignore_index=True)
