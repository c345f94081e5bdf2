from rocm_rlhf.infra.jobs import run_stage
from rocm_rlhf.pipeline.report import choose_settings

run_stage(snakemake, choose_settings)  # noqa: F821
