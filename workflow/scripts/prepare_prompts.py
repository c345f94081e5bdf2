from rocm_rlhf.infra.jobs import run_stage

run_stage(snakemake, "rocm_rlhf.stages:prepare_prompts")  # noqa: F821
