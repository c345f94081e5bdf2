"""Assembling one training run from the config: model, adapter, reward, prompts, method, loop."""

from __future__ import annotations

from pathlib import Path

import torch

from ..models import load_lcm_pipeline, load_sd_pipeline
from ..rewards import load_scorer
from ..utils import pick_device, seed_everything
from .lora import add_lora
from .loop import Trainer, TrainSettings

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
LCM_METHODS = {"rocm", "rlcm"}
DIFFUSION_METHODS = {"ddpo", "d3po", "dpok"}


def make_method(name: str, config: dict, **kwargs):
    if name == "rocm":
        from .rocm import ROCM

        r = config["rocm"]
        return ROCM(divergence=kwargs.get("divergence", "kl"), beta=float(kwargs.get("beta", 0.0)),
                    reduction=r["reduction"], final_step=r["final_step"])
    raise ValueError(f"unknown training method '{name}'; known: rocm, rlcm, ddpo, d3po, dpok")


def train_run(config: dict, *, method: str, run_id: str, seed: int, run_dir: str | Path, model_id: str,
              reward_name: str, reward_kwargs: dict, prompts: list[str], max_steps: int | None = None,
              **method_kwargs) -> dict:
    """Train one run into ``run_dir`` (resuming from its latest checkpoint) and return its run.json content."""
    settings = TrainSettings.from_config(config, seed)
    device = pick_device(config["device"])
    dtype = DTYPES[config["model"]["dtype"]]
    seed_everything(seed)
    if method in LCM_METHODS:
        pipe = load_lcm_pipeline(model_id, dtype=dtype, device=device)
        from diffusers import LatentConsistencyModelPipeline as pipeline_cls
    elif method in DIFFUSION_METHODS:
        pipe = load_sd_pipeline(model_id, dtype=dtype, device=device)
        from diffusers import StableDiffusionPipeline as pipeline_cls
    else:
        raise ValueError(f"unknown training method '{method}'; known: {sorted(LCM_METHODS | DIFFUSION_METHODS)}")
    lora = config["train"]["lora"]
    params = add_lora(pipe.unet, lora["rank"], lora["alpha"], lora["target_modules"], seed=seed)
    if dtype != torch.float32:
        for p in params:  # trainable weights stay in float32 (mixed precision), the frozen base in `dtype`
            p.data = p.data.float()
    reward = load_scorer(reward_name, **reward_kwargs).to(device)
    if not getattr(reward, "differentiable", True) and method == "rocm":
        raise ValueError(f"reward '{reward_name}' is not differentiable: ROCM needs a differentiable reward")
    m = make_method(method, config, **method_kwargs)
    info = {"run_id": run_id, "method": method, "model_id": str(model_id), "reward": reward_name,
            "reward_definition": getattr(reward, "definition", ""), "config": config, **method_kwargs}
    trainer = Trainer(m, pipe, params, reward, prompts, settings, run_dir, device, run_info=info,
                      pipeline_cls=pipeline_cls)
    return trainer.run(max_steps=max_steps)
