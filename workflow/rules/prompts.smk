rule prepare_prompts:
    input:
        tiny_hub=tiny_hub_input(),
        staged=staged_input(),  # hub setting: the Pick-a-Pic captions after stage_models
    output:
        train=f"{RES}/prompts/train.csv",
        eval=f"{RES}/prompts/eval.csv",
        val=f"{RES}/prompts/val.csv",
    log:
        f"{LOG}/prepare_prompts.log",
    conda:
        CONDA_ENVS["torch"]
    params:
        config_digest=stage_digest(pipeline.prompts.prepare_prompts),  # reruns it when a config value its stage reads changes
    script:
        "../scripts/prepare_prompts.py"
