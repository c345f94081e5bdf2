"""What several stages share: a job's single paths, the hub preflight, the GPU lock and the sandbox's settings."""

from __future__ import annotations

import contextlib
from pathlib import Path


def path(named, key: str) -> str | None:
    """The single path of a named input, or None when the rule gave it nothing (e.g. a hub-setting model)."""
    if key not in named.keys():
        return None
    value = getattr(named, key)
    if isinstance(value, (list, tuple)):
        return str(value[0]) if len(value) else None
    return str(value)


def parent_dir(named, key: str) -> str | None:
    """The folder that holds a named input (the sandbox's rewards folder of a proxy), or None."""
    p = path(named, key)
    return str(Path(p).parent) if p else None


def preflight(config, **needs) -> None:
    """Hub setting: fail at once, before any work, if a model the job needs is not staged (offline)."""
    if config["setting"] != "hub":
        return
    from ..infra.staging import model_assets, preflight as check

    check(model_assets(config, **needs))


def gpu_slot(config, count: int = 1):
    """Lock ``count`` free local GPUs for a GPU job before CUDA initialises (rocm_rlhf.infra.devices); nothing on
    CPU."""
    if config["device"] == "cpu":
        return contextlib.nullcontext()
    from ..infra.devices import acquire_gpus

    return acquire_gpus(count)


def world(config):
    """The sandbox world of the config (sandbox.image_size, sandbox.jitter)."""
    from ..sandbox.render import World

    sb = config["sandbox"]
    return World(image_size=sb["image_size"], jitter=sb["jitter"])


SANDBOX_JUDGE_KEYS = ("sandbox.image_size", "sandbox.jitter", "sandbox.judge_tau")
"""The config keys the sandbox's gold judge reads (its ``config_kwargs``, through rocm_rlhf.rewards.scorer_kwargs):
named here because the rules hash the stages' keys without importing torch."""


def figure_metrics(config: dict) -> tuple[str, str]:
    """(the training reward as a metric, the primary endpoint ``figures.quality_metric``, which beta is chosen on):
    empty names resolve to ``train.reward`` and to gold (sandbox) or the training reward."""
    f = config["figures"]
    reward = f["reward_metric"] or config["train"]["reward"]
    quality = f["quality_metric"] or ("gold" if config["setting"] == "sandbox" else reward)
    return reward, quality


def sampler_method(run) -> str:
    """The method whose sampler draws a run's images: its own, DDPO's DDIM sampler for the base diffusion arm."""
    from .. import runs

    return runs.DIFFUSION_SAMPLER_OF if run.method == runs.BASE_DIFFUSION else run.method


def sampler_keys(run) -> tuple[str, ...]:
    """The config keys of a run's sampler (:func:`sampler_spec`)."""
    from .. import runs

    method = sampler_method(run)
    if runs.generator(method) != "diffusion":
        return ("model.num_steps", "model.guidance_scale")
    block = runs.method(method).config_block
    return (f"{block}.sample_steps", f"{block}.guidance_scale", "model.guidance_scale", "baselines.eta")


def sampler_spec(config: dict, run) -> dict:
    """A run's sampler as :func:`rocm_rlhf.evaluation.generate_units` takes it: the LCM's (``model.num_steps``,
    ``model.guidance_scale``) or, for a diffusion method, its own DDIM sampler (its ``sample_steps`` and
    ``guidance_scale``, null = ``model.guidance_scale``; ``baselines.eta``)."""
    from .. import runs

    method = sampler_method(run)
    if runs.generator(method) != "diffusion":
        m = config["model"]
        return {"generator": "lcm", "num_steps": int(m["num_steps"]), "guidance_scale": float(m["guidance_scale"])}
    from ..training.ddim_policy import diffusion_sampling  # the one reading of a baseline's DDIM settings

    d = diffusion_sampling(config, method)
    return {"generator": "diffusion", "num_steps": d["sample_steps"], "guidance_scale": d["guidance_scale"],
            "eta": d["eta"]}
