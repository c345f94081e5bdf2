from rocm_rlhf.infra.jobs import run_stage
from rocm_rlhf.pipeline.evaluate import sample_eval

run_stage(snakemake, sample_eval)  # noqa: F821
