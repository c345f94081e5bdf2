from rocm_rlhf.infra.jobs import run_stage
from rocm_rlhf.pipeline.report import collect_scores

run_stage(snakemake, collect_scores)  # noqa: F821
