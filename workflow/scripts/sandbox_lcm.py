from rocm_rlhf.infra.jobs import run_stage
from rocm_rlhf.pipeline.sandbox import sandbox_lcm

run_stage(snakemake, sandbox_lcm)  # noqa: F821
