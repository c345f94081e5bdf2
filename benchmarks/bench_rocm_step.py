"""How close is a ROCM training step to the cost of its unavoidable passes?

A ROCM step costs about one forward and one backward pass of the UNet per sampler step, plus the reference's forward
pass per step (and the VAE decoder and reward, which are small here). This benchmark times, on the same machine and
batch, (a) full ROCM steps (sampling with gradients, reference, divergence, decode, reward, backward, optimizer) and
(b) those UNet passes alone (K x [policy forward + backward] + K x reference forward, on fixed inputs), and reports
the ratio (target: at most 1.3).

    python benchmarks/bench_rocm_step.py [--lcm results/models/sandbox/lcm] [--batch 16] [--steps 4] [--repeats 10]

Without --lcm (or if the folder is missing) a random UNet of the sandbox's architecture is used. Results are written
to results/benchmarks/rocm_step.json.
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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lcm", default=str(REPO / "results/models/sandbox/lcm"))
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=4, help="sampler steps K")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(REPO / "results/benchmarks/rocm_step.json"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    from rocm_rlhf.models import load_lcm_pipeline
    from rocm_rlhf.rewards import Scorer
    from rocm_rlhf.samplers.common import encode_prompts
    from rocm_rlhf.samplers.consistency import adapter_disabled, guidance_embedding
    from rocm_rlhf.training.lora import add_lora
    from rocm_rlhf.training.loop import Context, CountingScorer, TrainSettings
    from rocm_rlhf.training.rocm import ROCM

    lcm = Path(args.lcm)
    tmp = None
    if not (lcm / "model_index.json").exists():
        tmp = tempfile.TemporaryDirectory()
        lcm = build_random_sandbox_lcm(Path(tmp.name) / "lcm")
        source = "random UNet of the sandbox architecture"
    else:
        source = str(args.lcm)
    pipe = load_lcm_pipeline(lcm)
    params = add_lora(pipe.unet, 16, 32, ["to_q", "to_k", "to_v", "to_out.0"], seed=0)
    with torch.no_grad():  # a trained-looking adapter (B != 0), so the divergence is not trivially zero
        for p in params:
            p.normal_(0, 0.01)

    class Brightness(Scorer):  # a cheap differentiable reward, so the benchmark measures the sampler
        def forward(self, images, prompts):
            return images.mean((1, 2, 3))

    settings = TrainSettings(steps=10**6, batch_size=args.batch, lr=1e-4, seed=0, num_steps=args.steps,
                             guidance_scale=3.0, checkpoint_every=10**6)
    ctx = Context(pipe=pipe, params=params, reward=CountingScorer(Brightness()),
                  prompts=["a large red circle on the left", "a small blue square at the top"], settings=settings,
                  device=torch.device("cpu"), optimizer=torch.optim.AdamW(params, lr=1e-4))
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

    def time_passes():
        t0 = time.perf_counter()
        for t in ts:
            out = unet(x, t, timestep_cond=w, encoder_hidden_states=emb).sample
            out.mean().backward()
            with torch.no_grad(), adapter_disabled(unet):
                unet(x, t, timestep_cond=w, encoder_hidden_states=emb)
        return time.perf_counter() - t0

    for i in range(2):  # warm-up
        for m in methods.values():
            time_step(m, i + 1)
        time_passes()
    steps = {k: [] for k in methods}
    passes = []
    for i in range(args.repeats):  # interleaved, so all see the same machine state
        for k, m in methods.items():
            steps[k].append(time_step(m, i + 3))
        passes.append(time_passes())
    p_med = statistics.median(passes)
    res = {
        "benchmark": "rocm_step",
        "model": source,
        "batch": args.batch,
        "sampler_steps": args.steps,
        "threads": args.threads,
        "repeats": args.repeats,
        "passes_s_median": p_med,
        "step_s_median": {k: statistics.median(v) for k, v in steps.items()},
        "ratio": {k: statistics.median(v) / p_med for k, v in steps.items()},
        "note": "beta > 0 also backpropagates through the reference's transition into the visited states (one more "
                "UNet backward w.r.t. the input per step), which the passes alone do not include; both include the "
                "VAE decoder's forward and backward and the reward, which the passes alone do not",
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
