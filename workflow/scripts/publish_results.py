from rocm_rlhf.infra.jobs import run_stage
from rocm_rlhf.pipeline.report import publish_results

run_stage(snakemake, publish_results)  # noqa: F821
