from rocm_rlhf.infra.jobs import run_stage
from rocm_rlhf.pipeline.sandbox import sandbox_proxy

run_stage(snakemake, sandbox_proxy)  # noqa: F821
