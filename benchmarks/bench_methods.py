"""ROCM against RLCM and DDPO on the sandbox, side by side in one run: seconds per step, reward queries per second,
and the training reward reached per wall-clock second, at the same reward-query budget.

    python benchmarks/bench_methods.py [--sandbox results/models/sandbox] [--queries 480] [--batch 8]
        [--methods rocm-b0 rocm rlcm ddpo] [--log-prob-batch none]

Methods: ``rocm-b0`` is ROCM at beta = 0 (the like-for-like comparison with RLCM, which is unregularised),
``rocm`` is ROCM with KL at beta = 0.1, and ``rlcm``, ``ddpo``, ``d3po``, ``dpok`` the baselines.
``--log-prob-batch`` sets the baselines' ``log_prob_batch`` (latents per UNet call when they recompute stored sampler
steps, rocm_rlhf.training.ppo.log_prob_chunks: an integer, or ``none`` for all the steps of an update in one call);
without it, the config's value (the method's default where the config has none).

Needs the sandbox models (`snakemake --cores 2 results/models/sandbox/quality.json`). The methods run one after the
other, single-threaded, with the config defaults of config/config.yaml. Results: results/benchmarks/methods.json
(and the per-step logs under results/benchmarks/methods/).
"""

from __future__ import annotations

import argparse
import platform
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

from rocm_rlhf import runs  # noqa: E402  (torch-free: --help stays fast)


def sandbox_train_run(cfg: dict, method: str, run_id: str, run_dir: Path, sandbox: Path, prompts: list[str], **kw):
    """``train_run`` of the catalogue's ``method`` at seed 0 in a fresh ``run_dir``, on the sandbox model it
    fine-tunes (the diffusion teacher or the LCM), rewarded by the sandbox's ``proxy_pick``; ``kw``: the method's
    own arguments (ROCM: divergence, beta)."""
    from rocm_rlhf.training.run import train_run

    shutil.rmtree(run_dir, ignore_errors=True)
    model = sandbox / ("teacher" if runs.generator(method) == "diffusion" else "lcm")
    return train_run(cfg, method=method, run_id=run_id, seed=0, run_dir=run_dir, model_id=str(model),
                     reward_name="proxy_pick", reward_kwargs={"model_id": str(sandbox / "rewards/proxy_pick")},
                     prompts=prompts, **kw)


def _log_prob_batch(text: str):
    """``--log-prob-batch``: a positive integer, ``none`` (None) or ``config``."""
    if text.lower() in ("none", "null"):
        return None
    if text == "config":
        return text
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"--log-prob-batch must be a positive integer or 'none', got {text}")
    return value


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sandbox", default=str(REPO / "results/models/sandbox"))
    ap.add_argument("--prompts", default=str(REPO / "results/prompts/train.csv"))
    ap.add_argument("--queries", type=int, default=480)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--methods", nargs="+", default=["rocm-b0", "rocm", "rlcm", "ddpo"],
                    choices=["rocm-b0", *runs.METHODS])
    ap.add_argument("--out", default=str(REPO / "results/benchmarks/methods.json"))
    ap.add_argument("--log-prob-batch", type=_log_prob_batch, default="config",
                    help="the baselines' log_prob_batch: an integer or 'none'; default: the config's")
    args = ap.parse_args(argv)

    import pandas as pd
    import torch

    from rocm_rlhf.infra.config import load_config
    from rocm_rlhf.prompts import read_prompts

    torch.set_num_threads(1)
    sbx = Path(args.sandbox)
    steps = args.queries // args.batch
    cfg = load_config(REPO / "config/config.yaml", overrides={
        "device": "cpu", "train": {"steps": steps, "batch_size": args.batch, "checkpoint_every": 10**6},
        "baselines": {"reward_queries": args.queries}})
    prompts = read_prompts(args.prompts)["prompt"].tolist()
    work = Path(args.out).with_suffix("")
    res = {"benchmark": "methods", "reward": "proxy_pick", "reward_queries": args.queries, "batch": args.batch,
           "machine": f"{platform.machine()} python {platform.python_version()} torch {torch.__version__}",
           "log_prob_batch": args.log_prob_batch, "methods": {}}
    for method in args.methods:
        run_dir = work / method
        name = method.split("-")[0]
        kw = {"rocm": {"divergence": "kl", "beta": 0.1}, "rocm-b0": {"divergence": "none", "beta": 0.0}}.get(method, {})
        if name in runs.BASELINES and args.log_prob_batch != "config":
            kw = {"log_prob_batch": args.log_prob_batch}
        t0 = time.perf_counter()
        sandbox_train_run(cfg, name, method, run_dir, sbx, prompts, **kw)
        total = time.perf_counter() - t0
        log = pd.read_csv(run_dir / "log.csv")
        first = log["reward_mean"].head(3).mean()
        last = log["reward_mean"].tail(3).mean()
        res["methods"][method] = {
            "steps": int(len(log)),
            "reward_queries": int(log["reward_queries"].iloc[-1]),
            "seconds_per_step": float(log["wall_s"].iloc[-1] / len(log)),
            "reward_queries_per_s": float(log["reward_queries"].iloc[-1] / log["wall_s"].iloc[-1]),
            "train_wall_s": float(log["wall_s"].iloc[-1]),
            "total_wall_s_with_loading": total,
            "reward_first3": float(first),
            "reward_last3": float(last),
            "reward_gain_per_s": float((last - first) / log["wall_s"].iloc[-1]),
        }
        print(method, res["methods"][method], flush=True)
    from rocm_rlhf.infra.utils import write_json

    write_json(args.out, res)  # atomic, creating the folder
    return 0


if __name__ == "__main__":
    sys.exit(main())
