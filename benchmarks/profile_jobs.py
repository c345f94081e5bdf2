"""Where a job's time goes: a ROCM run, a DDPO run, a sampling job and a scoring job of the default sandbox config,
each in a fresh process: the interpreter's start and the imports every such job makes (wall clock), then the job
under cProfile split into model and scorer loading, UNet forward passes, backward passes and everything else (the
sampler's arithmetic, the VAE, the rewards, Python overhead). cProfile slows Python-heavy code, so read the profiled
parts as shares, not as seconds of an unprofiled run.

    python benchmarks/profile_jobs.py [--sandbox results/models/sandbox] [--prompts results/prompts] [--steps 30]

Needs the sandbox models (`snakemake --cores 2 results/models/sandbox/quality.json`) and the prompts. Each job runs
single-threaded, as the pipeline's jobs do. Results: results/benchmarks/profile_jobs.json (seconds per part and
the process's wall clock, from ``time`` before the first import to exit).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

CHILD = r'''
import cProfile, json, pstats, sys, time
t_start = float(sys.argv[1]); job = sys.argv[2]; sbx = sys.argv[3]; steps = int(sys.argv[4]); out = sys.argv[5]
prompts_dir = sys.argv[6]
import torch
torch.set_num_threads(1)
from diffusers import LatentConsistencyModelPipeline, StableDiffusionPipeline  # what the jobs' loading imports
from rocm_rlhf.infra.config import load_config
from rocm_rlhf.prompts import read_prompts
from rocm_rlhf.training import run as _run  # noqa: F401
from rocm_rlhf import evaluation as _evaluation  # noqa: F401
from rocm_rlhf.rewards import _import_providers
_import_providers()
t_imported = time.time()
pr = cProfile.Profile(); pr.enable()
cfg = load_config("config/config.yaml", overrides={"device": "cpu", "train": {"steps": steps,
                  "checkpoint_every": 10**6}, "baselines": {"reward_queries": steps * 8}})
if job in ("rocm", "ddpo"):
    from rocm_rlhf.training.run import train_run
    from rocm_rlhf.rewards import scorer_kwargs
    model = f"{sbx}/lcm" if job == "rocm" else f"{sbx}/teacher"
    kw = {"divergence": "kl", "beta": 10.0} if job == "rocm" else {}
    train_run(cfg, method=job, run_id=f"profile-{job}", seed=0, run_dir=f"{out}.{job}", model_id=model,
              reward_name="proxy_pick", reward_kwargs=scorer_kwargs("proxy_pick", cfg, f"{sbx}/rewards"),
              prompts=read_prompts(f"{prompts_dir}/train.csv")["prompt"].tolist(), **kw)
elif job == "sample_eval":
    from rocm_rlhf.evaluation import eval_units, generate_units
    from rocm_rlhf.models import load_pipeline
    pipe = load_pipeline("lcm", f"{sbx}/lcm", dtype=torch.float32, device="cpu")
    spec = {"generator": "lcm", "num_steps": cfg["model"]["num_steps"], "guidance_scale": cfg["model"]["guidance_scale"]}
    for split in ("val", "eval"):
        units = eval_units(read_prompts(f"{prompts_dir}/{split}.csv"), cfg["evaluation"]["images_per_prompt"])
        images = generate_units(pipe, units, spec, batch_size=cfg["evaluation"]["batch_size"])
    torch.save({"images": images, "units": units.to_dict("list")}, f"{out}.images.pt")
elif job == "evaluate":
    from rocm_rlhf.evaluation import score_images
    from rocm_rlhf.rewards import load_scorer, scorer_kwargs
    import pandas as pd
    blob = torch.load(f"{out}.images.pt", weights_only=False)
    units = pd.DataFrame(blob["units"])
    scorers = {m: load_scorer(m, **scorer_kwargs(m, cfg, f"{sbx}/rewards")) for m in cfg["evaluation"]["metrics"]}
    for _ in range(2):  # both splits
        score_images(blob["images"], units, scorers, batch_size=cfg["evaluation"]["batch_size"])
pr.disable()
st = pstats.Stats(pr).stats

def cum(pred):
    """Cumulative seconds of the outermost calls of the functions matching pred (no double counting of recursion)."""
    return sum(v[3] for (f, line, name), v in st.items() if pred(f, name))

def tot(pred):
    return sum(v[2] for (f, line, name), v in st.items() if pred(f, name))

res = {
    "wall_s": time.time() - t_start,
    "startup_imports_s": t_imported - t_start,
    "profiled_s": sum(v[2] for v in st.values()),
    "late_imports_s": cum(lambda f, n: n == "_find_and_load" and f == "<frozen importlib._bootstrap>"),
    "loading_s": cum(lambda f, n: (n in ("load_pipeline", "load_scorer") and "rocm_rlhf" in f)),
    "unet_forward_s": cum(lambda f, n: n == "forward" and f.endswith("unet_2d_condition.py")),
    "backward_s": tot(lambda f, n: "run_backward" in n),
}
json.dump(res, open(f"{out}.{job}.json", "w"))
'''


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sandbox", default=str(REPO / "results/models/sandbox"))
    ap.add_argument("--prompts", default=str(REPO / "results/prompts"))
    ap.add_argument("--steps", type=int, default=30, help="training steps of the ROCM and DDPO runs")
    ap.add_argument("--out", default=str(REPO / "results/benchmarks/profile_jobs.json"))
    args = ap.parse_args(argv)
    work = Path(args.out).with_suffix("")
    work.parent.mkdir(parents=True, exist_ok=True)
    results = {}
    for job in ("rocm", "ddpo", "sample_eval", "evaluate"):
        t0 = time.time()
        done = subprocess.run([sys.executable, "-c", CHILD, str(t0), job, args.sandbox, str(args.steps), str(work),
                               args.prompts], cwd=REPO, capture_output=True, text=True)
        if done.returncode:
            raise SystemExit(f"the {job} job failed:\n{done.stderr[-3000:]}")
        r = json.loads(Path(f"{work}.{job}.json").read_text())
        r["other_s"] = (r["profiled_s"] - r["late_imports_s"] - r["loading_s"] - r["unet_forward_s"]
                        - r["backward_s"])
        results[job] = {k: round(v, 2) for k, v in r.items()}
        print(job, results[job], flush=True)
    from rocm_rlhf.infra.utils import write_json

    write_json(args.out, {"benchmark": "profile_jobs", "steps": args.steps, "jobs": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
