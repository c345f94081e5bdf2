from rocm_rlhf.infra.jobs import run_stage
from rocm_rlhf.pipeline.study import build_study

run_stage(snakemake, build_study)  # noqa: F821
