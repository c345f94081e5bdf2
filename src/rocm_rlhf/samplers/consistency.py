"""The reparameterised K-step consistency (LCM) sampler: one implementation for training, evaluation and benchmarks.

It follows diffusers' ``LatentConsistencyModelPipeline`` + ``LCMScheduler`` exactly but draws every random number
outside the graph, so the chain is a differentiable function of the UNet's parameters. Each re-noising is a Gaussian
policy step ``N(sqrt(abar_{t_{n+1}}) x0_n, (1 - abar_{t_{n+1}}) I)``; the last evaluation is regularised as if it
re-noised to its own timestep (``final_step``); the reference policy is the UNet with its LoRA adapter disabled.
API: :func:`consistency_sample` -> :class:`ConsistencyTrajectory`, :func:`consistency_transition`,
:func:`divergence_per_step`, :func:`draw_noise`, :func:`lcm_timesteps`, :func:`adapter_disabled`,
:func:`adapter_layers`.
The chain's equations and the last-step convention: docs/method.md, section 'The sampler and ROCM's objective'.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import ContextManager

import torch
import torch.utils.checkpoint

from .common import gaussian_log_prob


@dataclass
class ConsistencyTrajectory:
    """One batch of K-step consistency samples, with every step's Gaussian transition.

    Shapes: B batch, K steps, latents (C, H, W). Lists are indexed by step n = 0 .. K-1.
    """

    timesteps: list[int]
    states: list[torch.Tensor]  # x_{t_n}: the state each evaluation saw (K tensors [B, C, H, W])
    x0: list[torch.Tensor]  # consistency outputs x0_n (K tensors)
    means: list[torch.Tensor]  # policy transition means mu_n (K, or K-1 with final_step=False)
    stds: list[float]  # transition stds sigma_n (same length as means)
    noise: torch.Tensor  # [B, K-1, C, H, W] the re-noising noise actually used
    ref_means: list[torch.Tensor] | None = None  # reference transition means at the same states
    next_states: list[torch.Tensor] = field(default_factory=list)  # x_{t_{n+1}} for the K-1 stochastic steps

    @property
    def final(self) -> torch.Tensor:
        """The sampled latents ``x0_{K-1}`` (decode with the VAE)."""
        return self.x0[-1]

    def log_probs(self) -> torch.Tensor:
        """[B, K-1]: log pi(x_{t_{n+1}} | x_{t_n}) of the taken stochastic steps (for policy-gradient methods). The
        taken states are actions, constants of the log-density: they are detached, so the gradient is the score
        function's (through the means). Not detached, ``x_{t_{n+1}} = mu_n + sigma_n eps_n`` would make every log-prob
        ``-|eps_n|^2 / 2 + const``, with a gradient of 0."""
        cols = [gaussian_log_prob(nxt.detach(), mu, sd) for nxt, mu, sd in zip(self.next_states, self.means, self.stds)]
        if not cols:
            return torch.zeros(self.noise.shape[0], 0, device=self.noise.device)
        return torch.stack(cols, 1)


def guidance_embedding(unet, guidance_scale: float, batch: int, device, dtype) -> torch.Tensor | None:
    """The LCM w-embedding for ``w = guidance_scale - 1`` (as diffusers), or None for a UNet without one."""
    dim = getattr(unet.config, "time_cond_proj_dim", None)
    if dim is None:
        return None
    w = torch.full((batch,), float(guidance_scale) - 1.0)
    return sinusoidal_w_embedding(w, dim).to(device=device, dtype=dtype)


def sinusoidal_w_embedding(w: torch.Tensor, embedding_dim: int) -> torch.Tensor:
    """The guidance-scale embedding of LCM (Luo et al. 2023; diffusers ``get_guidance_scale_embedding``)."""
    w = w * 1000.0
    half = embedding_dim // 2
    emb = torch.log(torch.tensor(10000.0)) / (half - 1)
    emb = torch.exp(torch.arange(half, dtype=torch.float32) * -emb)
    emb = w.to(torch.float32)[:, None] * emb[None, :]
    emb = torch.cat([torch.sin(emb), torch.cos(emb)], dim=1)
    if embedding_dim % 2 == 1:
        emb = torch.nn.functional.pad(emb, (0, 1))
    return emb


def lcm_timesteps(scheduler, num_steps: int) -> list[int]:
    """The K timesteps diffusers' LCMScheduler uses (e.g. K=4: [999, 759, 499, 259] with 50 original steps)."""
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    scheduler.set_timesteps(num_steps)
    return [int(t) for t in scheduler.timesteps]


