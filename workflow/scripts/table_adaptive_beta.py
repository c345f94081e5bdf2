from rocm_rlhf.infra.jobs import run_stage
from rocm_rlhf.pipeline.report import table_adaptive_beta

run_stage(snakemake, table_adaptive_beta)  # noqa: F821
