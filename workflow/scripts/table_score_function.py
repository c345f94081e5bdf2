from rocm_rlhf.infra.jobs import run_stage
from rocm_rlhf.pipeline.report import table_score_function

run_stage(snakemake, table_score_function)  # noqa: F821
