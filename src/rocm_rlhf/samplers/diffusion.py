"""The stochastic DDIM sampler with per-step log-probabilities: the policy of DDPO, D3PO and DPOK.

DDIM with ``eta > 0`` and classifier-free guidance on a diffusers ``UNet2DConditionModel`` and ``DDIMScheduler``
(sandbox teacher and SD 1.5 alike). Each step is a Gaussian transition ``N(mu_n, sigma_n^2 I)``, exactly
``DDIMScheduler.step(..., eta=eta, variance_noise=z)``, and ``log pi`` is its log-density summed over the latent
dimensions. API: :func:`ddim_sample` -> :class:`DiffusionTrajectory`, :func:`ddim_log_prob` (recomputed at stored
steps, equal to the sampled one), :func:`ddim_transition`, :func:`ddim_step_mean_std`, :func:`guided_model_output`.
The formulas, the last step, shapes and dtypes: docs/method.md, section 'The baselines' (The DDIM sampler).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from diffusers import DDIMScheduler
from diffusers.utils.torch_utils import randn_tensor
from torch import Tensor

from .common import gaussian_log_prob

__all__ = [
    "DiffusionTrajectory",
    "ddim_sample",
    "ddim_step_mean_std",
    "ddim_transition",
    "ddim_log_prob",
    "guided_model_output",
]


@dataclass
class DiffusionTrajectory:
    """One batch of DDIM trajectories; index ``n`` runs over the ``T`` steps, ``t_n = timesteps[n]``.

    Attributes:
        latents: ``[B, T+1, C, H, W]`` (model dtype) the states ``x_{t_0}`` (initial noise) ... ``x_0``;
            ``latents[:, n]`` is the input of step ``n`` and ``latents[:, n+1]`` its output.
        timesteps: ``[T]`` (int64) the scheduler timesteps ``t_n`` at which the UNet was called.
        prev_timesteps: ``[T]`` (int64) diffusers' ``t_n - num_train_timesteps // T``; negative at the last step
            (which then uses ``final_alpha_cumprod``).
        log_probs: ``[B, T]`` ``log pi(latents[:, n+1] | latents[:, n])`` summed over ``C*H*W``, or ``None`` when
            sampled with ``return_log_probs=False``.
        means: ``[B, T, C, H, W]`` the transition means ``mu_n`` (compute dtype).
        stds: ``[T]`` the transition stds ``sigma_n`` (the same for every sample; 0 where deterministic).
        final: ``[B, C, H, W]`` the final latents ``x_0`` (= ``latents[:, -1]``); decode with the VAE
            (``vae.decode(final / vae.config.scaling_factor)``) outside.
    """

    latents: Tensor
    timesteps: Tensor
    prev_timesteps: Tensor
    log_probs: Tensor | None
    means: Tensor
    stds: Tensor
    final: Tensor


# ----------------------------------------------------------------------------------------------------------------
# checks


def _check_scheduler(scheduler) -> None:
    if not isinstance(scheduler, DDIMScheduler):
        raise TypeError(
            f"the diffusion sampler needs a diffusers DDIMScheduler, got {type(scheduler).__name__}; build one from "
            "the model's scheduler config: DDIMScheduler.from_config(pipe.scheduler.config)"
        )
    if scheduler.config.thresholding:
        raise ValueError(
            "DDIMScheduler.config.thresholding=True (dynamic thresholding) is not supported by the diffusion "
            "sampler; use a scheduler with thresholding=False (as Stable Diffusion)"
        )
    if scheduler.config.prediction_type not in ("epsilon", "v_prediction", "sample"):
        raise ValueError(
            f"unknown scheduler prediction_type {scheduler.config.prediction_type!r}; expected 'epsilon', "
            "'v_prediction' or 'sample'"
        )


def _check_eta(eta) -> float:
    eta = float(eta)
    if not (0.0 <= eta <= 1.0) or math.isnan(eta):
        raise ValueError(
            f"eta must lie in [0, 1] (0: deterministic DDIM, 1: DDPM posterior variance), got {eta}; "
            "eta > 1 can make 1 - abar_prev - sigma^2 negative"
        )
    return eta


def _check_embeds(prompt_embeds: Tensor, negative_embeds: Tensor | None, guidance_scale: float) -> Tensor | None:
    """Validate the text embeddings; returns the negative embeddings expanded to the batch (or None if unused)."""
    if not isinstance(prompt_embeds, Tensor) or prompt_embeds.ndim != 3:
        raise ValueError(
            "prompt_embeds must be a tensor [B, L, D] (text encoder last hidden state, see encode_prompts), got "
            f"{tuple(prompt_embeds.shape) if isinstance(prompt_embeds, Tensor) else type(prompt_embeds).__name__}"
        )
    if not math.isfinite(float(guidance_scale)):
        raise ValueError(f"guidance_scale must be a finite number, got {guidance_scale}")
    if float(guidance_scale) == 1.0:
        return None
    if negative_embeds is None:
        raise ValueError(
            f"guidance_scale={guidance_scale} != 1 needs negative_embeds (the unconditional embeddings of the empty "
            "prompt, encode_prompts(tokenizer, text_encoder, [''])); pass them, or use guidance_scale=1 for no guidance"
        )
    if negative_embeds.ndim != 3 or negative_embeds.shape[1:] != prompt_embeds.shape[1:]:
        raise ValueError(
            f"negative_embeds {tuple(negative_embeds.shape)} must be [B, L, D] or [1, L, D] with the same L, D as "
            f"prompt_embeds {tuple(prompt_embeds.shape)}"
        )
    b = prompt_embeds.shape[0]
    if negative_embeds.shape[0] not in (1, b):
        raise ValueError(
            f"batch size mismatch: negative_embeds has {negative_embeds.shape[0]} rows, prompt_embeds {b}; give one "
            "row (broadcast) or one per prompt"
        )
    return negative_embeds.to(prompt_embeds.dtype).expand(b, -1, -1)


def _as_timestep(timestep, device) -> Tensor:
    t = torch.as_tensor(timestep, device=device)
    if t.dtype.is_floating_point or t.dtype == torch.bool or t.ndim > 1:
        raise ValueError(f"timestep must be an int, a 0-d or a [B] integer tensor, got {timestep!r}")
    return t.long()


# ----------------------------------------------------------------------------------------------------------------
# the DDIM transition


def _schedule(scheduler: DDIMScheduler, timestep: Tensor, eta: float):
    """Float64 schedule scalars at ``timestep`` (0-d or [B]): ``(abar_t, abar_prev, sigma, prev_timestep)``."""
    if scheduler.num_inference_steps is None:
        raise ValueError(
            "scheduler.num_inference_steps is None: call scheduler.set_timesteps(num_steps) with the number of "
            "sampling steps first (ddim_sample does it)"
        )
    n_train = scheduler.config.num_train_timesteps
    t_cpu = timestep.detach().cpu()
    if not bool(torch.isin(t_cpu, scheduler.timesteps.cpu()).all()):
        raise ValueError(
            f"timestep(s) {t_cpu.tolist()} are not in scheduler.timesteps {scheduler.timesteps.tolist()}; call "
            "scheduler.set_timesteps(num_steps) with the num_steps used for sampling"
        )
    prev = t_cpu - n_train // scheduler.num_inference_steps
    ac = scheduler.alphas_cumprod.detach().cpu().to(torch.float64)
    final = torch.as_tensor(scheduler.final_alpha_cumprod).detach().cpu().to(torch.float64)
    abar_t = ac[t_cpu]
    abar_prev = torch.where(prev >= 0, ac[prev.clamp_min(0)], final)
    variance = (1 - abar_prev) / (1 - abar_t) * (1 - abar_t / abar_prev)
    sigma = eta * variance.clamp_min(0).sqrt()
    return abar_t, abar_prev, sigma, prev.to(timestep.device)


def _zero_std_error(where: str) -> ValueError:
    return ValueError(
        f"{where}: the DDIM transition std is 0 (eta == 0, or the last step of a scheduler with "
        "set_alpha_to_one=True, where abar_prev = 1), so the step is deterministic and has no log-probability. "
        "Use eta > 0 and a scheduler with set_alpha_to_one=False (as Stable Diffusion), or sample with "
        "return_log_probs=False"
    )


def ddim_step_mean_std(
    scheduler: DDIMScheduler, model_output: Tensor, timestep, sample: Tensor, eta: float
) -> tuple[Tensor, Tensor, Tensor]:
    """Mean and std of the DDIM transition ``x_t -> x_{t_prev}`` (the formulas: docs/method.md,
    section 'The baselines').

    Args:
        scheduler: a DDIMScheduler after ``set_timesteps(T)``.
        model_output: ``[B, C, H, W]`` the (guided) UNet output at ``(sample, timestep)``.
        timestep: an int, a 0-d tensor or a ``[B]`` tensor of timesteps from ``scheduler.timesteps``.
        sample: ``[B, C, H, W]`` the current state ``x_t``.
        eta: in [0, 1].

    Returns:
        ``(mean, std, prev_timestep)``: mean ``[B, C, H, W]`` in ``promote(sample.dtype, float32)``; std 0-d (scalar
        timestep) or ``[B]``, same dtype; prev_timestep int64 of the timestep's shape (negative: last step).
        ``mean + std * z`` equals ``scheduler.step(model_output, t, sample, eta=eta, variance_noise=z).prev_sample``.
    """
    _check_scheduler(scheduler)
    eta = _check_eta(eta)
    if model_output.shape != sample.shape:
        raise ValueError(f"model_output {tuple(model_output.shape)} and sample {tuple(sample.shape)} differ in shape")
    t = _as_timestep(timestep, sample.device)
    if t.ndim == 1 and t.shape[0] != sample.shape[0]:
        raise ValueError(f"batch size mismatch: {t.shape[0]} timesteps for {sample.shape[0]} samples")
    abar_t, abar_prev, sigma, prev = _schedule(scheduler, t, eta)
    cdtype = torch.promote_types(sample.dtype, torch.float32)

    def bc(s: Tensor) -> Tensor:  # float64 scalar(s) -> compute dtype, broadcastable to the sample
        s = s.to(device=sample.device, dtype=cdtype)
        return s.view(-1, *([1] * (sample.ndim - 1))) if s.ndim == 1 else s

    x = sample.to(cdtype)
    out = model_output.to(cdtype)
    kind = scheduler.config.prediction_type
    sa, sb = bc(abar_t.sqrt()), bc((1 - abar_t).sqrt())
    if kind == "epsilon":
        x0 = (x - sb * out) / sa
        eps = out
    elif kind == "v_prediction":
        x0 = sa * x - sb * out
        eps = sa * out + sb * x
    else:  # "sample"
        x0 = out
        eps = (x - sa * x0) / sb
    if scheduler.config.clip_sample:
        r = scheduler.config.clip_sample_range
        x0 = x0.clamp(-r, r)
    direction = (1 - abar_prev - sigma**2).clamp_min(0).sqrt()
    mean = bc(abar_prev.sqrt()) * x0 + bc(direction) * eps
    std = sigma.to(device=sample.device, dtype=cdtype)
    return mean, std, prev


def guided_model_output(
    unet, sample: Tensor, timestep, prompt_embeds: Tensor, negative_embeds: Tensor | None, guidance_scale: float
) -> Tensor:
    """UNet output with classifier-free guidance, ``eps_u + w (eps_c - eps_u)``, in one batched UNet call.

    ``sample`` ``[B, C, H, W]`` is cast to ``prompt_embeds.dtype``; ``timestep`` is an int, 0-d or ``[B]``.
    With ``guidance_scale == 1`` only the conditional batch is run and ``negative_embeds`` may be None.
    """
    neg = _check_embeds(prompt_embeds, negative_embeds, guidance_scale)
    b = prompt_embeds.shape[0]
    if sample.shape[0] != b:
        raise ValueError(f"batch size mismatch: {sample.shape[0]} latents for {b} prompt embeddings")
    t = _as_timestep(timestep, sample.device)
    if t.ndim == 1 and t.shape[0] != b:
        raise ValueError(f"batch size mismatch: {t.shape[0]} timesteps for {b} samples")
    x = sample.to(prompt_embeds.dtype)
    if neg is None:
        return unet(x, t, encoder_hidden_states=prompt_embeds, return_dict=False)[0]
    t_in = torch.cat([t, t]) if t.ndim == 1 else t
    out = unet(
        torch.cat([x, x]), t_in, encoder_hidden_states=torch.cat([neg, prompt_embeds]), return_dict=False
    )[0]
    out_u, out_c = out.chunk(2)
    return out_u + guidance_scale * (out_c - out_u)


def ddim_transition(
    unet,
    scheduler: DDIMScheduler,
    prompt_embeds: Tensor,
    negative_embeds: Tensor | None,
    latents_t: Tensor,
    timestep,
    *,
    guidance_scale: float,
    eta: float,
) -> tuple[Tensor, Tensor, Tensor]:
    """The policy's Gaussian at state ``latents_t`` ``[B, C, H, W]``: ``(mean, std, prev_timestep)``.

    Guided UNet call followed by :func:`ddim_step_mean_std`. Runs in the caller's grad mode (for DPOK's KL, call it
    with the policy and the reference UNet at the same state).
    """
    model_output = guided_model_output(unet, latents_t, timestep, prompt_embeds, negative_embeds, guidance_scale)
    return ddim_step_mean_std(scheduler, model_output, timestep, latents_t, eta)


def _log_prob(latents_next: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    return gaussian_log_prob(latents_next.detach().to(mean.dtype), mean, std)


def ddim_log_prob(
    unet,
    scheduler: DDIMScheduler,
    prompt_embeds: Tensor,
    negative_embeds: Tensor | None,
    latents_t: Tensor,
    latents_next: Tensor,
    timestep,
    *,
    guidance_scale: float,
    eta: float,
) -> Tensor:
    """``log pi(latents_next | latents_t)`` ``[B]``, summed over ``C*H*W``, recomputed by a UNet call.

    For PPO / DPO-style updates on stored trajectories: ``latents_t = traj.latents[:, n]``,
    ``latents_next = traj.latents[:, n+1]``, ``timestep = traj.timesteps[n]`` (or a ``[B]`` tensor of per-sample
    timesteps, e.g. ``traj.timesteps[perm]``). The scheduler must be set to the sampling ``num_steps``
    (``ddim_sample`` leaves it so). Gradients flow to the UNet parameters under the caller's grad mode (this
    function does not switch it); ``latents_next`` is detached. Equals the stored ``traj.log_probs[:, n]`` for the
    same weights and batch. Raises ``ValueError`` where the std is 0 (``eta == 0`` or a deterministic last step).
    """
    if latents_t.shape != latents_next.shape:
        raise ValueError(
            f"latents_t {tuple(latents_t.shape)} and latents_next {tuple(latents_next.shape)} must have the same shape"
        )
    mean, std, _ = ddim_transition(
        unet,
        scheduler,
        prompt_embeds,
        negative_embeds,
        latents_t,
        timestep,
        guidance_scale=guidance_scale,
        eta=eta,
    )
    if bool((std == 0).any()):
        raise _zero_std_error("ddim_log_prob")
    return _log_prob(latents_next, mean, std)


def ddim_sample(
    unet,
    scheduler: DDIMScheduler,
    prompt_embeds: Tensor,
    negative_embeds: Tensor | None,
    *,
    num_steps: int,
    guidance_scale: float,
    eta: float,
    latents: Tensor | None = None,
    generator: torch.Generator | list[torch.Generator] | None = None,
    noise: Tensor | None = None,
    return_log_probs: bool = True,
    enable_grad: bool = False,
) -> DiffusionTrajectory:
    """Sample ``T = num_steps`` DDIM steps with ``eta``, recording states, means, stds and log-probs.

    Args:
        unet: a UNet2DConditionModel (its dtype should be ``prompt_embeds.dtype``).
        scheduler: a DDIMScheduler; ``scheduler.set_timesteps(num_steps)`` is called here and left set.
        prompt_embeds: ``[B, L, D]``.
        negative_embeds: ``[B, L, D]`` or ``[1, L, D]`` (empty-prompt embeddings), or None if guidance_scale == 1.
        num_steps: number of DDIM steps T >= 1.
        guidance_scale: classifier-free guidance weight w (7.5 for SD 1.5; 1 = no guidance).
        eta: in [0, 1]; 1 as in DDPO, 0 for deterministic DDIM (then ``return_log_probs=False`` is required).
        latents: ``[B, C, H, W]`` initial state ``x_{t_0}``; default ``N(0, I) * init_noise_sigma`` of size
            ``unet.config.sample_size`` drawn with ``generator``.
        generator: torch generator(s) for whatever of ``latents`` / ``noise`` is not given (the initial latents
            first, then one draw per step, as diffusers' pipelines).
        noise: ``[B, T, C, H, W]`` the standard normal per-step noise ``z_n`` (fix it for tests and paired
            evaluation); ``x_{t_{n+1}} = mu_n + sigma_n z_n``. Unused where ``sigma_n = 0``.
        return_log_probs: compute ``log_probs``; raises ``ValueError`` before sampling if some step has std 0.
        enable_grad: sample with gradients (default: under ``torch.no_grad``, as policy-gradient methods store the
            trajectory and recompute log-probs at chosen steps with :func:`ddim_log_prob`).

    Returns:
        a :class:`DiffusionTrajectory`.
    """
    _check_scheduler(scheduler)
    eta = _check_eta(eta)
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"num_steps must be an integer >= 1, got {num_steps!r}")
    n_train = scheduler.config.num_train_timesteps
    if num_steps > n_train:
        raise ValueError(f"num_steps={num_steps} exceeds the scheduler's num_train_timesteps={n_train}")
    _check_embeds(prompt_embeds, negative_embeds, guidance_scale)
    b, device, dtype = prompt_embeds.shape[0], prompt_embeds.device, prompt_embeds.dtype

    if latents is None:
        size = unet.config.sample_size
        h, w = (size, size) if isinstance(size, int) else tuple(size)
        latents = randn_tensor((b, unet.config.in_channels, h, w), generator=generator, device=device, dtype=dtype)
        latents = latents * scheduler.init_noise_sigma
    else:
        if latents.ndim != 4 or latents.shape[0] != b:
            raise ValueError(
                f"latents must be [B, C, H, W] with B = {b} (the prompt_embeds batch), got {tuple(latents.shape)}"
            )
        latents = latents.to(device=device, dtype=dtype)
    if noise is not None:
        expected = (b, num_steps, *latents.shape[1:])
        if tuple(noise.shape) != expected:
            raise ValueError(
                f"noise must be [B, T, C, H, W] = {expected} (batch, num_steps, latent shape), got {tuple(noise.shape)}"
            )

    scheduler.set_timesteps(num_steps, device=device)
    timesteps = scheduler.timesteps
    stds_all = _schedule(scheduler, timesteps, eta)[2]
    if return_log_probs and bool((stds_all == 0).any()):
        raise _zero_std_error(f"ddim_sample(eta={eta}, return_log_probs=True)")

    states, means, stds, prevs, log_probs = [latents], [], [], [], []
    with torch.enable_grad() if enable_grad else torch.no_grad():
        x = latents
        for n, t in enumerate(timesteps):
            mean, std, prev = ddim_transition(
                unet, scheduler, prompt_embeds, negative_embeds, x, t, guidance_scale=guidance_scale, eta=eta
            )
            if bool(std > 0):
                if noise is not None:
                    z = noise[:, n].to(device=device, dtype=mean.dtype)
                else:
                    z = randn_tensor(tuple(x.shape), generator=generator, device=device, dtype=dtype).to(mean.dtype)
                x_next = (mean + std * z).to(dtype)
            else:
                x_next = mean.to(dtype)
            if return_log_probs:
                log_probs.append(_log_prob(x_next, mean, std))
            states.append(x_next)
            means.append(mean)
            stds.append(std)
            prevs.append(prev)
            x = x_next

    return DiffusionTrajectory(
        latents=torch.stack(states, dim=1),
        timesteps=timesteps.clone(),
        prev_timesteps=torch.stack(prevs),
        log_probs=torch.stack(log_probs, dim=1) if return_log_probs else None,
        means=torch.stack(means, dim=1),
        stds=torch.stack(stds),
        final=x,
    )
