from rocm_rlhf.infra.jobs import run_stage
from rocm_rlhf.pipeline.sandbox import sandbox_quality

run_stage(snakemake, sandbox_quality)  # noqa: F821
