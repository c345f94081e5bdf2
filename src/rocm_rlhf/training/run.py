"""Assembling one training run from the config: model, adapter, reward, prompts, method, loop."""

from __future__ import annotations

from pathlib import Path

import torch

from ..models import load_lcm_pipeline, load_sd_pipeline
from ..rewards import load_scorer
from ..infra.utils import pick_device, seed_everything
from .lora import add_lora
from .loop import Trainer, TrainSettings

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
LCM_METHODS = {"rocm", "rlcm"}
DIFFUSION_METHODS = {"ddpo", "d3po", "dpok"}


def make_method(name: str, config: dict, **kwargs):
    """The method object of run ``name`` from the validated config; ``kwargs`` override fields (ROCM: divergence,
    beta; baselines: any field of their dataclass)."""
    if name == "rocm":
        from .rocm import ROCM

        r = config["rocm"]
        return ROCM(divergence=kwargs.get("divergence", "kl"), beta=float(kwargs.get("beta", 0.0)),
                    reduction=r["reduction"], final_step=r["final_step"])
    if name in BASELINES:
        import importlib

        b = config["baselines"]
        fields = {k: v for k, v in b[name].items() if k not in SETTINGS_OVERRIDES}
        fields.update(log_divergence=b["log_divergence"], divergence_reduction=config["rocm"]["reduction"])
        if name == "rlcm":
            fields["final_step"] = config["rocm"]["final_step"]  # the logged KL as ROCM logs it
        if name in DIFFUSION_METHODS:
            fields.update(diffusion_sampling(config, name))
        fields.update(kwargs)
        return getattr(importlib.import_module(f".{name}", __package__), BASELINES[name])(**fields)
    raise ValueError(f"unknown training method '{name}'; known: rocm, rlcm, ddpo, d3po, dpok")


BASELINES = {"rlcm": "RLCM", "ddpo": "DDPO", "d3po": "D3PO", "dpok": "DPOK"}
#: per-baseline keys that set the loop's settings (optimizer, clipping), not the method's fields
SETTINGS_OVERRIDES = ("lr", "grad_clip", "weight_decay")


def diffusion_sampling(config: dict, method: str) -> dict:
    """The DDIM sampler of a diffusion baseline, for its training and its evaluation samples alike: its own
    ``sample_steps`` and ``guidance_scale`` (null: ``model.guidance_scale``) and the shared ``baselines.eta``."""
    b = config["baselines"]
    own = b[method]
    guidance = own["guidance_scale"] if own["guidance_scale"] is not None else config["model"]["guidance_scale"]
    return {"sample_steps": int(own["sample_steps"]), "guidance_scale": float(guidance), "eta": float(b["eta"])}


def reward_query_budget(config: dict) -> int:
    """Reward queries of every baseline run: ``baselines.reward_queries``, or the ROCM budget ``train.steps *
    train.batch_size`` when it is null."""
    b = config["baselines"].get("reward_queries")
    return int(b) if b is not None else int(config["train"]["steps"] * config["train"]["batch_size"])


def steps_for_budget(method, config: dict) -> int:
    """Training steps of a baseline run: ``ceil(budget / queries_per_step)``, so a run never uses fewer reward
    queries than the budget (:func:`reward_query_budget`) and uses exactly the budget when the method's queries per
    step divide it (otherwise at most ``queries_per_step - 1`` more). ``method`` is a name or a method object."""
    m = make_method(method, config) if isinstance(method, str) else method
    return -(-reward_query_budget(config) // int(m.queries_per_step()))


def baseline_settings(name: str, method, config: dict, settings: TrainSettings) -> TrainSettings:
    """The loop settings of a baseline run: the number of steps from the reward-query budget, the method's own
    learning rate, weight decay and gradient clipping (``baselines.<name>``), and (diffusion policies) its sampler
    steps and guidance recorded in place of the LCM's."""
    settings.steps = steps_for_budget(method, config)
    hp = config["baselines"][name]
    settings.lr = float(hp["lr"])
    settings.weight_decay = float(hp["weight_decay"])
    settings.grad_clip = float(hp["grad_clip"])
    if name in DIFFUSION_METHODS:
        settings.num_steps, settings.guidance_scale = method.sample_steps, method.guidance_scale
    return settings


def train_run(config: dict, *, method: str, run_id: str, seed: int, run_dir: str | Path, model_id: str,
              reward_name: str, reward_kwargs: dict, prompts: list[str], max_steps: int | None = None,
              **method_kwargs) -> dict:
    """Train one run into ``run_dir`` (resuming from its latest checkpoint) and return its run.json content."""
    from .distributed import process_group

    settings = TrainSettings.from_config(config, seed)
    if method not in LCM_METHODS | DIFFUSION_METHODS:
        raise ValueError(f"unknown training method '{method}'; known: {sorted(LCM_METHODS | DIFFUSION_METHODS)}")
    m = make_method(method, config, **method_kwargs)  # settings errors before any model is loaded
    group = process_group(pick_device(config["device"]))  # several processes only inside a distributed launch
    device = group.device
    dtype = DTYPES[config["model"]["dtype"]]
    seed_everything(seed)
    if method in LCM_METHODS:
        pipe = load_lcm_pipeline(model_id, dtype=dtype, device=device)
        from diffusers import LatentConsistencyModelPipeline as pipeline_cls
    else:
        pipe = load_sd_pipeline(model_id, dtype=dtype, device=device)
        from diffusers import StableDiffusionPipeline as pipeline_cls
    lora = config["train"]["lora"]
    params = add_lora(pipe.unet, lora["rank"], lora["alpha"], lora["target_modules"], seed=seed)
    if dtype != torch.float32:
        for p in params:  # trainable weights stay in float32 (mixed precision), the frozen base in `dtype`
            p.data = p.data.float()
    reward = load_scorer(reward_name, **reward_kwargs).to(device)
    if not getattr(reward, "differentiable", True) and method == "rocm":
        raise ValueError(f"reward '{reward_name}' is not differentiable: ROCM needs a differentiable reward")
    if method != "rocm":  # baselines: steps from the reward-query budget, their own lr / grad clip
        settings = baseline_settings(method, m, config, settings)
    info = {"run_id": run_id, "method": method, "model_id": str(model_id), "reward": reward_name,
            "reward_kwargs": reward_kwargs, "reward_definition": getattr(reward, "definition", ""), "config": config,
            **method_kwargs}
    trainer = Trainer(m, pipe, params, reward, prompts, settings, run_dir, device, run_info=info,
                      pipeline_cls=pipeline_cls, group=group)
    return trainer.run(max_steps=max_steps)
