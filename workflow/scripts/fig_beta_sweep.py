from rocm_rlhf.infra.jobs import run_stage
from rocm_rlhf.pipeline.report import fig_beta_sweep

run_stage(snakemake, fig_beta_sweep)  # noqa: F821
