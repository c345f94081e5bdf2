"""The hybrid score-function method's two gradient parts at the start of training, apart: ROCM's pathwise gradient of
the surrogate and the score-function term on the reward minus the surrogate (rocm_rlhf.training.rocm_sf).

    python benchmarks/hybrid_gradient_norms.py [--sandbox results/nondiff/models/sandbox]
        [--prompts results/nondiff/prompts/train.csv] [--steps 10] [--beta 1]

The setting of config/nondiff.yaml: the sandbox LCM with a fresh LoRA adapter (rank 16, alpha 32; B = 0, so the policy
is the base model), batches of 8 images (2 prompts x 4), KL. Per training step (its own prompts and noise): the
pathwise part is the hybrid's gradient with a reward equal to its surrogate (the residual, and so the score-function
term, is zero); the whole gradient is the hybrid's with the judge's attribute fidelity as the reward; the
score-function term is their difference (the same draws, no clipping, learning rate 0). Results:
results/benchmarks/hybrid_gradient_norms.json. A measurement, not a test: the numbers depend on the sandbox models.
"""

from __future__ import annotations

import argparse
import platform
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sandbox", default=str(REPO / "results/nondiff/models/sandbox"))
    ap.add_argument("--prompts", default=str(REPO / "results/nondiff/prompts/train.csv"))
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--beta", type=float, default=1.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(REPO / "results/benchmarks/hybrid_gradient_norms.json"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    from rocm_rlhf.infra.config import load_config
    from rocm_rlhf.models import load_pipeline
    from rocm_rlhf.prompts import read_prompts
    from rocm_rlhf.rewards import load_scorer, scorer_kwargs
    from rocm_rlhf.training.lora import add_lora
    from rocm_rlhf.training.loop import Context, CountingScorer, TrainSettings
    from rocm_rlhf.training.rocm_sf import ROCMHybrid

    sandbox = Path(args.sandbox)
    if not (sandbox / "lcm").is_dir():
        raise SystemExit(f"no sandbox LCM in {sandbox}: run the nondiff overlay first (README, 'Beyond the paper: "
                         "rewards without gradients') or pass --sandbox")
    cfg = load_config(REPO / "config/config.yaml", REPO / "config/nondiff.yaml")
    rewards = sandbox / "rewards"
    pipe = load_pipeline("lcm", str(sandbox / "lcm"))
    lora = cfg["train"]["lora"]
    params = add_lora(pipe.unet, lora["rank"], lora["alpha"], lora["target_modules"], seed=0)
    reward = load_scorer(cfg["train"]["reward"], **scorer_kwargs(cfg["train"]["reward"], cfg, str(rewards)))
    surrogate = load_scorer(cfg["train"]["surrogate"], **scorer_kwargs(cfg["train"]["surrogate"], cfg, str(rewards)))
    prompts = read_prompts(args.prompts)["prompt"].tolist()
    settings = TrainSettings.from_config(cfg, 0)
    settings.grad_clip = 0.0

    def gradient(scorer, step: int) -> torch.Tensor:
        for p in params:
            p.grad = None
        ctx = Context(pipe=pipe, params=params, reward=CountingScorer(scorer), prompts=prompts, settings=settings,
                      device=torch.device("cpu"), optimizer=torch.optim.SGD(params, lr=0.0))
        ROCMHybrid.from_config(cfg, divergence=cfg["score_function"]["divergence"], beta=args.beta,
                               surrogate=surrogate).train_step(ctx, step)
        return torch.cat([p.grad.flatten() for p in params]).clone()

    rows = []
    for step in range(1, args.steps + 1):
        pathwise, whole = gradient(surrogate, step), gradient(reward, step)
        rows.append({"step": step, "pathwise": pathwise.norm().item(), "score_function": (whole - pathwise).norm().item(),
                     "whole": whole.norm().item()})
    norms = np.array([[r["pathwise"], r["score_function"], r["whole"]] for r in rows])
    med = np.median(norms, 0)
    out = {"machine": platform.machine(), "torch": torch.__version__, "threads": args.threads, "beta": args.beta,
           "batch": settings.batch_size, "images_per_prompt": cfg["score_function"]["images_per_prompt"],
           "median": {"pathwise": med[0], "score_function": med[1], "whole": med[2]},
           "ratio_score_function_to_pathwise": [r["score_function"] / r["pathwise"] for r in rows], "steps": rows}
    from rocm_rlhf.infra.utils import write_json

    write_json(args.out, out)  # atomic, creating the folder
    print(f"median over {args.steps} steps: pathwise {med[0]:.2f}, score-function term {med[1]:.2f}, whole "
          f"{med[2]:.2f}; score-function / pathwise per step: "
          f"{', '.join(f'{x:.1f}' for x in out['ratio_score_function_to_pathwise'])}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
