"""Stages of workflow/rules/sandbox.smk: the offline sandbox's VAE, diffusion teacher, distilled LCM, proxy rewards
and its quality report (rocm_rlhf.sandbox)."""

from __future__ import annotations

import json
from pathlib import Path

from ..infra.jobs import stage
from ..infra.utils import write_json
from .common import world

WORLD = ("seed", "sandbox.image_size", "sandbox.jitter")
MODELS = (*WORLD, "sandbox.models")


def _sizes(config):
    from ..sandbox.models import SandboxSizes

    m = config["sandbox"]["models"]
    return SandboxSizes(text_width=m["text_width"], text_layers=m["text_layers"],
                        vae_channels=tuple(m["vae_channels"]), unet_channels=tuple(m["unet_channels"]),
                        unet_layers=m["unet_layers"], attention_head_dim=m["attention_head_dim"],
                        time_cond_proj_dim=m["time_cond_proj_dim"])


def _settings(config, name: str, seed_offset: int):
    from ..sandbox.build import BuildSettings

    s = config["sandbox"][name]
    return BuildSettings(steps=s["steps"], batch_size=s["batch_size"], lr=s["lr"], seed=config["seed"] + seed_offset)


def _report(job, stats: dict) -> None:
    write_json(job.output.stats, stats)
    print(json.dumps(stats, indent=1))


@stage(reads=(*MODELS, "sandbox.vae"))
def sandbox_vae(job) -> None:
    from ..sandbox.build import train_vae

    _report(job, train_vae(world(job.config), job.output.model, _settings(job.config, "vae", 0), _sizes(job.config)))


@stage(reads=(*MODELS, "sandbox.teacher"))
def sandbox_teacher(job) -> None:
    from ..sandbox.build import train_teacher

    _report(job, train_teacher(world(job.config), job.input.vae, job.output.model,
                               _settings(job.config, "teacher", 1), _sizes(job.config)))


@stage(reads=(*MODELS, "sandbox.lcm"))
def sandbox_lcm(job) -> None:
    from ..sandbox.build import distill_lcm

    s = job.config["sandbox"]["lcm"]
    _report(job, distill_lcm(job.input.teacher, world(job.config), job.output.model, _settings(job.config, "lcm", 2),
                             _sizes(job.config), w_min=s["w_min"], w_max=s["w_max"]))


@stage(reads=(*WORLD, "sandbox.judge_tau", "sandbox.proxies", "model.guidance_scale"))
def sandbox_proxy(job) -> None:
    from ..sandbox.proxies import train_proxy

    cfg, s = job.config, job.config["sandbox"]["proxies"]
    _report(job, train_proxy(job.wildcards.proxy, job.input.lcm, world(cfg), job.output.model, steps=s["steps"],
                             n_base=s["n_base"], batch_size=s["batch_size"], lr=s["lr"],
                             guidance_scale=cfg["model"]["guidance_scale"], seed=cfg["seed"] + 3,
                             tau=cfg["sandbox"]["judge_tau"]))


@stage(reads=(*WORLD, "sandbox.judge_tau", "sandbox.quality_prompts", "model.guidance_scale"))
def sandbox_quality(job) -> None:
    from ..sandbox.quality import assess

    cfg = job.config
    proxies = {Path(p).name: p for p in job.input.proxies}
    out = assess(job.input.lcm, proxies, world(cfg), guidance_scale=cfg["model"]["guidance_scale"],
                 n_prompts=cfg["sandbox"]["quality_prompts"], seed=cfg["seed"] + 4, tau=cfg["sandbox"]["judge_tau"])
    out["build_seconds"] = {Path(p).stem: json.loads(Path(p).read_text())["seconds"] for p in job.input.stats}
    write_json(job.output[0], out)
    print(json.dumps(out, indent=1))
