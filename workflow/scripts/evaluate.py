from rocm_rlhf.infra.jobs import run_stage
from rocm_rlhf.pipeline.evaluate import evaluate

run_stage(snakemake, evaluate)  # noqa: F821
