"""How close is a ROCM training step to the cost of the UNet passes its exact gradient cannot avoid?

The bound, per sampler step k = 1..K: at beta = 0, one policy forward and one backward (K x [policy fwd + bwd]); at
beta > 0 also the reference's forward and its backward to its input, because the divergence of each step depends on
the visited state, which depends on the LoRA weights through the earlier steps (K x [policy fwd + bwd] + K x
[reference fwd + bwd to the input]). This benchmark times, on the same machine and batch, full ROCM steps (sampling
with gradients, reference, divergence, decode, reward, backward, optimizer) at beta = 0 and at KL beta = 0.1, and
each bound's passes alone on fixed inputs, and reports step / bound (aim: at most 1.15; the rest is the VAE decoder,
the reward, the sampler's arithmetic and the optimizer).

    python benchmarks/bench_rocm_step.py [--lcm results/models/sandbox/lcm] [--unet sandbox|dreamshaper-tiny]
        [--batch 16] [--steps 4] [--repeats 10]

``--unet sandbox`` uses the sandbox LCM (a random one of the sandbox's architecture if --lcm is missing);
``--unet dreamshaper-tiny`` replaces its UNet by a random UNet of the LCM Dreamshaper v7 architecture (4 blocks, 2
layers each, the guidance embedding) at small widths. Results: results/benchmarks/rocm_step.json (or --out).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def build_random_sandbox_lcm(path: Path) -> Path:
    """A random LCM pipeline with the sandbox's sizes (for machines without a built sandbox)."""
    from diffusers import LatentConsistencyModelPipeline

    from rocm_rlhf.sandbox.models import (
        SandboxSizes, make_lcm_scheduler, make_text_encoder, make_unet, make_vae, train_tokenizer)
    from rocm_rlhf.sandbox.captions import all_captions

    sizes = SandboxSizes()
    tok = train_tokenizer([c.text for c in all_captions()], max_length=sizes.max_tokens)
    pipe = LatentConsistencyModelPipeline(
        vae=make_vae(sizes), text_encoder=make_text_encoder(tok, sizes), tokenizer=tok,
        unet=make_unet(sizes, 8, sizes.text_width, lcm=True), scheduler=make_lcm_scheduler(),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(path)
    return path


def rocm_step_setup(lcm_path: str, batch: int, sampler_steps: int, unet: str = "sandbox", lr: float = 1e-4):
    """What the ROCM step benchmarks time: the LCM at ``lcm_path`` (a random one of the sandbox's architecture if it
    is missing; ``unet="dreamshaper-tiny"`` swaps in a random UNet of the LCM Dreamshaper v7 architecture) with a
    trained-looking LoRA adapter (rank 16, alpha 32, B != 0, so the divergence is not trivially zero) and a training
    Context with a cheap differentiable reward (the images' brightness, so the sampler is what is timed). Returns
    (pipe, params, ctx, source, tmp), ``tmp`` the temporary folder of a random LCM or None; ``lr`` 0 keeps the
    state fixed (plain SGD)."""
    from rocm_rlhf.models import load_lcm_pipeline
    from rocm_rlhf.rewards import Scorer
    from rocm_rlhf.training.lora import add_lora
    from rocm_rlhf.training.loop import Context, CountingScorer, TrainSettings

    lcm, tmp = Path(lcm_path), None
    if not (lcm / "model_index.json").exists():
        tmp = tempfile.TemporaryDirectory()
        lcm, source = build_random_sandbox_lcm(Path(tmp.name) / "lcm"), "random UNet of the sandbox architecture"
    else:
        source = str(lcm_path)
    pipe = load_lcm_pipeline(lcm)
    if unet == "dreamshaper-tiny":
        from diffusers import UNet2DConditionModel

        sys.path.insert(0, str(REPO / "benchmarks"))
        from bench_gpu_step import LCM_DREAMSHAPER_V7_UNET

        torch.manual_seed(0)
        pipe.unet = UNet2DConditionModel(**dict(
            LCM_DREAMSHAPER_V7_UNET, block_out_channels=(32, 64, 64, 64), attention_head_dim=4, norm_num_groups=8,
            cross_attention_dim=pipe.text_encoder.config.hidden_size, sample_size=pipe.unet.config.sample_size))
        source += " with a random UNet of the LCM Dreamshaper v7 architecture (widths 32-64-64-64)"
    params = add_lora(pipe.unet, 16, 32, ["to_q", "to_k", "to_v", "to_out.0"], seed=0)
    with torch.no_grad():  # a trained-looking adapter (B != 0), so the divergence is not trivially zero
        for p in params:
            p.normal_(0, 0.01)

    class Brightness(Scorer):  # a cheap differentiable reward, so the benchmark measures the sampler
        def forward(self, images, prompts):
            return images.mean((1, 2, 3))

    settings = TrainSettings(steps=10**6, batch_size=batch, lr=lr, seed=0, num_steps=sampler_steps,
                             guidance_scale=3.0, checkpoint_every=10**6)
    optimizer = torch.optim.AdamW(params, lr=lr) if lr else torch.optim.SGD(params, lr=0.0)
    ctx = Context(pipe=pipe, params=params, reward=CountingScorer(Brightness()),
                  prompts=["a large red circle on the left", "a small blue square at the top"], settings=settings,
                  device=torch.device("cpu"), optimizer=optimizer)
    return pipe, params, ctx, source, tmp


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lcm", default=str(REPO / "results/models/sandbox/lcm"))
    ap.add_argument("--unet", choices=["sandbox", "dreamshaper-tiny"], default="sandbox")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=4, help="sampler steps K")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(REPO / "results/benchmarks/rocm_step.json"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    from rocm_rlhf.samplers.common import encode_prompts
    from rocm_rlhf.samplers.consistency import adapter_disabled, guidance_embedding
    from rocm_rlhf.training.rocm import ROCM

    pipe, params, ctx, source, tmp = rocm_step_setup(args.lcm, args.batch, args.steps, unet=args.unet)
    methods = {"beta_0.1": ROCM(divergence="kl", beta=0.1), "beta_0": ROCM(divergence="none", beta=0.0)}

    def time_step(method, i):
        t0 = time.perf_counter()
        method.train_step(ctx, i)
        return time.perf_counter() - t0

    # the passes alone, on fixed inputs of the same shapes
    unet = pipe.unet
    c = unet.config
    x = torch.randn(args.batch, c.in_channels, c.sample_size, c.sample_size)
    emb = encode_prompts(pipe.tokenizer, pipe.text_encoder, ["a red circle"] * args.batch)
    w = guidance_embedding(unet, 3.0, args.batch, x.device, x.dtype)
    ts = [torch.full((args.batch,), t) for t in (999, 759, 499, 259, 199, 139, 79, 19)[: args.steps]]

    def time_passes(reference: bool):
        """K x (policy forward + backward), and with ``reference`` K x (reference forward + backward to its input)."""
        t0 = time.perf_counter()
        for t in ts:
            out = unet(x, t, timestep_cond=w, encoder_hidden_states=emb).sample
            out.mean().backward()
            if reference:
                xr = x.clone().requires_grad_(True)
                with adapter_disabled(unet):
                    ref = unet(xr, t, timestep_cond=w, encoder_hidden_states=emb).sample
                torch.autograd.grad(ref.mean(), xr)
        return time.perf_counter() - t0

    bound_of = {"beta_0.1": True, "beta_0": False}  # which bound each method's step is measured against
    for i in range(2):  # warm-up
        for m in methods.values():
            time_step(m, i + 1)
        time_passes(False)
        time_passes(True)
    steps = {k: [] for k in methods}
    passes = {False: [], True: []}
    for i in range(args.repeats):  # interleaved, so all see the same machine state
        for k, m in methods.items():
            steps[k].append(time_step(m, i + 3))
        for ref in (False, True):
            passes[ref].append(time_passes(ref))
    bound = {ref: statistics.median(v) for ref, v in passes.items()}
    res = {
        "benchmark": "rocm_step",
        "model": source,
        "batch": args.batch,
        "sampler_steps": args.steps,
        "threads": args.threads,
        "repeats": args.repeats,
        "unet": args.unet,
        "bound_s_median": {"beta_0": bound[False], "beta_0.1": bound[True]},
        "step_s_median": {k: statistics.median(v) for k, v in steps.items()},
        "ratio": {k: statistics.median(v) / bound[bound_of[k]] for k, v in steps.items()},
        "note": "bound at beta = 0: K x (policy fwd + bwd); at beta > 0: plus K x (reference fwd + bwd to its "
                "input). The steps also include the VAE decoder's forward and backward, the reward, the sampler's "
                "arithmetic and the optimizer, which the bounds do not",
        "machine": f"{platform.machine()} {platform.processor()} python {platform.python_version()} torch "
                   f"{torch.__version__}",
    }
    from rocm_rlhf.infra.utils import write_json

    write_json(args.out, res)  # atomic, creating the folder
    print(json.dumps(res, indent=2))
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
