from rocm_rlhf.infra.jobs import run_stage
from rocm_rlhf.pipeline.report import choose_beta

run_stage(snakemake, choose_beta)  # noqa: F821
