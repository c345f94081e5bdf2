from rocm_rlhf.jobs import run_stage

run_stage(snakemake, "rocm_rlhf.stages:stage_models")  # noqa: F821
