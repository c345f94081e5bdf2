from rocm_rlhf.infra.jobs import run_stage
from rocm_rlhf.pipeline.report import fig_efficiency

run_stage(snakemake, fig_efficiency)  # noqa: F821
