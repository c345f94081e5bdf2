"""The diffusion baselines' policy: the stochastic DDIM sampler of a Stable-Diffusion-style pipeline.

DDPO, D3PO and DPOK sample their rollouts here and share what they record: :class:`DiffusionRollout` (states,
timesteps, summed log-probs, transition means and stds, rewards, and optionally the pretrained model's transition
means and noise predictions at the same states). API: :func:`step_rollout` (one training step's rollout from its
generator), :func:`diffusion_rollout` (from given noise), :func:`reference_transitions` (the pretrained model, adapter
disabled), :func:`kl_per_step` (the logged KL per step), :func:`stored_transition` (the inputs that recompute stored
steps, one step or per-sample steps) and :func:`diffusion_sampling` (a baseline's sampler settings from the config,
for its training and its evaluation samples alike).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..models import latent_shape


@dataclass
class DiffusionRollout:
    """A batch of DDIM trajectories with what the updates need. ``B`` samples, ``T`` steps."""

    prompts: list[str]
    prompt_embeds: Tensor  # [B, L, D]
    negative_embeds: Tensor | None  # [1, L, D] (empty prompt) or None without guidance
    latents: Tensor  # [B, T+1, C, H, W] states x_{t_0} .. x_0
    timesteps: Tensor  # [T]
    log_probs: Tensor  # [B, T] summed log pi of the taken steps, at sampling time
    means: Tensor  # [B, T, C, H, W]
    stds: Tensor  # [T]
    rewards: Tensor  # [B] float32
    ref_means: Tensor | None = None  # [B, T, C, H, W] the pretrained model's transition means at the same states
    ref_outputs: Tensor | None = None  # [B, T, C, H, W] its guided UNet outputs (noise predictions) there


def step_rollout(ctx, step: int, scheduler, *, batch_size: int, num_steps: int, guidance_scale: float, eta: float,
                 reference: bool) -> DiffusionRollout:
    """The DDIM rollout of training step ``step``: ``batch_size`` prompts, initial latents (scaled by the scheduler's
    ``init_noise_sigma``) and the ``num_steps`` per-step noises drawn, in that order, from the step's generator, then
    :func:`diffusion_rollout`."""
    prompts = ctx.batch_prompts(step, batch_size)
    g = ctx.generator(step)
    shape = (len(prompts), *latent_shape(ctx.pipe))
    latents = torch.randn(shape, generator=g) * scheduler.init_noise_sigma
    noise = torch.randn((shape[0], num_steps, *shape[1:]), generator=g)
    return diffusion_rollout(ctx, scheduler, prompts, latents, noise, num_steps=num_steps,
                             guidance_scale=guidance_scale, eta=eta, reference=reference)


def diffusion_rollout(ctx, scheduler, prompts: list[str], latents: Tensor, noise: Tensor, *, num_steps: int,
                      guidance_scale: float, eta: float, reference: bool) -> DiffusionRollout:
    """Sample DDIM trajectories (no gradients), decode, score with ``ctx.reward``; with ``reference`` also the
    pretrained model's (adapter disabled) transition means at every visited state."""
    from ..samplers.common import decode_latents, encode_prompts
    from ..samplers.diffusion import ddim_sample

    pipe = ctx.pipe
    dtype = pipe.unet.dtype
    emb = encode_prompts(pipe.tokenizer, pipe.text_encoder, prompts, device=ctx.device, dtype=dtype)
    neg = None if float(guidance_scale) == 1.0 else encode_prompts(pipe.tokenizer, pipe.text_encoder, [""],
                                                                    device=ctx.device, dtype=dtype)
    with torch.no_grad(), ctx.autocast():
        traj = ddim_sample(pipe.unet, scheduler, emb, neg, num_steps=num_steps, guidance_scale=guidance_scale,
                           eta=eta, latents=latents.to(ctx.device, dtype), noise=noise.to(ctx.device, dtype))
        images = decode_latents(pipe.vae, traj.final)
        rewards = ctx.reward(images.float(), list(prompts)).float()
    roll = DiffusionRollout(prompts=list(prompts), prompt_embeds=emb, negative_embeds=neg, latents=traj.latents,
                            timesteps=traj.timesteps, log_probs=traj.log_probs, means=traj.means, stds=traj.stds,
                            rewards=rewards)
    if reference:
        roll.ref_means, roll.ref_outputs = reference_transitions(ctx, scheduler, roll, guidance_scale=guidance_scale,
                                                                 eta=eta)
    return roll


