"""What both samplers and their callers share: prompt encoding, Gaussian log-densities and VAE decoding.

API: :func:`encode_prompts` (CLIP text embeddings, as diffusers' pipelines compute ``prompt_embeds``),
:func:`gaussian_log_prob` (the log-density under N(mean, std^2 I), summed over the non-batch dimensions) and
:func:`decode_latents` (latents to images in [0, 1], differentiably).
"""

from __future__ import annotations

import math

import torch


@torch.no_grad()
def encode_prompts(tokenizer, text_encoder, prompts: list[str], device=None, dtype=None) -> torch.Tensor:
    """CLIP text embeddings (last hidden state), as diffusers' pipelines compute ``prompt_embeds``.

    Padded to ``tokenizer.model_max_length`` and truncated there. The text encoder is frozen in every method here,
    so this runs without gradients.
    """
    device = device or text_encoder.device
    tok = tokenizer(
        list(prompts),
        padding="max_length",
        max_length=tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    )
    out = text_encoder(tok.input_ids.to(device))[0]
    return out.to(dtype) if dtype is not None else out


def transition_log_prob(x_next: torch.Tensor, mean: torch.Tensor, std: torch.Tensor | float) -> torch.Tensor:
    """[B]: the summed log-density of a taken transition ``x_next`` (a constant: detached) under N(mean, std^2 I), in
    at least float32 (the policy-gradient methods' stored and recomputed log-probs use this)."""
    dt = torch.promote_types(mean.dtype, torch.float32)
    return gaussian_log_prob(x_next.detach().to(dt), mean.to(dt), std)


def gaussian_log_prob(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor | float) -> torch.Tensor:
    """Log-density of ``x`` under N(mean, std^2 I), summed over all non-batch dimensions: shape [B].

    ``std`` is a float, a 0-d tensor, a tensor of shape [B] or one broadcastable to ``x``.
    """
    std = torch.as_tensor(std, dtype=x.dtype, device=x.device)
    if std.ndim == 1 and x.ndim > 1:
        std = std.view(-1, *([1] * (x.ndim - 1)))
    std = std.expand_as(x)
    lp = -((x - mean) ** 2) / (2 * std**2) - torch.log(std) - 0.5 * math.log(2 * math.pi)
    return lp.flatten(1).sum(1)


def decode_latents(vae, latents: torch.Tensor) -> torch.Tensor:
    """VAE-decode latents to images in [0, 1] (B, 3, H, W), differentiably, as diffusers' pipelines do."""
    image = vae.decode(latents / vae.config.scaling_factor, return_dict=False)[0]
    return (image / 2 + 0.5).clamp(0, 1)
