from rocm_rlhf.infra.jobs import run_stage

run_stage(snakemake, "rocm_rlhf.stages:sandbox_proxy")  # noqa: F821
