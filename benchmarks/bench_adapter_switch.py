"""What switching the reference policy on and off costs: diffusers' own switch against rocm_rlhf's, side by side.

The reference policy is the UNet with its LoRA adapter disabled; ROCM switches it on and off once per sampler step
(K times per training step, at every beta: at beta = 0 the drift is still logged), the diffusion baselines once per
rollout. diffusers' ``unet.disable_adapters()``/``unet.enable_adapters()`` walk the whole module tree and re-read
peft's version from its package metadata on every call; ``rocm_rlhf.samplers.consistency.adapter_disabled`` calls the
same per-layer ``enable_adapters`` on the adapter layers it found once (``adapter_layers``). This benchmark, in one
process on the same UNet, interleaved:

- times a switch pair (off and on again) both ways;
- times full ROCM training steps (default batch 8, K = 4) at KL beta = 0.1 and at beta = 0 with each switch;
- checks that both give the same loss and bit-identical gradients from the same state.

    python benchmarks/bench_adapter_switch.py [--lcm results/models/sandbox/lcm] [--batch 8] [--repeats 10]

Without the sandbox LCM it builds a random one of the sandbox's architecture. Results:
results/benchmarks/adapter_switch.json (or --out).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))


def diffusers_switch(unet):
    """The switch as it was: diffusers' model-level methods (the code before ``adapter_layers``)."""

    @contextlib.contextmanager
    def ctx():
        unet.disable_adapters()
        try:
            yield
        finally:
            unet.enable_adapters()

    return ctx()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lcm", default=str(REPO / "results/models/sandbox/lcm"))
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=4, help="sampler steps K")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(REPO / "results/benchmarks/adapter_switch.json"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    from bench_rocm_step import rocm_step_setup

    from rocm_rlhf.infra.utils import write_json
    from rocm_rlhf.samplers import consistency
    from rocm_rlhf.training.rocm import ROCM

    pipe, params, ctx, source, tmp = rocm_step_setup(args.lcm, args.batch, args.steps, lr=0.0)  # a fixed state
    unet = pipe.unet
    ours = consistency.adapter_disabled
    methods = {"beta_0.1": ROCM(divergence="kl", beta=0.1), "beta_0": ROCM(divergence="none", beta=0.0)}
    switches = {"diffusers": diffusers_switch, "adapter_layers": ours}

    def use(switch):
        consistency.adapter_disabled = switches[switch]

    def time_pairs(switch, n=200):
        f = switches[switch]
        t0 = time.perf_counter()
        for _ in range(n):
            with f(unet):
                pass
        return (time.perf_counter() - t0) / n

    def grads_of(switch, method):
        """Loss and gradients of one step's objective from the fixed state (lr 0), with ``switch``."""
        use(switch)
        captured = {}
        real_update = ctx.update

        def capture(loss):
            captured["loss"] = float(loss.detach())
            captured["grads"] = [g.clone() for g in torch.autograd.grad(loss, params)]

        ctx.update = capture
        try:
            method.train_step(ctx, 1)
        finally:
            ctx.update = real_update
        return captured

    same = {}
    for k, m in methods.items():
        a, b = grads_of("diffusers", m), grads_of("adapter_layers", m)
        same[k] = {"loss_equal": a["loss"] == b["loss"],
                   "gradients_bit_identical": all(torch.equal(x, y) for x, y in zip(a["grads"], b["grads"]))}

    def time_step(switch, method, i):
        use(switch)
        t0 = time.perf_counter()
        method.train_step(ctx, i)
        return time.perf_counter() - t0

    for i in range(2):  # warm-up
        for m in methods.values():
            for s in switches:
                time_step(s, m, i + 1)
    pairs = {s: [] for s in switches}
    steps = {k: {s: [] for s in switches} for k in methods}
    for i in range(args.repeats):  # interleaved, so both see the same machine state
        for s in switches:
            pairs[s].append(time_pairs(s))
        for k, m in methods.items():
            for s in switches:
                steps[k][s].append(time_step(s, m, i + 3))
    use("adapter_layers")
    consistency.adapter_disabled = ours
    med = statistics.median
    res = {
        "benchmark": "adapter_switch",
        "model": source,
        "batch": args.batch,
        "sampler_steps": args.steps,
        "threads": args.threads,
        "repeats": args.repeats,
        "adapter_layers": len(consistency.adapter_layers(unet)),
        "switch_pair_ms_median": {s: 1e3 * med(v) for s, v in pairs.items()},
        "step_s_median": {k: {s: med(v) for s, v in d.items()} for k, d in steps.items()},
        "step_ratio_new_over_old": {k: med(d["adapter_layers"]) / med(d["diffusers"]) for k, d in steps.items()},
        "same_result": same,
        "machine": f"{platform.machine()} python {platform.python_version()} torch {torch.__version__}",
    }
    write_json(args.out, res)  # atomic, creating the folder
    print(json.dumps(res, indent=2))
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
