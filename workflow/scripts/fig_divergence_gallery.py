from rocm_rlhf.infra.jobs import run_stage
from rocm_rlhf.pipeline.report import fig_divergence_gallery

run_stage(snakemake, fig_divergence_gallery)  # noqa: F821
