from rocm_rlhf.infra.jobs import run_stage

run_stage(snakemake, "rocm_rlhf.stages:fig_divergence_gallery")  # noqa: F821
