from rocm_rlhf.infra.jobs import run_stage

run_stage(snakemake, "rocm_rlhf.stages:stage_models")  # noqa: F821
