from rocm_rlhf.jobs import run_stage

run_stage(snakemake, "rocm_rlhf.stages:table_divergence_beta")  # noqa: F821
