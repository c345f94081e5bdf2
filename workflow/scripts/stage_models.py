from rocm_rlhf.infra.jobs import run_stage
from rocm_rlhf.pipeline.stage import stage_models

run_stage(snakemake, stage_models)  # noqa: F821
