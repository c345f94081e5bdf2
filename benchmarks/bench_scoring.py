"""Images scored per second per metric: batched (as the evaluate rule scores) against one image at a time (as the
reference scripts of PickScore, ImageReward and friends score), on the same machine and images.

    python benchmarks/bench_scoring.py [--sandbox results/models/sandbox] [--n 512] [--batch 64]

Uses the sandbox's proxy rewards and gold judge (built by the pipeline; random proxies of the same architecture if
the folder is missing). Results: results/benchmarks/scoring.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sandbox", default=str(REPO / "results/models/sandbox"))
    ap.add_argument("--n", type=int, default=512)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(REPO / "results/benchmarks/scoring.json"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    from rocm_rlhf.rewards import load_scorer
    from rocm_rlhf.rewards.sandbox import ProxyAestheticModel, ProxyPickModel
    from rocm_rlhf.sandbox.data import captioned_batch
    from rocm_rlhf.sandbox.captions import all_captions
    from rocm_rlhf.sandbox.render import World

    world = World()
    images, prompts, _ = captioned_batch(world, args.n, np.random.default_rng(0))
    rewards = Path(args.sandbox) / "rewards"
    tmp = None
    if not (rewards / "proxy_pick" / "config.json").exists():
        from rocm_rlhf.sandbox.models import train_tokenizer

        tmp = tempfile.TemporaryDirectory()
        rewards = Path(tmp.name)
        tok = train_tokenizer([c.text for c in all_captions()])
        ProxyPickModel(vocab_size=len(tok)).save_pretrained(rewards / "proxy_pick")
        tok.save_pretrained(rewards / "proxy_pick" / "tokenizer")
        ProxyAestheticModel().save_pretrained(rewards / "proxy_aesthetic")
    scorers = {
        "proxy_pick": load_scorer("proxy_pick", model_id=str(rewards / "proxy_pick")),
        "proxy_aesthetic": load_scorer("proxy_aesthetic", model_id=str(rewards / "proxy_aesthetic")),
        "gold": load_scorer("gold"),
    }
    res = {"benchmark": "scoring", "images": args.n, "batch": args.batch, "threads": args.threads,
           "proxies": "sandbox build" if tmp is None else "random weights, same architecture", "metrics": {},
           "machine": f"{platform.machine()} python {platform.python_version()} torch {torch.__version__}"}
    with torch.no_grad():
        for name, scorer in scorers.items():
            scorer(images[:2], prompts[:2])  # warm-up
            t0 = time.perf_counter()
            batched = torch.cat([scorer(images[i: i + args.batch], prompts[i: i + args.batch])
                                 for i in range(0, args.n, args.batch)])
            t_batched = time.perf_counter() - t0
            t0 = time.perf_counter()
            single = torch.cat([scorer(images[i: i + 1], prompts[i: i + 1]) for i in range(args.n)])
            t_single = time.perf_counter() - t0
            res["metrics"][name] = {
                "batched_images_per_s": args.n / t_batched,
                "single_images_per_s": args.n / t_single,
                "speedup": t_single / t_batched,
                "max_abs_difference": float((batched - single).abs().max()),
            }
    from rocm_rlhf.infra.utils import write_json

    write_json(args.out, res)  # atomic, creating the folder
    print(json.dumps(res, indent=2))
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
