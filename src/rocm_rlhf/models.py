"""Loading the generators (sandbox folders and hub ids alike) and sampling images from them.

Everything goes through diffusers' ``from_pretrained``, for the sandbox's models and the paper's hub models alike.
API: :func:`load_pipeline` and :func:`pipeline_class` by generator kind ('lcm' or 'diffusion', as
:func:`rocm_rlhf.runs.generator` names them), :func:`load_lcm_pipeline`, :func:`load_sd_pipeline`, ``DTYPES`` (the
config's ``model.dtype``), :func:`latent_shape`, :func:`ddim_scheduler_for`, :func:`seeded_noise` (per-image noise
from per-image seeds), and :func:`lcm_generate` / :func:`ddim_generate` (images without gradients).
"""

from __future__ import annotations

from pathlib import Path

import torch

from .infra.hub import from_pretrained
from .samplers.common import decode_latents, encode_prompts
from .samplers.consistency import consistency_sample, draw_noise


def pipeline_dtype_kwargs(dtype: torch.dtype, diffusers_version: str | None = None) -> dict[str, torch.dtype]:
    """The keyword that sets the weights' dtype in ``DiffusionPipeline.from_pretrained`` of the installed diffusers.

    diffusers 0.31-0.39 read only ``torch_dtype`` (an unknown ``dtype=`` is dropped with a warning and the weights
    load in float32); 0.40 reads ``dtype`` and deprecates ``torch_dtype`` (a FutureWarning; removal announced for
    1.0). So: ``torch_dtype`` before 0.40, ``dtype`` from 0.40 on.
    """
    from packaging.version import Version

    if diffusers_version is None:
        import diffusers

        diffusers_version = diffusers.__version__
    key = "dtype" if Version(diffusers_version) >= Version("0.40") else "torch_dtype"
    return {key: dtype}


DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
"""The weights' dtype of the config's ``model.dtype``."""

GENERATORS = ("lcm", "diffusion")


def pipeline_class(generator: str):
    """diffusers' pipeline class of a generator kind (:func:`rocm_rlhf.runs.generator`): the LCM's
    LatentConsistencyModelPipeline or the diffusion baselines' StableDiffusionPipeline."""
    from diffusers import LatentConsistencyModelPipeline, StableDiffusionPipeline

    if generator not in GENERATORS:
        raise ValueError(f"generator must be one of {GENERATORS}, got {generator!r}")
    return LatentConsistencyModelPipeline if generator == "lcm" else StableDiffusionPipeline