def draw_noise(shape: tuple[int, ...], num_steps: int, generator: torch.Generator | None, device=None, dtype=None):
    """The K-1 re-noising draws, in the order LCMScheduler.step draws them from the same generator."""
    draws = [torch.randn(shape, generator=generator, device=device, dtype=dtype) for _ in range(num_steps - 1)]
    if not draws:
        return torch.zeros((shape[0], 0, *shape[1:]), device=device, dtype=dtype)
    return torch.stack(draws, 1)


def adapter_layers(unet) -> list:
    """The UNet's peft adapter layers (``BaseTunerLayer``), in module order: the layers diffusers'
    ``disable_adapters``/``enable_adapters`` switch. Found once per UNet and set of adapters and kept on the UNet, so
    that switching the reference on and off in every sampler step does not walk the module tree (and re-check peft's
    version from its package metadata) each time, as diffusers' methods do: about a third of their time per switch on
    the sandbox UNet (benchmarks/bench_adapter_switch.py)."""
    key = tuple(getattr(unet, "peft_config", {}) or {})
    cached = unet.__dict__.get("_rocm_adapter_layers")
    if cached is None or cached[0] != key:
        from peft.tuners.tuners_utils import BaseTunerLayer

        cached = (key, [m for m in unet.modules() if isinstance(m, BaseTunerLayer)])
        unet.__dict__["_rocm_adapter_layers"] = cached  # not a submodule, not in the state dict
    return cached[1]


def adapter_disabled(unet) -> ContextManager:
    """Context in which a diffusers UNet with a peft LoRA adapter runs as its base model: each adapter layer's own
    ``enable_adapters(False)`` and, on leaving, ``enable_adapters(True)`` (which also restores the adapters'
    ``requires_grad``), what ``unet.disable_adapters()``/``unet.enable_adapters()`` do, on the layers
    :func:`adapter_layers` found once."""
    if not getattr(unet, "_hf_peft_config_loaded", False):
        raise ValueError("the UNet has no LoRA adapter: there is no separate reference policy to evaluate")
    layers = adapter_layers(unet)

    @contextlib.contextmanager
    def ctx():
        for layer in layers:
            layer.enable_adapters(False)
        try:
            yield
        finally:
            for layer in layers:
                layer.enable_adapters(True)

    return ctx()


