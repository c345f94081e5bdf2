"""Stages of workflow/rules/evaluate.smk: paired samples of a run on the prompts of each split (val: beta is chosen on
them; test: results/prompts/eval.csv, reported on), and their scores. One job does every split of a run, loading its
model or its scorers once (``prompts_<split>``, ``images_<split>`` ... name a split's files)."""

from __future__ import annotations

from .. import runs
from ..infra.jobs import stage
from .common import SANDBOX_JUDGE_KEYS, gpu_slot, parent_dir, path, preflight, sampler_keys, sampler_spec


def sample_reads(wildcards) -> tuple[str, ...]:
    """The model, the evaluation's images per prompt and the run's own sampler (:func:`.common.sampler_keys`)."""
    keys = ("setting", "device", "model", "evaluation.images_per_prompt", "evaluation.batch_size")
    return keys + sampler_keys(runs.parse_run(wildcards.run))


@stage(reads=sample_reads)
def sample_eval(job) -> None:
    """Images of one run (or the base model) on each split's prompts, with paired noise per (prompt, sample seed):
    results/samples/<split>/<run>/."""
    preflight(job.config, generators=["lcm", "diffusion"], metrics=[], reward=False)
    with gpu_slot(job.config):
        _sample_eval(job)


def _sample_eval(job) -> None:
    from ..evaluation import eval_units, generate_units, save_samples
    from ..infra.utils import pick_device
    from ..models import DTYPES, load_pipeline
    from ..prompts import read_prompts

    cfg, run = job.config, runs.parse_run(job.wildcards.run)
    device = pick_device(cfg["device"])
    pipe = load_pipeline(run.generator, job.params.model_id, dtype=DTYPES[cfg["model"]["dtype"]], device=device)
    if path(job.input, "adapter"):
        pipe.load_lora_weights(path(job.input, "adapter"))  # the standard diffusers call a user makes
    sampler = sampler_spec(cfg, run)  # the method's own sampler, as in its training
    for split in runs.SPLITS:
        units = eval_units(read_prompts(getattr(job.input, f"prompts_{split}")), cfg["evaluation"]["images_per_prompt"])
        images = generate_units(pipe, units, sampler, batch_size=cfg["evaluation"]["batch_size"])
        save_samples(images.float().cpu(), units, getattr(job.output, f"images_{split}"),
                     getattr(job.output, f"grid_{split}"))
        print(f"generated {len(units)} {split} images on {device}")


@stage(reads=("setting", "device", "evaluation.metrics", "evaluation.batch_size", "rewards", *SANDBOX_JUDGE_KEYS))
def evaluate(job) -> None:
    """Every configured metric on every image of one run, per split: results/scores/<split>/<run>.csv (long format,
    the score table's columns)."""
    preflight(job.config, generators=[], reward=False)
    with gpu_slot(job.config):
        _evaluate(job)


def _evaluate(job) -> None:
    from ..analysis.scores import SCORE_COLUMNS
    from ..evaluation import load_samples, score_images
    from ..infra.utils import atomic_path, pick_device
    from ..rewards import load_scorer, scorer_kwargs

    cfg = job.config
    device = pick_device(cfg["device"])
    rewards_dir = parent_dir(job.input, "rewards")
    scorers = {m: load_scorer(m, **scorer_kwargs(m, cfg, rewards_dir)).to(device)
               for m in cfg["evaluation"]["metrics"]}
    identity = runs.parse_run(job.wildcards.run).identity()
    for split in runs.SPLITS:
        images, units = load_samples(getattr(job.input, f"images_{split}"))
        scores = score_images(images, units, scorers, batch_size=cfg["evaluation"]["batch_size"], device=device)
        scores = scores.assign(run_id=job.wildcards.run, **identity)[SCORE_COLUMNS]
        with atomic_path(getattr(job.output, f"scores_{split}")) as tmp:
            scores.to_csv(tmp, index=False)
        print(f"{split}:\n" + scores.groupby("metric")["value"].mean().to_string())
