"""Stage of workflow/rules/prompts.smk: the training, evaluation (test) and validation prompts."""

from __future__ import annotations

from ..infra.jobs import stage
from .common import world


@stage(reads=("setting", "seed", "prompts", "sandbox.image_size", "sandbox.jitter"))
def prepare_prompts(job) -> None:
    """results/prompts/{train,eval,val}.csv: beta is chosen on the val prompts, the tables report on the eval ones."""
    from ..prompts import pickapic_prompts, pickapic_val_prompts, sandbox_splits, write_prompts

    cfg, p = job.config, job.config["prompts"]
    if p["source"] == "sandbox":
        splits = sandbox_splits(world(cfg), p["n_train"], p["n_eval"], p["n_val"], p["heldout_pairs"], cfg["seed"])
        train, evals, val = splits["train"], splits["eval"], splits["val"]
    else:
        pp = p["pickapic"]
        kw = dict(min_words=pp["min_words"], max_chars=pp["max_chars"])
        train = pickapic_prompts(pp["dataset"], p["n_train"], cfg["seed"], split=pp["split"], **kw)
        evals = pickapic_prompts(pp["dataset"], p["n_eval"], cfg["seed"], split=pp["eval_split"], **kw)
        evals = evals.assign(split="eval")
        val = pickapic_val_prompts(pp["dataset"], p["n_val"], cfg["seed"], pp["val_split"] or pp["eval_split"],
                                   exclude=[*train["prompt"], *evals["prompt"]], **kw)
    write_prompts(train, job.output.train)
    write_prompts(evals, job.output.eval)
    write_prompts(val, job.output.val)
    print(f"wrote {len(train)} train, {len(evals)} eval (test) and {len(val)} validation prompts")
