"""Building the sandbox's models: VAE, teacher diffusion model (with its text encoder), distilled LCM.

Each build step reads the previous step's folder with ``from_pretrained`` and writes its own with ``save_pretrained``:
``vae/`` (AutoencoderKL, 32x32x3 <-> 8x8x4), ``teacher/`` (a StableDiffusionPipeline folder: vae, tokenizer,
text_encoder, an epsilon UNet, DDIM scheduler) and ``lcm/`` (a LatentConsistencyModelPipeline folder: the same vae,
tokenizer and text encoder, the distilled UNet with ``time_cond_proj_dim``, LCMScheduler), loadable exactly like
``runwayml/stable-diffusion-v1-5`` and ``SimianLuo/LCM_Dreamshaper_v7``. API: :func:`train_vae`,
:func:`train_teacher`, :func:`distill_lcm`, :class:`BuildSettings`. The proxy rewards: :mod:`rocm_rlhf.rewards.sandbox`.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..samplers.common import encode_prompts
from ..samplers.consistency import sinusoidal_w_embedding
from .data import captioned_batch, to_model_range
from .models import (
    SandboxSizes,
    count_parameters,
    make_ddim_scheduler,
    make_lcm_scheduler,
    make_text_encoder,
    make_unet,
    make_vae,
    train_tokenizer,
)
from .captions import all_captions
from .render import World

log = logging.getLogger(__name__)


@dataclass
class BuildSettings:
    steps: int
    batch_size: int = 64
    lr: float = 1e-3
    seed: int = 0


def _cosine_lr(opt: torch.optim.Optimizer, step: int, total: int, base: float, warmup: int = 50) -> None:
    if step < warmup:
        lr = base * (step + 1) / warmup
    else:
        lr = base * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))
    for g in opt.param_groups:
        g["lr"] = lr


def _progress(total: int, desc: str):
    return tqdm(total=total, desc=desc, mininterval=5.0, dynamic_ncols=False, ascii=True)


# ----------------------------------------------------------------------------------------------------------- VAE
def train_vae(world: World, out_dir: str | Path, settings: BuildSettings, sizes: SandboxSizes) -> dict:
    """Train the AutoencoderKL on renders (L2 + L1 reconstruction, tiny KL) and save it with its scaling factor."""
    torch.manual_seed(settings.seed)
    rng = np.random.default_rng(settings.seed)
    vae = make_vae(sizes)
    opt = torch.optim.AdamW(vae.parameters(), lr=settings.lr, weight_decay=0.0)
    t0 = time.time()
    bar = _progress(settings.steps, "vae")
    for step in range(settings.steps):
        _cosine_lr(opt, step, settings.steps, settings.lr)
        images, _, _ = captioned_batch(world, settings.batch_size, rng)
        x = to_model_range(images)
        post = vae.encode(x).latent_dist
        z = post.sample()
        rec = vae.decode(z).sample
        kl = post.kl().mean() / z[0].numel()
        loss = F.mse_loss(rec, x) + 0.1 * F.l1_loss(rec, x) + 1e-4 * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        bar.update(1)
        if step % 100 == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}")
    bar.close()
    vae.eval()
    with torch.no_grad():
        images, _, _ = captioned_batch(world, 512, np.random.default_rng(settings.seed + 1))
        lat = vae.encode(to_model_range(images)).latent_dist.mode()
        scale = float(1.0 / lat.std())
        rec = (vae.decode(lat).sample / 2 + 0.5).clamp(0, 1)
        rec_mse = float(F.mse_loss(rec, images))
    vae.register_to_config(scaling_factor=scale)
    vae.save_pretrained(out_dir)
    return {"seconds": time.time() - t0, "reconstruction_mse": rec_mse, "scaling_factor": scale,
            "parameters": count_parameters(vae)}


@torch.no_grad()
def encode_images(vae, images: torch.Tensor) -> torch.Tensor:
    """Deterministic latents (posterior mode) times the scaling factor, as diffusion training uses them."""
    return vae.encode(to_model_range(images)).latent_dist.mode() * vae.config.scaling_factor


# ------------------------------------------------------------------------------------------------------- teacher
def train_teacher(
    world: World, vae_dir: str | Path, out_dir: str | Path, settings: BuildSettings, sizes: SandboxSizes,
    uncond_prob: float = 0.1,
) -> dict:
    """Train tokenizer, text encoder and an epsilon-prediction UNet on rendered, captioned data; save a
    StableDiffusionPipeline folder. The text encoder is trained jointly with the UNet (our tiny stand-in for a
    pretrained CLIP text tower), then frozen for every later build step."""
    from diffusers import AutoencoderKL, StableDiffusionPipeline

    torch.manual_seed(settings.seed)
    rng = np.random.default_rng(settings.seed)
    vae = AutoencoderKL.from_pretrained(vae_dir).eval().requires_grad_(False)
    texts = [c.text for c in all_captions()] + [""]
    tokenizer = train_tokenizer(texts, max_length=sizes.max_tokens)
    text_encoder = make_text_encoder(tokenizer, sizes)
    latent_size = world.image_size // 2 ** (len(sizes.vae_channels) - 1)
    unet = make_unet(sizes, latent_size, sizes.text_width, lcm=False)
    scheduler = make_ddim_scheduler()
    abar = scheduler.alphas_cumprod
    params = list(unet.parameters()) + list(text_encoder.parameters())
    opt = torch.optim.AdamW(params, lr=settings.lr, weight_decay=1e-4)
    ema = copy.deepcopy(unet).requires_grad_(False)
    t0 = time.time()
    bar = _progress(settings.steps, "teacher")
    for step in range(settings.steps):
        _cosine_lr(opt, step, settings.steps, settings.lr)
        images, caps, _ = captioned_batch(world, settings.batch_size, rng)
        caps = ["" if u else c for c, u in zip(caps, rng.random(len(caps)) < uncond_prob)]
        z0 = encode_images(vae, images)
        tok = tokenizer(caps, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                        return_tensors="pt")
        emb = text_encoder(tok.input_ids)[0]
        t = torch.randint(0, scheduler.config.num_train_timesteps, (z0.shape[0],))
        eps = torch.randn_like(z0)
        a = abar[t].view(-1, 1, 1, 1)
        zt = a.sqrt() * z0 + (1 - a).sqrt() * eps
        pred = unet(zt, t, encoder_hidden_states=emb).sample
        loss = F.mse_loss(pred, eps)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        decay = min(0.999, (1 + step) / (10 + step))
        with torch.no_grad():
            for pe, p in zip(ema.parameters(), unet.parameters()):
                pe.lerp_(p, 1 - decay)
        bar.update(1)
        if step % 100 == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}")
    bar.close()
    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder.eval(), tokenizer=tokenizer, unet=ema.eval(), scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.save_pretrained(out_dir)
    return {"seconds": time.time() - t0, "final_loss": float(loss), "unet_parameters": count_parameters(unet),
            "text_encoder_parameters": count_parameters(text_encoder), "vocab_size": len(tokenizer)}


# --------------------------------------------------------------------------------------------- LCM distillation
def _ddim_solver_step(abar, x0, eps, t_prev):
    a_prev = abar[t_prev].view(-1, 1, 1, 1)
    return a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps


def _pred_x0(abar, x, eps, t):
    a = abar[t].view(-1, 1, 1, 1)
    return (x - (1 - a).sqrt() * eps) / a.sqrt()


def _boundary(t, timestep_scaling=10.0, sigma_data=0.5):
    s = (t.float() * timestep_scaling).view(-1, 1, 1, 1)
    return sigma_data**2 / (s**2 + sigma_data**2), s / (s**2 + sigma_data**2).sqrt()


def distill_lcm(
    teacher_dir: str | Path, world: World, out_dir: str | Path, settings: BuildSettings, sizes: SandboxSizes,
    w_min: float = 1.0, w_max: float = 5.0, num_ddim_timesteps: int = 50, ema_decay: float = 0.95,
) -> dict:
    """Latent consistency distillation (Luo et al. 2023, Algorithm 1, as diffusers' train_lcm_distill_sd script):
    a DDIM solver of the guided teacher over ``num_ddim_timesteps`` skipping steps, the student with the guidance
    w-embedding, an EMA target network, pseudo-Huber loss. Guidance w ~ U[w_min, w_max] (w = guidance_scale - 1).
    Saves a LatentConsistencyModelPipeline folder."""
    from diffusers import LatentConsistencyModelPipeline, StableDiffusionPipeline

    torch.manual_seed(settings.seed)
    rng = np.random.default_rng(settings.seed)
    teacher = StableDiffusionPipeline.from_pretrained(teacher_dir, safety_checker=None, requires_safety_checker=False)
    vae, tokenizer, text_encoder = teacher.vae, teacher.tokenizer, teacher.text_encoder.requires_grad_(False)
    t_unet = teacher.unet.eval().requires_grad_(False)
    student = make_unet(sizes, t_unet.config.sample_size, t_unet.config.cross_attention_dim, lcm=True)
    missing, unexpected = student.load_state_dict(t_unet.state_dict(), strict=False)
    assert not unexpected and all("cond_proj" in k for k in missing), (missing, unexpected)
    torch.nn.init.zeros_(student.time_embedding.cond_proj.weight)  # start exactly at the teacher
    target = copy.deepcopy(student).requires_grad_(False)
    scheduler = make_lcm_scheduler(num_ddim_timesteps)
    abar = scheduler.alphas_cumprod
    k = scheduler.config.num_train_timesteps // num_ddim_timesteps
    ddim_timesteps = torch.arange(1, num_ddim_timesteps + 1) * k - 1
    uncond = encode_prompts(tokenizer, text_encoder, [""])
    opt = torch.optim.AdamW(student.parameters(), lr=settings.lr, weight_decay=0.0)
    huber_c = 0.001
    t0 = time.time()
    bar = _progress(settings.steps, "lcm")
    for step in range(settings.steps):
        _cosine_lr(opt, step, settings.steps, settings.lr, warmup=20)
        images, caps, _ = captioned_batch(world, settings.batch_size, rng)
        bsz = images.shape[0]
        z0 = encode_images(vae, images)
        emb = encode_prompts(tokenizer, text_encoder, caps)
        idx = torch.randint(0, num_ddim_timesteps, (bsz,))
        t_start = ddim_timesteps[idx]
        t_prev = (t_start - k).clamp(min=0)
        noise = torch.randn_like(z0)
        a = abar[t_start].view(-1, 1, 1, 1)
        zt = a.sqrt() * z0 + (1 - a).sqrt() * noise
        w = w_min + (w_max - w_min) * torch.rand(bsz)
        w_emb = sinusoidal_w_embedding(w, sizes.time_cond_proj_dim)
        c_skip_s, c_out_s = _boundary(t_start)
        c_skip, c_out = _boundary(t_prev)
        eps_s = student(zt, t_start, timestep_cond=w_emb, encoder_hidden_states=emb).sample
        pred = c_skip_s * zt + c_out_s * _pred_x0(abar, zt, eps_s, t_start)
        with torch.no_grad():
            both = t_unet(torch.cat([zt, zt]), torch.cat([t_start, t_start]),
                          encoder_hidden_states=torch.cat([emb, uncond.expand_as(emb)])).sample
            e_c, e_u = both.chunk(2)
            ww = w.view(-1, 1, 1, 1)
            x0_c, x0_u = _pred_x0(abar, zt, e_c, t_start), _pred_x0(abar, zt, e_u, t_start)
            x0_g = x0_c + ww * (x0_c - x0_u)
            e_g = e_c + ww * (e_c - e_u)
            z_prev = _ddim_solver_step(abar, x0_g, e_g, t_prev)
            eps_t = target(z_prev, t_prev, timestep_cond=w_emb, encoder_hidden_states=emb).sample
            tgt = c_skip * z_prev + c_out * _pred_x0(abar, z_prev, eps_t, t_prev)
        loss = (torch.sqrt((pred.float() - tgt.float()) ** 2 + huber_c**2) - huber_c).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            for pt, p in zip(target.parameters(), student.parameters()):
                pt.lerp_(p, 1 - ema_decay)
        bar.update(1)
        if step % 100 == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}")
    bar.close()
    pipe = LatentConsistencyModelPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=target.eval(), scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.save_pretrained(out_dir)
    return {"seconds": time.time() - t0, "final_loss": float(loss), "unet_parameters": count_parameters(student)}
