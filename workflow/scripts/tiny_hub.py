from rocm_rlhf.infra.jobs import run_stage
from rocm_rlhf.pipeline.tiny_hub import tiny_hub

run_stage(snakemake, tiny_hub)  # noqa: F821