def consistency_transition(unet, scheduler, prompt_embeds: torch.Tensor, x: torch.Tensor, t: int, t_next: int,
                           guidance_scale: float, *, noise: torch.Tensor | None = None, checkpoint: bool = False,
                           reference: bool = False) -> tuple[torch.Tensor, torch.Tensor, float, torch.Tensor | None]:
    """One step of the chain at states ``x`` [B, C, H, W]: ``(x0, mean, std, x_next)``, the only copy of its
    arithmetic.

    ``x0 = c_skip(t) x + c_out(t) pred_x0``, ``pred_x0 = (x - sqrt(1 - abar_t) eps) / sqrt(abar_t)`` with
    ``eps = unet(x, t, c, w_emb(guidance_scale - 1))`` (or the v- and sample-prediction forms, as LCMScheduler); the
    transition to ``t_next`` is ``N(mean, std^2 I)``,
    ``mean = sqrt(abar_{t_next}) x0``, ``std = sqrt(1 - abar_{t_next})`` (``t_next = t`` for the regularised last
    evaluation, docs/method.md); with ``noise`` [B, C, H, W] also the re-noised state
    ``x_next = sqrt(abar_{t_next}) x0 + std * noise`` (else None). Used by :func:`consistency_sample` and, at stored
    states, by RLCM's PPO recomputation, so both give the same numbers bit for bit at the same weights.
    ``checkpoint`` recomputes the UNet call in the backward pass (non-reentrant activation checkpointing).
    ``reference`` evaluates the reference policy: the UNet with its LoRA adapter disabled, the disabling done inside
    the (checkpointed) function, so that a recomputation in the backward pass runs the reference too.
    """
    w_emb = guidance_embedding(unet, guidance_scale, x.shape[0], x.device, prompt_embeds.dtype)
    fn = _reference_function if reference else _consistency_function
    if checkpoint:
        x0 = torch.utils.checkpoint.checkpoint(fn, unet, scheduler, prompt_embeds, w_emb, x, t, use_reentrant=False)
    else:
        x0 = fn(unet, scheduler, prompt_embeds, w_emb, x, t)
    abar = scheduler.alphas_cumprod
    a_next = abar[t_next].to(x.device, x.dtype)
    std = float((1 - abar[t_next]).sqrt())
    # x_next is its own product, not mean + std * noise: reusing ``mean`` would sum the two gradient paths into x0
    # in another order and change the gradients in the last bits (measured)
    x_next = None if noise is None else a_next.sqrt() * x0 + std * noise
    return x0, a_next.sqrt() * x0, std, x_next


PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")  # LCMScheduler.step's, each implemented below


def prediction_type(scheduler) -> str:
    """The scheduler's ``prediction_type``; one the consistency function does not implement is an error (it would
    otherwise be read as epsilon and give wrong images and gradients without a word)."""
    kind = getattr(scheduler.config, "prediction_type", "epsilon")
    if kind not in PREDICTION_TYPES:
        raise ValueError(f"scheduler prediction_type {kind!r} is not implemented by the consistency sampler "
                         f"(implemented: {', '.join(PREDICTION_TYPES)})")
    return kind


def _consistency_function(unet, scheduler, prompt_embeds: torch.Tensor, w_emb: torch.Tensor | None, x: torch.Tensor,
                          t: int) -> torch.Tensor:
    """f_theta(x, t) = c_skip(t) x + c_out(t) pred_x0(x, t). Every input is an argument (nothing closed over), so a
    checkpointed call recomputes with the values it was called with."""
    t_tensor = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
    out = unet(x, t_tensor, timestep_cond=w_emb, encoder_hidden_states=prompt_embeds, return_dict=False)[0]
    a_t = scheduler.alphas_cumprod[t].to(x.device, x.dtype)
    kind = prediction_type(scheduler)
    if kind == "epsilon":
        pred_x0 = (x - (1 - a_t).sqrt() * out) / a_t.sqrt()
    elif kind == "v_prediction":
        pred_x0 = a_t.sqrt() * x - (1 - a_t).sqrt() * out
    else:  # "sample"
        pred_x0 = out
    c_skip, c_out = scheduler.get_scalings_for_boundary_condition_discrete(t)  # LCMScheduler's own formula
    return c_skip * x + c_out * pred_x0


def _reference_function(unet, scheduler, prompt_embeds: torch.Tensor, w_emb: torch.Tensor | None, x: torch.Tensor,
                        t: int) -> torch.Tensor:
    """f_ref(x, t): :func:`_consistency_function` with the adapter disabled (also when recomputed by a checkpoint)."""
    with adapter_disabled(unet):
        return _consistency_function(unet, scheduler, prompt_embeds, w_emb, x, t)


