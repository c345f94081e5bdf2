"""Assembling one training run from the config: model, adapter, reward, prompts, method, loop.

API: :func:`train_run` (train one run into its folder, resuming from its latest checkpoint, and return its
``run.json``), :func:`make_method` (a method object from :data:`rocm_rlhf.runs.METHODS` and its class's
``from_config``), the baselines' equal reward-query budget (:func:`reward_query_budget`, :func:`steps_for_budget`,
:func:`baseline_settings`), and, for the pipeline's evaluation stage, ``DTYPES`` (:mod:`rocm_rlhf.models`) and
``diffusion_sampling`` (:mod:`rocm_rlhf.training.ddim_policy`).
"""

from __future__ import annotations

from pathlib import Path

import torch

from .. import runs
from ..infra.utils import pick_device, seed_everything
from ..models import DTYPES, load_pipeline, pipeline_class
from ..infra.scorer_catalogue import reward_label, reward_terms
from ..rewards import load_reward
from .ddim_policy import diffusion_sampling
from .lora import add_lora, load_init_adapter
from .loop import Trainer, TrainSettings
from .probe import HeldOutProbe

__all__ = ["DTYPES", "baseline_settings", "diffusion_sampling", "make_method", "reward_query_budget",
           "steps_for_budget", "train_run"]


def make_method(name: str, config: dict, **kwargs):
    """The method object of run ``name`` from the validated config: ``from_config`` of its class in
    :data:`rocm_rlhf.runs.METHODS`; ``kwargs`` are the run's own (ROCM: divergence, beta) or override fields (the
    baselines: any field of their dataclass)."""
    if name not in runs.METHODS:
        raise ValueError(f"unknown training method '{name}'; known: {', '.join(runs.METHODS)}")
    return runs.METHODS[name].load_class().from_config(config, **kwargs)


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
    if runs.generator(name) == "diffusion":
        settings.num_steps, settings.guidance_scale = method.sample_steps, method.guidance_scale
    return settings


def train_run(config: dict, *, method: str, run_id: str, seed: int, run_dir: str | Path, model_id: str,
              reward_name: str, reward_kwargs: dict, prompts: list[str], max_steps: int | None = None,
              probe: dict | None = None, **method_kwargs) -> dict:
    """Train one run into ``run_dir`` (resuming from its latest checkpoint) and return its run.json content.
    ``reward_name``: ``train.reward``, a scorer's name (``reward_kwargs`` its options) or a weighted sum ``{name:
    weight}`` (``reward_kwargs`` ``{name: its options}``; :func:`rocm_rlhf.rewards.load_reward`). ``probe``: the
    held-out probe's spec (:meth:`rocm_rlhf.training.probe.HeldOutProbe.from_spec`), or None. ``train.init_adapter``
    (a saved LoRA) sets the adapter's starting weights (:func:`rocm_rlhf.training.lora.load_init_adapter`); a
    checkpoint, when the run resumes, then replaces them."""
    from .distributed import process_group

    settings = TrainSettings.from_config(config, seed)
    m = make_method(method, config, **method_kwargs)  # an unknown method or bad settings fail before any model loads
    group = process_group(pick_device(config["device"]))  # several processes only inside a distributed launch
    device = group.device
    dtype = DTYPES[config["model"]["dtype"]]
    seed_everything(seed)
    generator = runs.generator(method)
    pipe = load_pipeline(generator, model_id, dtype=dtype, device=device)
    lora = config["train"]["lora"]
    params = add_lora(pipe.unet, lora["rank"], lora["alpha"], lora["target_modules"], seed=seed)
    if dtype != torch.float32:
        for p in params:  # trainable weights stay in float32 (mixed precision), the frozen base in `dtype`
            p.data = p.data.float()
    init = config["train"].get("init_adapter") or ""
    if init:
        init = str(load_init_adapter(pipe.unet, init, pipeline_class(generator)))
    label = reward_label(reward_name)
    reward = load_reward(reward_name, reward_kwargs).to(device)
    if not getattr(reward, "differentiable", True) and method == "rocm":
        raise ValueError(f"reward '{label}' is not differentiable: ROCM needs a differentiable reward")
    if method in runs.BASELINES:  # baselines: steps from the reward-query budget, their own lr / grad clip
        settings = baseline_settings(method, m, config, settings)
    info = {"run_id": run_id, "method": method, "model_id": str(model_id), "reward": label,
            "reward_kwargs": reward_kwargs, "reward_definition": getattr(reward, "definition", ""), "config": config,
            **method_kwargs}
    if not isinstance(reward_name, str):
        info["reward_terms"] = reward_terms(reward_name)
    if init:
        info["init_adapter"] = init
    held_out = HeldOutProbe.from_spec(probe, reward_name=label, reward=reward, device=device)
    trainer = Trainer(m, pipe, params, reward, prompts, settings, run_dir, device, run_info=info,
                      pipeline_cls=pipeline_class(generator), group=group, probe=held_out)
    return trainer.run(max_steps=max_steps)
