from rocm_rlhf.infra.jobs import run_stage
from rocm_rlhf.pipeline.report import fig_training_curves

run_stage(snakemake, fig_training_curves)  # noqa: F821