@torch.no_grad()
def reference_transitions(ctx, scheduler, roll: DiffusionRollout, *, guidance_scale: float,
                          eta: float) -> tuple[Tensor, Tensor]:
    """``(means, outputs)``, each [B, T, C, H, W]: the pretrained model's (adapter disabled) DDIM transition means and
    guided UNet outputs at the rollout's states."""
    from ..samplers.consistency import adapter_disabled
    from ..samplers.diffusion import ddim_step_mean_std, guided_model_output

    unet = ctx.pipe.unet
    means, outputs = [], []
    with adapter_disabled(unet), ctx.autocast():
        for n, t in enumerate(roll.timesteps):
            out = guided_model_output(unet, roll.latents[:, n], t, roll.prompt_embeds, roll.negative_embeds,
                                      guidance_scale)
            means.append(ddim_step_mean_std(scheduler, out, t, roll.latents[:, n], eta)[0])
            outputs.append(out)
    return torch.stack(means, 1), torch.stack(outputs, 1)


def stored_transition(roll: DiffusionRollout, rows: Tensor, steps: Tensor | int) -> tuple[Tensor, Tensor, Tensor]:
    """``(x_t, x_next, t)`` of the stored steps ``steps`` of trajectories ``rows`` [m]: states [m, C, H, W] and the
    timestep, 0-d for one int step (all rows at it) or [m] for per-sample steps [m] (one UNet call for several steps:
    :func:`~rocm_rlhf.samplers.diffusion.ddim_log_prob` takes per-sample timesteps)."""
    rows = rows.to(roll.latents.device)
    if not isinstance(steps, Tensor):
        n = int(steps)
        return roll.latents[rows, n], roll.latents[rows, n + 1], roll.timesteps[n]
    if steps.shape != rows.shape:
        raise ValueError(f"need one step per row, got steps of shape {tuple(steps.shape)} for {len(rows)} rows")
    steps = steps.to(roll.latents.device)
    return roll.latents[rows, steps], roll.latents[rows, steps + 1], roll.timesteps[steps.to(roll.timesteps.device)]


def kl_per_step(means: Tensor, ref_means: Tensor, stds: Tensor, reduction: str) -> Tensor:
    """[B, T]: KL(N(mean, std^2 I) || N(ref_mean, std^2 I)) per step (:func:`rocm_rlhf.divergences.gaussian_divergence`
    with the given reduction: ``"sum"`` is the exact KL of the transition, ``"mean"`` it divided by C*H*W)."""
    from ..divergences import gaussian_divergence

    cols = [gaussian_divergence("kl", means[:, n], ref_means[:, n], stds[n], reduction=reduction)
            for n in range(means.shape[1])]
    return torch.stack(cols, 1)


def diffusion_sampling(config: dict, method: str) -> dict:
    """The DDIM sampler of a diffusion baseline, for its training and its evaluation samples alike: its own
    ``sample_steps`` and ``guidance_scale`` (null: ``model.guidance_scale``) and the shared ``baselines.eta``."""
    b = config["baselines"]
    own = b[method]
    guidance = own["guidance_scale"] if own["guidance_scale"] is not None else config["model"]["guidance_scale"]
    return {"sample_steps": int(own["sample_steps"]), "guidance_scale": float(guidance), "eta": float(b["eta"])}
