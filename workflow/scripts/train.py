from rocm_rlhf.infra.jobs import run_stage
from rocm_rlhf.pipeline.train import train

run_stage(snakemake, train)  # noqa: F821
