from rocm_rlhf.infra.jobs import run_stage
from rocm_rlhf.pipeline.study import simulate_study

run_stage(snakemake, simulate_study)  # noqa: F821
