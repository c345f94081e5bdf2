from rocm_rlhf.infra.jobs import run_stage
from rocm_rlhf.pipeline.report import stats

run_stage(snakemake, stats)  # noqa: F821
