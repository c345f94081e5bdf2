"""Stage of workflow/rules/train.smk: one training run (ROCM with a fixed or an adaptive beta, one of its
score-function variants, or a baseline) from its run id, resuming from its latest checkpoint and scoring held-out validation prompts at its checkpoints
(:func:`probe_spec`); a ROCM run with ``train.num_processes`` N > 1 runs on N devices
(rocm_rlhf.training.distributed)."""

from __future__ import annotations

from pathlib import Path

from .. import runs
from ..infra.jobs import stage
from .common import SANDBOX_JUDGE_KEYS, figure_metrics, gpu_slot, parent_dir, preflight, sampler_keys, sampler_spec

READS = ("setting", "device", "model", "rewards", "train", "rocm.reduction", "rocm.final_step", *SANDBOX_JUDGE_KEYS,
         "figures.quality_metric", "figures.reward_metric", "evaluation.batch_size")
"""The config keys of every training run (the figures' metrics: what the held-out probe scores); a baseline also
reads its own block and the baselines' shared keys."""
BASELINE_READS = ("baselines.reward_queries", "baselines.eta", "baselines.log_divergence")


def train_reads(wildcards) -> tuple[str, ...]:
    run = runs.parse_run(wildcards.run)
    if run.method == "rocm":
        return (*READS, "rocm.adaptive") if run.adaptive else READS
    if run.method in runs.SCORE_FUNCTION_METHODS:
        return (*READS, "score_function.images_per_prompt")
    return (*READS, *BASELINE_READS, runs.method(run.method).config_block, *sampler_keys(run))


def probe_spec(cfg: dict, run: runs.Run, val_prompts: str, rewards_dir: str | None) -> dict | None:
    """The held-out probe of a run (rocm_rlhf.training.probe): the first ``train.probe.prompts`` validation prompts,
    ``train.probe.images_per_prompt`` images each through the run's own sampler, scored on the primary endpoint and
    the training reward (``figures.quality_metric``, ``figures.reward_metric``). None when ``prompts`` is 0."""
    from ..prompts import read_prompts
    from ..rewards import scorer_kwargs

    p = cfg["train"]["probe"]
    if not p["prompts"]:
        return None
    val = read_prompts(val_prompts).head(p["prompts"])
    reward, quality = figure_metrics(cfg)
    return {"prompts": val[["prompt_id", "prompt"]].values.tolist(), "images_per_prompt": p["images_per_prompt"],
            "sampler": sampler_spec(cfg, run), "batch_size": cfg["evaluation"]["batch_size"],
            "metrics": {m: scorer_kwargs(m, cfg, rewards_dir) for m in dict.fromkeys([quality, reward])}}


@stage(reads=train_reads)
def train(job) -> None:
    from ..infra.scorer_catalogue import pathwise_reward, reward_terms
    from ..prompts import read_prompts
    from ..rewards import scorer_kwargs
    from ..training import distributed
    from ..training.run import train_run

    cfg, run = job.config, runs.parse_run(job.wildcards.run)
    if run.lr:  # a tuning run (baselines.lr_factors): its learning rate is in its id
        cfg = {**cfg, "baselines": {**cfg["baselines"], run.method: {**cfg["baselines"][run.method], "lr": float(run.lr)}}}
    probing = bool(cfg["train"]["probe"]["prompts"])
    preflight(cfg, generators=[run.generator], metrics=list(figure_metrics(cfg)) if probing else [], reward=True)
    # a scorer's name, or a weighted sum of scorers; ROCM climbs train.surrogate where train.reward has no gradient
    spec = pathwise_reward(cfg) if run.method == "rocm" else cfg["train"]["reward"]
    rewards_dir = parent_dir(job.input, "reward")
    kwargs = (scorer_kwargs(spec, cfg, rewards_dir) if isinstance(spec, str) else
              {name: scorer_kwargs(name, cfg, rewards_dir) for name in reward_terms(spec)})
    method_kwargs = {}
    if run.method == "rocm":  # an adaptive beta (rocm.targets) starts at rocm.adaptive.init_beta instead of a beta
        method_kwargs = ({"divergence": run.divergence, "beta": 0.0, "target": float(run.target),
                          "adaptive": dict(cfg["rocm"]["adaptive"])} if run.adaptive else
                         {"divergence": run.divergence, "beta": run.beta_value})
    elif run.method in runs.SCORE_FUNCTION_METHODS:
        method_kwargs = {"divergence": run.divergence, "beta": run.beta_value}
        if run.method == "rocm_hybrid":
            surrogate = cfg["train"]["surrogate"]
            method_kwargs.update(surrogate=surrogate, surrogate_kwargs=scorer_kwargs(surrogate, cfg, rewards_dir))
    arguments = dict(config=cfg, method=run.method, run_id=run.id, seed=run.seed,
                     run_dir=str(Path(job.output.run_json).parent), model_id=job.params.model_id, reward_name=spec,
                     reward_kwargs=kwargs,
                     prompts=read_prompts(job.input.prompts)["prompt"].tolist(),
                     probe=probe_spec(cfg, run, job.input.val_prompts, parent_dir(job.input, "reward")),
                     **method_kwargs)
    n = distributed.processes_for(cfg, run.method)
    with gpu_slot(cfg, count=n):
        if n == 1:
            train_run(**arguments)
        else:  # the rule asks threads x n
            distributed.launch_run(n, arguments, threads=max(1, int(getattr(job, "threads", 1) or 1) // n))
