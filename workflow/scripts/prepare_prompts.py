from rocm_rlhf.infra.jobs import run_stage
from rocm_rlhf.pipeline.prompts import prepare_prompts

run_stage(snakemake, prepare_prompts)  # noqa: F821
