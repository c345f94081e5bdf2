"""How much could training several runs as one batched model save? The ceiling, measured per method.

Several runs of one method (seeds, betas, learning rates) trained in one process as one batched model, each with its
own LoRA adapter, would send R runs' samples through each UNet, VAE and reward call at once. On a CPU the per-call
cost of these small models is far from linear in the batch, so this is the lever the speed issue names for the
training jobs. Its ceiling is what one run costs when its batch is R times the default's, divided by R: the samples
of R runs in every call, with none of the per-run adapter arithmetic a real batched model would add (so the real
gain is at most this). This benchmark trains each method for a few steps at R = 1, 3 and 8 times the default
config's batch (ROCM and RLCM ``batch_size``, DDPO and DPOK ``batch_size``, D3PO ``prompts_per_step``; DPOK's
``policy_batch_size`` too, since its updates draw a fixed number of buffer minibatches), through the pipeline's own
``train_run``, single-threaded, and reports seconds per step and per run-step (seconds per step / R).

    python benchmarks/bench_batch_scaling.py [--sandbox results/models/sandbox] [--runs 1 3 8] [--steps 5]
        [--methods rocm rocm-b0 rlcm ddpo d3po dpok]

``rocm`` is ROCM at KL beta = 10 (the default's regularised runs), ``rocm-b0`` at beta = 0. The first two steps of
each are warm-up; the median of the others is reported. Needs the sandbox models (`snakemake --cores 2
results/models/sandbox/quality.json`). Results: results/benchmarks/batch_scaling.json (or --out).
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
METHODS = ("rocm", "rocm-b0", "rlcm", "ddpo", "d3po", "dpok")


def batch_overrides(method: str, runs: int, config: dict) -> dict:
    """The config overrides that put ``runs`` default batches through every call of ``method``."""
    b = config["baselines"]
    if method in ("rocm", "rocm-b0"):
        return {"train": {"batch_size": config["train"]["batch_size"] * runs}}
    if method == "d3po":
        return {"baselines": {"d3po": {"prompts_per_step": b["d3po"]["prompts_per_step"] * runs}}}
    block = {"batch_size": b[method]["batch_size"] * runs}
    if method == "dpok":
        from rocm_rlhf.training.dpok import DPOK

        block["policy_batch_size"] = b["dpok"].get("policy_batch_size", DPOK.policy_batch_size) * runs
    return {"baselines": {method: block}}


def merged(a: dict, b: dict) -> dict:
    """``a`` updated by ``b``, recursively (as config files merge)."""
    out = dict(a)
    for k, v in b.items():
        out[k] = merged(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sandbox", default=str(REPO / "results/models/sandbox"))
    ap.add_argument("--prompts", default=str(REPO / "results/prompts/train.csv"))
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    ap.add_argument("--runs", nargs="+", type=int, default=[1, 3, 8])
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--out", default=str(REPO / "results/benchmarks/batch_scaling.json"))
    args = ap.parse_args(argv)
    if args.steps < 3:
        ap.error("--steps must be at least 3 (two warm-up steps, then the timed ones)")

    import pandas as pd
    import torch

    from rocm_rlhf import runs as catalogue
    from rocm_rlhf.infra.config import load_config
    from rocm_rlhf.infra.utils import write_json
    from rocm_rlhf.prompts import read_prompts
    from rocm_rlhf.training.run import make_method, train_run

    torch.set_num_threads(1)
    sbx = Path(args.sandbox)
    base = load_config(REPO / "config/config.yaml", overrides={"device": "cpu"})
    prompts = read_prompts(args.prompts)["prompt"].tolist()
    work = Path(args.out).with_suffix("")
    res = {"benchmark": "batch_scaling", "steps": args.steps, "threads": 1,
           "machine": f"{platform.machine()} python {platform.python_version()} torch {torch.__version__}",
           "methods": {}}
    for method in args.methods:
        name = method.split("-")[0]
        model = sbx / ("teacher" if catalogue.generator(name) == "diffusion" else "lcm")
        kw = {"rocm": {"divergence": "kl", "beta": 10.0}, "rocm-b0": {"divergence": "none", "beta": 0.0}}.get(method, {})
        rows = {}
        for r in args.runs:
            over = merged({"device": "cpu", "train": {"steps": args.steps, "checkpoint_every": 10**6}},
                          batch_overrides(method, r, base))
            cfg = load_config(REPO / "config/config.yaml", overrides=over)
            per_step = make_method(name, cfg, **kw).queries_per_step() or cfg["train"]["batch_size"]
            cfg = load_config(REPO / "config/config.yaml",
                              overrides=merged(over, {"baselines": {"reward_queries": per_step * args.steps}}))
            run_dir = work / f"{method}-x{r}"
            shutil.rmtree(run_dir, ignore_errors=True)
            t0 = time.perf_counter()
            train_run(cfg, method=name, run_id=f"{method}-x{r}", seed=0, run_dir=run_dir, model_id=str(model),
                      reward_name="proxy_pick", reward_kwargs={"model_id": str(sbx / "rewards/proxy_pick")},
                      prompts=prompts, **kw)
            wall = pd.read_csv(run_dir / "log.csv")["wall_s"].tolist()
            step_s = statistics.median(b - a for a, b in zip(wall[1:], wall[2:]))
            rows[r] = {"queries_per_step": per_step, "s_per_step": step_s, "s_per_run_step": step_s / r,
                       "total_s": time.perf_counter() - t0}
            print(method, r, rows[r], flush=True)
        one = rows.get(1)
        for r, row in rows.items():
            row["per_run_step_vs_one_run"] = row["s_per_run_step"] / one["s_per_run_step"] if one else None
        res["methods"][method] = rows
    write_json(args.out, res)  # atomic, creating the folder
    print(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
