from rocm_rlhf.infra.jobs import run_stage
from rocm_rlhf.pipeline.stage import check_device

run_stage(snakemake, check_device)  # noqa: F821
