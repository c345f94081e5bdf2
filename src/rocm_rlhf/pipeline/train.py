"""Stage of workflow/rules/train.smk: one training run (ROCM or a baseline) from its run id, resuming from its latest
checkpoint; a ROCM run with ``train.num_processes`` N > 1 runs on N devices (rocm_rlhf.training.distributed)."""

from __future__ import annotations

from pathlib import Path

from .. import runs
from ..infra.jobs import stage
from .common import SANDBOX_JUDGE_KEYS, gpu_slot, parent_dir, preflight

READS = ("setting", "device", "model", "rewards", "train", "rocm.reduction", "rocm.final_step", *SANDBOX_JUDGE_KEYS)
"""The config keys of every training run; a baseline also reads its own block and the baselines' shared keys."""
BASELINE_READS = ("baselines.reward_queries", "baselines.eta", "baselines.log_divergence")


def train_reads(wildcards) -> tuple[str, ...]:
    method = runs.parse_run(wildcards.run).method
    if method == "rocm":
        return READS
    return (*READS, *BASELINE_READS, runs.method(method).config_block)


@stage(reads=train_reads)
def train(job) -> None:
    from ..prompts import read_prompts
    from ..rewards import scorer_kwargs
    from ..training import distributed
    from ..training.run import train_run

    cfg, run = job.config, runs.parse_run(job.wildcards.run)
    preflight(cfg, generators=[run.generator], metrics=[], reward=True)
    name = cfg["train"]["reward"]
    method_kwargs = {"divergence": run.divergence, "beta": run.beta_value} if run.method == "rocm" else {}
    arguments = dict(config=cfg, method=run.method, run_id=run.id, seed=run.seed,
                     run_dir=str(Path(job.output.run_json).parent), model_id=job.params.model_id, reward_name=name,
                     reward_kwargs=scorer_kwargs(name, cfg, parent_dir(job.input, "reward")),
                     prompts=read_prompts(job.input.prompts)["prompt"].tolist(), **method_kwargs)
    n = distributed.processes_for(cfg, run.method)
    with gpu_slot(cfg, count=n):
        if n == 1:
            train_run(**arguments)
        else:  # the rule asks threads x n
            distributed.launch_run(n, arguments, threads=max(1, int(getattr(job, "threads", 1) or 1) // n))
