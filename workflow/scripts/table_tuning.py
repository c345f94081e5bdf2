from rocm_rlhf.infra.jobs import run_stage
from rocm_rlhf.pipeline.report import table_tuning

run_stage(snakemake, table_tuning)  # noqa: F821
