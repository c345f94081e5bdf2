"""Stage of workflow/rules/prompts.smk: the training and evaluation prompts."""

from __future__ import annotations

from ..infra.jobs import stage
from .common import world


@stage(reads=("setting", "seed", "prompts", "sandbox.image_size", "sandbox.jitter"))
def prepare_prompts(job) -> None:
    from ..prompts import pickapic_prompts, sandbox_prompts, write_prompts

    cfg, p = job.config, job.config["prompts"]
    if p["source"] == "sandbox":
        train, evals = sandbox_prompts(world(cfg), p["n_train"], p["n_eval"], p["heldout_pairs"], cfg["seed"])
    else:
        pp = p["pickapic"]
        kw = dict(min_words=pp["min_words"], max_chars=pp["max_chars"])
        train = pickapic_prompts(pp["dataset"], p["n_train"], cfg["seed"], split=pp["split"], **kw)
        evals = pickapic_prompts(pp["dataset"], p["n_eval"], cfg["seed"], split=pp["eval_split"], **kw)
        evals = evals.assign(split="eval")
    write_prompts(train, job.output.train)
    write_prompts(evals, job.output.eval)
    print(f"wrote {len(train)} train and {len(evals)} eval prompts")
