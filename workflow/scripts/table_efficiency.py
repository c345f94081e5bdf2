from rocm_rlhf.infra.jobs import run_stage
from rocm_rlhf.pipeline.report import table_efficiency

run_stage(snakemake, table_efficiency)  # noqa: F821