def load_pipeline(generator: str, model_id: str | Path, dtype: torch.dtype = torch.float32,
                  device: str | torch.device = "cpu"):
    """The :func:`pipeline_class` of ``generator`` from a folder or hub id (no safety checker), frozen, on
    ``device``."""
    pipe = from_pretrained(
        pipeline_class(generator), model_id, **pipeline_dtype_kwargs(dtype), safety_checker=None,
        feature_extractor=None, requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    for m in (pipe.unet, pipe.vae, pipe.text_encoder):
        m.requires_grad_(False).eval()
    return pipe.to(device)


def load_lcm_pipeline(model_id: str | Path, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"):
    """A LatentConsistencyModelPipeline (no safety checker), frozen, on ``device``."""
    return load_pipeline("lcm", model_id, dtype, device)


def load_sd_pipeline(model_id: str | Path, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"):
    """A StableDiffusionPipeline (no safety checker), frozen, on ``device``: the diffusion baselines' base."""
    return load_pipeline("diffusion", model_id, dtype, device)


def latent_shape(pipe) -> tuple[int, int, int]:
    """(C, H, W) of the UNet's latents at the pipeline's default resolution (``sample_size`` an int or (H, W))."""
    s = pipe.unet.config.sample_size
    h, w = (s, s) if isinstance(s, int) else tuple(s)
    return (pipe.unet.config.in_channels, h, w)


def ddim_scheduler_for(pipe):
    """A private DDIMScheduler built from the pipeline's scheduler config (SD 1.5 ships PNDM; DDPO switches to DDIM
    the same way), for the diffusion baselines' sampler; the pipeline's own scheduler is left alone."""
    from diffusers import DDIMScheduler

    return DDIMScheduler.from_config(pipe.scheduler.config)


SAMPLER_NOISE = ("lcm", "ddim")


def seeded_noise(seeds: list[int], shape: tuple[int, int, int], num_steps: int, sampler: str, device="cpu",
                 dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image noise from per-image seeds: (latents [n, C, H, W], sampler noise [n, S, C, H, W]), n = len(seeds).

    For each seed, a fresh CPU generator seeded with it draws the initial latents (one ``randn`` of [1, C, H, W]) and
    then the sampler's noise, so an image's numbers depend on its seed alone (not on the batch or its place in it):

    - ``sampler="lcm"``: ``S = K - 1`` re-noising draws of [1, C, H, W], one after the other, as LCMScheduler.step
      draws them (:func:`rocm_rlhf.samplers.consistency.draw_noise`), ``num_steps = K``;
    - ``sampler="ddim"``: ``S = T``, one draw of [1, T, C, H, W] (as the diffusion baselines' rollouts draw it),
      ``num_steps = T``.

    The two orders give different numbers for many shapes (e.g. (C, H, W) = (3, 5, 5) from K = 2 on, (1, 2, 2) with
    7 draws; torch's CPU ``randn`` fills larger tensors in blocks), so each sampler keeps its own order.
    """
    if sampler not in SAMPLER_NOISE:
        raise ValueError(f"sampler must be one of {SAMPLER_NOISE}, got {sampler!r}")
    lat, noi = [], []
    for s in seeds:
        g = torch.Generator().manual_seed(int(s))
        lat.append(torch.randn((1, *shape), generator=g))
        if sampler == "lcm":
            noi.append(draw_noise((1, *shape), num_steps, g))
        else:
            noi.append(torch.randn((1, num_steps, *shape), generator=g))
    return torch.cat(lat).to(device, dtype), torch.cat(noi).to(device, dtype)


def initial_noise(pipe, n: int, num_steps: int, seeds: list[int] | None = None, generator=None, device="cpu",
                  dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """(latents [n, C, H, W], re-noising noise [n, K-1, C, H, W]) of the LCM sampler.

    With ``seeds`` (one per image) every image's noise depends on its own seed only (:func:`seeded_noise`), so the
    same (prompt, seed) gets the same noise in every run and comparisons are paired; otherwise one batch draw from
    ``generator``.
    """
    shape = latent_shape(pipe)
    if seeds is not None:
        if len(seeds) != n:
            raise ValueError(f"got {len(seeds)} seeds for {n} images")
        return seeded_noise(seeds, shape, num_steps, "lcm", device, dtype)
    lat = torch.randn((n, *shape), generator=generator)
    return lat.to(device, dtype), draw_noise((n, *shape), num_steps, generator).to(device, dtype)


@torch.no_grad()
def lcm_generate(pipe, prompts: list[str], *, num_steps: int, guidance_scale: float, seeds: list[int] | None = None,
                 generator: torch.Generator | None = None, batch_size: int = 64) -> torch.Tensor:
    """Images in [0, 1] (B, 3, H, W) from an LCM pipeline through our consistency sampler (no gradients)."""
    device, dtype = pipe.unet.device, pipe.unet.dtype
    out = []
    for i in range(0, len(prompts), batch_size):
        chunk = prompts[i : i + batch_size]
        lat, noise = initial_noise(pipe, len(chunk), num_steps, None if seeds is None else seeds[i : i + batch_size],
                                   generator, device, dtype)
        emb = encode_prompts(pipe.tokenizer, pipe.text_encoder, chunk, device=device, dtype=dtype)
        traj = consistency_sample(pipe.unet, pipe.scheduler, emb, num_steps=num_steps,
                                  guidance_scale=guidance_scale, latents=lat, noise=noise)
        out.append(decode_latents(pipe.vae, traj.final).float().cpu())
    return torch.cat(out)


@torch.no_grad()
def ddim_generate(pipe, prompts: list[str], *, num_steps: int, guidance_scale: float, eta: float, seeds: list[int],
                  batch_size: int = 64) -> torch.Tensor:
    """Images in [0, 1] (B, 3, H, W) from a diffusion pipeline through the diffusion baselines' stochastic DDIM
    sampler (:func:`ddim_scheduler_for`, no gradients), each image with the noise of its own seed
    (:func:`seeded_noise`, ``sampler="ddim"``)."""
    from .samplers.diffusion import ddim_sample

    if len(seeds) != len(prompts):
        raise ValueError(f"got {len(seeds)} seeds for {len(prompts)} prompts")
    scheduler = ddim_scheduler_for(pipe)
    shape = latent_shape(pipe)
    device, dtype = pipe.unet.device, pipe.unet.dtype
    uncond = encode_prompts(pipe.tokenizer, pipe.text_encoder, [""], device=device, dtype=dtype)
    out = []
    for i in range(0, len(prompts), batch_size):
        chunk = prompts[i : i + batch_size]
        lat, noise = seeded_noise(seeds[i : i + batch_size], shape, num_steps, "ddim", device, dtype)
        emb = encode_prompts(pipe.tokenizer, pipe.text_encoder, chunk, device=device, dtype=dtype)
        traj = ddim_sample(pipe.unet, scheduler, emb, uncond if guidance_scale != 1 else None,
                           num_steps=num_steps, guidance_scale=guidance_scale, eta=eta, latents=lat, noise=noise,
                           return_log_probs=False)
        out.append(decode_latents(pipe.vae, traj.final).float().cpu())
    return torch.cat(out)
