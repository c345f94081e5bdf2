from rocm_rlhf.infra.jobs import run_stage

run_stage(snakemake, "rocm_rlhf.stages:sandbox_quality")  # noqa: F821
