from rocm_rlhf.infra.jobs import run_stage
from rocm_rlhf.pipeline.study import analyze_study

run_stage(snakemake, analyze_study)  # noqa: F821
