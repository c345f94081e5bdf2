from rocm_rlhf.infra.jobs import run_stage

run_stage(snakemake, "rocm_rlhf.stages:table_divergence_beta")  # noqa: F821
