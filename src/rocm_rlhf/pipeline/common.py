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
