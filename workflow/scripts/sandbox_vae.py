from rocm_rlhf.infra.jobs import run_stage
from rocm_rlhf.pipeline.sandbox import sandbox_vae

run_stage(snakemake, sandbox_vae)  # noqa: F821
