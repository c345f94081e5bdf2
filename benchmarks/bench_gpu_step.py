"""One ROCM training step at the paper's scale: seconds per step and peak GPU memory, with and without gradient
checkpointing (and with truncated backpropagation), on a UNet with the LCM Dreamshaper v7 architecture.

Random weights of the same architecture (no download): the SD 1.5 UNet with the LCM w-embedding
(time_cond_proj_dim 256), the SD VAE, CLIP ViT-L/14 text width 768 (embeddings random, the text encoder is frozen and
outside the step). 512 x 512 images (64 x 64 latents), 8 sampler steps, batch 1, LoRA rank 16 / alpha 32 on
to_q, to_k, to_v, to_out.0, KL regularisation (reference pass with the adapter disabled), bf16 autocast. The reward
is a stand-in (mean image brightness), so its own cost is not included: add one reward-model forward and backward
(e.g. PickScore's ViT-H/14 at 224 px, about 1.3 GB of bf16 weights) to the figures.

    python benchmarks/bench_gpu_step.py                 # on a GPU; writes results/benchmarks/gpu_step.json
    python benchmarks/bench_gpu_step.py --size tiny     # a CPU smoke run of the same code on a tiny UNet
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]

# SimianLuo/LCM_Dreamshaper_v7 unet/config.json (the SD 1.5 UNet plus the LCM guidance embedding)
LCM_DREAMSHAPER_V7_UNET = dict(
    in_channels=4, out_channels=4, block_out_channels=(320, 640, 1280, 1280), layers_per_block=2,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=768, attention_head_dim=8, norm_num_groups=32, time_cond_proj_dim=256, sample_size=96,
)
SD_VAE = dict(
    in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(128, 256, 512, 512), layers_per_block=2,
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4, norm_num_groups=32,
    scaling_factor=0.18215, sample_size=512,
)
TINY_UNET = dict(LCM_DREAMSHAPER_V7_UNET, block_out_channels=(32, 64, 64, 64), layers_per_block=1,
                 cross_attention_dim=32, attention_head_dim=4, norm_num_groups=8, time_cond_proj_dim=8)
TINY_VAE = dict(SD_VAE, block_out_channels=(8, 8, 16, 16), layers_per_block=1, norm_num_groups=8)


FIT_GB = (24, 48, 80)  # the usual card sizes: whether a variant's peak fits each (GiB of allocated tensors)


def measure(unet, vae, scheduler, *, resolution, steps, batch, checkpoint, truncate, repeats, device, amp,
            beta=0.01):
    from rocm_rlhf.samplers.common import decode_latents
    from rocm_rlhf.samplers.consistency import consistency_sample, divergence_per_step, draw_noise

    params = [p for n, p in unet.named_parameters() if "lora_" in n]
    opt = torch.optim.AdamW(params, lr=6e-5)
    lat_size = resolution // 8
    emb = torch.randn(batch, 77, unet.config.cross_attention_dim, device=device)
    times = []
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for i in range(repeats + 1):
        g = torch.Generator().manual_seed(i)
        lat = torch.randn(batch, 4, lat_size, lat_size, generator=g).to(device)
        noise = draw_noise(lat.shape, steps, g).to(device)
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            traj = consistency_sample(unet, scheduler, emb, num_steps=steps, guidance_scale=7.5, latents=lat,
                                      noise=noise, reference=beta > 0, checkpoint=checkpoint, grad_steps=truncate)
            image = decode_latents(vae, traj.final)
            loss = -image.float().mean()
            if beta > 0:  # beta = 0 runs no reference pass, as ROCM without regularisation
                loss = loss + beta * divergence_per_step(traj, "kl").sum(1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i > 0:  # the first step warms up kernels and the allocator
            times.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
    fits = {f"fits_{gb}gb": (bool(peak < gb) if device.type == "cuda" else None) for gb in FIT_GB}
    return {"seconds_per_step": statistics.median(times), "peak_gpu_memory_gib": peak, **fits}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", choices=["paper", "tiny"], default="paper")
    ap.add_argument("--resolution", type=int, default=512)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--beta", type=float, default=0.01, help="KL weight; 0 = no reference pass (ROCM at beta = 0)")
    ap.add_argument("--require-cuda", action="store_true", help="fail at once without a CUDA device (no CPU run)")
    ap.add_argument("--out", default=str(REPO / "results/benchmarks/gpu_step.json"))
    args = ap.parse_args(argv)
    if args.beta < 0:
        ap.error("--beta must be >= 0")
    if args.require_cuda and not torch.cuda.is_available():
        print(f"bench_gpu_step: --require-cuda and no CUDA device is usable (torch {torch.__version__}, "
              f"CUDA build {torch.version.cuda})", file=sys.stderr)
        return 2

    from diffusers import AutoencoderKL, LCMScheduler, UNet2DConditionModel

    from rocm_rlhf.training.lora import add_lora

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    tiny = args.size == "tiny"
    resolution = 64 if tiny else args.resolution
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**(TINY_UNET if tiny else LCM_DREAMSHAPER_V7_UNET)).to(device)
    vae = AutoencoderKL(**(TINY_VAE if tiny else SD_VAE)).to(device).requires_grad_(False)
    if device.type == "cuda":
        unet.to(torch.bfloat16)
        vae.to(torch.bfloat16)
    params = add_lora(unet, 16, 32, ["to_q", "to_k", "to_v", "to_out.0"], seed=0)
    for p in params:
        p.data = p.data.float()
        torch.nn.init.normal_(p, std=1e-3)
    scheduler = LCMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                             set_alpha_to_one=True, original_inference_steps=50, clip_sample=False)
    variants = {"plain": dict(checkpoint=False, truncate=None),
                "gradient_checkpointing": dict(checkpoint=True, truncate=None),
                "checkpointing_truncated_4": dict(checkpoint=True, truncate=4)}
    res = {"benchmark": "gpu_step", "size": args.size, "device": torch.cuda.get_device_name(0)
           if device.type == "cuda" else "cpu", "resolution": resolution, "sampler_steps": args.steps,
           "batch": args.batch, "beta": args.beta, "lora": "rank 16, alpha 32", "dtype": "bf16 base, fp32 LoRA" if device.type == "cuda"
           else "fp32", "reward": "stand-in (mean brightness): add the reward model's own cost", "variants": {}}
    for name, kw in variants.items():
        try:
            res["variants"][name] = measure(unet, vae, scheduler, resolution=resolution, steps=args.steps,
                                            batch=args.batch, repeats=args.repeats, device=device,
                                            amp=device.type == "cuda", beta=args.beta, **kw)
        except torch.cuda.OutOfMemoryError as err:  # report it as a result, not a crash
            res["variants"][name] = {"error": f"out of memory: {err}".splitlines()[0]}
            torch.cuda.empty_cache()
        print(name, res["variants"][name], flush=True)
    from rocm_rlhf.infra.utils import write_json

    write_json(args.out, res)  # atomic, creating the folder
    return 0


if __name__ == "__main__":
    sys.exit(main())
