from rocm_rlhf.infra.jobs import run_stage
from rocm_rlhf.pipeline.report import table1

run_stage(snakemake, table1)  # noqa: F821
