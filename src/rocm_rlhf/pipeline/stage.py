"""Stage of workflow/rules/stage.smk: download every model, reward checkpoint and dataset the config names into the
Hugging Face cache (hub setting), so that jobs run offline."""

from __future__ import annotations

from ..infra.jobs import stage
from ..infra.utils import write_json


@stage(reads=("setting", "model", "rewards", "train.reward", "evaluation.metrics", "prompts"))
def stage_models(job) -> None:
    from ..infra.staging import stage as download

    write_json(job.output[0], download(job.config))
