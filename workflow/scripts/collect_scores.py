from rocm_rlhf.jobs import run_stage

run_stage(snakemake, "rocm_rlhf.stages:collect_scores")  # noqa: F821