def consistency_sample(
    unet,
    scheduler,
    prompt_embeds: torch.Tensor,
    *,
    num_steps: int,
    guidance_scale: float,
    latents: torch.Tensor,
    noise: torch.Tensor,
    reference: bool = False,
    reference_grad: bool = True,
    final_step: bool = True,
    grad_steps: int | None = None,
    checkpoint: bool = False,
) -> ConsistencyTrajectory:
    """Run the K-step consistency chain with gradients wherever autograd is enabled.

    Args:
        unet: diffusers UNet2DConditionModel predicting epsilon (with ``time_cond_proj_dim`` for LCMs).
        scheduler: the LCMScheduler (its alphas and boundary scalings are used; its state is set).
        prompt_embeds: [B, L, D] text embeddings.
        latents: [B, C, H, W] initial noise x_{t_0} (already scaled by init_noise_sigma = 1).
        noise: [B, K-1, C, H, W] re-noising draws (see :func:`draw_noise`).
        reference: also evaluate the reference policy (adapter disabled) at every visited state.
        reference_grad: let gradients flow through the reference's transition (into the visited states); False
            evaluates it without a graph (enough for logging the divergence when beta = 0).
        final_step: include the last evaluation's transition in ``means``/``stds`` (regularised as a
            re-noising to its own timestep).
        grad_steps: truncated backpropagation: gradients flow through the last ``grad_steps`` evaluations only
            (the states before them are detached). None = all K.
        checkpoint: recompute each UNet call that gradients pass through in the backward pass (non-reentrant
            activation checkpointing) to save memory: the policy's and, with ``reference_grad``, the reference's
            (gradients flow through it into the visited states), so the saved activations do not grow with K.
    """
    if latents.ndim != 4:
        raise ValueError(f"latents must be [B, C, H, W], got shape {tuple(latents.shape)}")
    bsz = latents.shape[0]
    if prompt_embeds.shape[0] != bsz:
        raise ValueError(f"prompt_embeds has batch {prompt_embeds.shape[0]} but latents has {bsz}")
    if noise.shape[:2] != (bsz, num_steps - 1) or noise.shape[2:] != latents.shape[1:]:
        raise ValueError(
            f"noise must have shape {(bsz, num_steps - 1, *latents.shape[1:])} for K={num_steps}, got {tuple(noise.shape)}"
        )
    if grad_steps is not None and grad_steps < 1:
        raise ValueError(f"grad_steps must be >= 1 or None, got {grad_steps}")

    prediction_type(scheduler)  # refuse an unknown prediction type before any UNet call
    timesteps = lcm_timesteps(scheduler, num_steps)
    first_grad = 0 if grad_steps is None else max(0, num_steps - grad_steps)

    traj = ConsistencyTrajectory(timesteps=timesteps, states=[], x0=[], means=[], stds=[], noise=noise)
    if reference:
        traj.ref_means = []
    x = latents
    for n, t in enumerate(timesteps):
        if n < first_grad:
            x = x.detach()
        last = n == num_steps - 1
        t_next = t if last else timesteps[n + 1]
        grad_here = torch.is_grad_enabled() and n >= first_grad
        with torch.set_grad_enabled(grad_here):
            x0, mean, sigma, x_next = consistency_transition(
                unet, scheduler, prompt_embeds, x, t, t_next, guidance_scale, noise=None if last else noise[:, n],
                checkpoint=checkpoint and grad_here)
            traj.states.append(x)
            traj.x0.append(x0)
            if not last or final_step:
                traj.means.append(mean)
                traj.stds.append(sigma)
                if reference:
                    ref_grad = grad_here and reference_grad
                    with torch.set_grad_enabled(ref_grad):
                        traj.ref_means.append(consistency_transition(unet, scheduler, prompt_embeds, x, t, t_next,
                                                                     guidance_scale, reference=True,
                                                                     checkpoint=checkpoint and ref_grad)[1])
        if not last:
            x = x_next
            traj.next_states.append(x)
    return traj


def divergence_per_step(traj: ConsistencyTrajectory, name: str, reduction: str = "mean") -> torch.Tensor:
    """[B, S]: the divergence between the policy's and the reference's transition at every regularised step."""
    from rocm_rlhf.divergences import gaussian_divergence

    if traj.ref_means is None:
        raise ValueError("the trajectory was sampled without reference=True")
    cols = [
        gaussian_divergence(name, mu, ref, sd, reduction=reduction)
        for mu, ref, sd in zip(traj.means, traj.ref_means, traj.stds)
    ]
    return torch.stack(cols, 1)
