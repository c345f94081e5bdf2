"""Stages of workflow/rules/stage.smk: download every model, reward checkpoint and dataset the config names into the
Hugging Face cache (hub setting), so that jobs run offline; check, before any GPU job, that the jobs' environment gives
the device the config asks for."""

from __future__ import annotations

from ..infra.jobs import stage
from ..infra.utils import write_json


@stage(reads=("setting", "model", "rewards", "train.reward", "evaluation.metrics", "prompts"))
def stage_models(job) -> None:
    from ..infra.staging import stage as download

    write_json(job.output[0], download(job.config))


@stage(reads=("device", "train.mixed_precision", "model.dtype"))
def check_device(job) -> None:
    from ..infra.devices import check_device as check

    cfg = job.config
    bf16 = cfg["train"]["mixed_precision"] == "bf16" or cfg["model"]["dtype"] == "bfloat16"
    write_json(job.output[0], check(cfg["device"], bf16=bf16))
