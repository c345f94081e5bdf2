from rocm_rlhf.infra.jobs import run_stage
from rocm_rlhf.pipeline.sandbox import sandbox_teacher

run_stage(snakemake, sandbox_teacher)  # noqa: F821
