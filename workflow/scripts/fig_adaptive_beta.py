from rocm_rlhf.infra.jobs import run_stage
from rocm_rlhf.pipeline.report import fig_adaptive_beta

run_stage(snakemake, fig_adaptive_beta)  # noqa: F821
