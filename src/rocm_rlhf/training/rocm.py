"""ROCM (Shekhar & Zhang, arXiv 2503.06171): first-order reward optimisation through the consistency sampler.

    J(theta) = E[ R(decode(x0_{K-1}), c) ] - beta * E[ sum_n D( pi_theta(.|x_{t_n}) || pi_ref(.|x_{t_n}) ) ]

maximised by backpropagation through all K sampler steps (the noise is drawn outside the graph), ``D`` one of the
f-divergences of :mod:`rocm_rlhf.divergences` between the Gaussian transitions of the policy and of the reference
(the UNet with its LoRA adapter disabled) at the policy's states. beta = 0 (divergence "none") is plain ROCM, its KL
still logged. API: :class:`ROCM` (``ROCM.from_config(config, divergence=..., beta=...)`` reads ``rocm.*``), one
data-parallel ``train_step`` for :class:`~rocm_rlhf.training.loop.Trainer`. More: docs/method.md, section 'The sampler
and ROCM's objective'.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from ..models import latent_shape
from ..samplers.common import decode_latents, encode_prompts
from ..samplers.consistency import consistency_sample, divergence_per_step, draw_noise
from .loop import reward_stats


def consistency_step_inputs(ctx, step: int, batch_size: int | None = None, *, shard: bool = False,
                            images_per_prompt: int = 1):
    """The inputs of one training step through the consistency sampler, drawn alike by ROCM, its score-function
    variant and RLCM: the step's prompts (``batch_size`` of them, default the run's), then from the step's generator
    the initial latents and the per-transition noise (in this order, so that a resumed run replays them), and the
    prompt embeddings. ``shard``: every process draws the global batch and keeps its own share (data parallel).
    ``images_per_prompt`` k > 1: ``batch_size / k`` prompts, each k times in a row (a group of images per prompt,
    with its own latents and noise). Returns (prompts, latents, noise, prompt embeddings)."""
    pipe, dtype = ctx.pipe, ctx.pipe.unet.dtype
    n, k = ctx.settings.batch_size if batch_size is None else batch_size, images_per_prompt
    if n % k:
        raise ValueError(f"a batch of {n} images does not split into groups of {k} per prompt")
    prompts = [p for p in ctx.batch_prompts(step, n // k) for _ in range(k)]  # k = 1: the batch's own draw
    g = ctx.generator(step)
    shape = (len(prompts), *latent_shape(pipe))
    latents, noise = torch.randn(shape, generator=g), draw_noise(shape, ctx.settings.num_steps, g)
    if shard:
        latents, noise, prompts = ctx.shard(latents), ctx.shard(noise), ctx.shard(prompts)
    emb = encode_prompts(pipe.tokenizer, pipe.text_encoder, prompts, device=ctx.device, dtype=dtype)
    return prompts, latents.to(ctx.device, dtype), noise.to(ctx.device, dtype), emb


@dataclass
class Regularised:
    """The f-divergence regulariser's settings and their checks, shared by :class:`ROCM` and its score-function
    variant (:mod:`rocm_rlhf.training.rocm_sf`)."""

    divergence: str = "kl"
    beta: float = 0.0
    reduction: str = "mean"
    final_step: bool = True

    def check_regulariser(self) -> None:
        from ..divergences import available

        if self.divergence == "none":  # plain ROCM (beta = 0): the drift from the reference is logged as KL
            if self.beta != 0:
                raise ValueError(f"divergence 'none' means beta = 0, got beta = {self.beta}")
        elif self.divergence not in available():
            raise ValueError(f"unknown divergence '{self.divergence}'; known: none, {', '.join(available())}")
        if self.beta < 0:
            raise ValueError(f"beta must be >= 0, got {self.beta}")

    @property
    def logged_divergence(self) -> str:
        return "kl" if self.divergence == "none" else self.divergence


@dataclass
class ROCM(Regularised):
    # an adaptive beta (rocm_rlhf.training.adaptive_beta): hold the divergence near ``target`` instead of a fixed
    # beta; ``adaptive`` sets the controller (init_beta, gain, clip, beta_min, beta_max)
    target: float | None = None
    adaptive: dict | None = None
    data_parallel: ClassVar[bool] = True  # shards its batch over train.num_processes (training.distributed)

    @classmethod
    def from_config(cls, config: dict, *, divergence: str = "kl", beta: float = 0.0, target: float | None = None,
                    adaptive: dict | None = None) -> "ROCM":
        """ROCM with the run's ``divergence`` and ``beta`` (from its run id) and the config's ``rocm.reduction`` and
        ``rocm.final_step``; with ``target``, an adaptive beta (``adaptive``: the controller's settings)."""
        r = config["rocm"]
        return cls(divergence=divergence, beta=float(beta), reduction=r["reduction"], final_step=r["final_step"],
                   target=target, adaptive=adaptive)

    def __post_init__(self):
        from .adaptive_beta import AdaptiveBeta

        self.check_regulariser()
        if self.divergence == "none" and self.target is not None:
            raise ValueError(f"divergence 'none' means beta = 0, got an adaptive beta (target {self.target})")
        self.controller = None
        if self.target is not None:
            if self.beta != 0:
                raise ValueError(f"an adaptive beta (target {self.target}) starts at adaptive.init_beta; got a fixed "
                                 f"beta = {self.beta} as well")
            a = dict(self.adaptive or {})
            unknown = set(a) - {"init_beta", "gain", "clip", "beta_min", "beta_max"}
            if unknown:
                raise ValueError(f"unknown adaptive-beta settings {sorted(unknown)}; known: init_beta, gain, clip, "
                                 f"beta_min, beta_max")
            if "init_beta" in a:
                a["beta"] = a.pop("init_beta")
            self.controller = AdaptiveBeta(target=self.target, **a)
        elif self.adaptive:
            raise ValueError("adaptive-beta settings given without a target")

    def extra_state(self) -> dict:
        return {"adaptive_beta": self.controller.state()} if self.controller is not None else {}

    def load_extra_state(self, state: dict) -> None:
        if self.controller is not None and "adaptive_beta" in state:
            self.controller.load_state(state["adaptive_beta"])

    def queries_per_step(self):
        return None

    def train_step(self, ctx, step: int) -> dict:
        s = ctx.settings
        pipe = ctx.pipe
        prompts, latents, noise, emb = consistency_step_inputs(ctx, step, shard=True)  # this process's shard
        beta = self.controller.beta if self.controller is not None else self.beta  # this step's
        with ctx.autocast():
            traj = consistency_sample(
                pipe.unet, pipe.scheduler, emb, num_steps=s.num_steps, guidance_scale=s.guidance_scale,
                latents=latents, noise=noise, reference=True, reference_grad=beta > 0,
                final_step=self.final_step, grad_steps=s.truncated_backprop or None,
                checkpoint=s.gradient_checkpointing,
            )
            images = decode_latents(pipe.vae, traj.final)
            reward = ctx.reward(images.float(), prompts).float()
        div = divergence_per_step(traj, self.logged_divergence, self.reduction).float()  # [B, S]
        div_total = div.sum(1)
        loss = -reward.mean() + beta * div_total.mean() if beta > 0 else -reward.mean()
        ctx.update(loss)
        reward, div = ctx.gather(reward.detach()), ctx.gather(div.detach())  # the global batch, for the log
        div_total = div.sum(1)
        logged_loss = -reward.mean() + beta * div_total.mean() if beta > 0 else -reward.mean()
        out = {"loss": logged_loss.item(), **reward_stats(reward), "divergence_mean": div_total.mean().item()}
        if self.controller is not None:  # the beta this step used; the next step's from this step's divergence
            out["adaptive_beta"] = beta
            self.controller.update(out["divergence_mean"])
        for n in range(div.shape[1]):
            out[f"div_step_{n}"] = div[:, n].mean().item()
        return out
