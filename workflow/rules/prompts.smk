rule prepare_prompts:
    input:
        tiny_hub=tiny_hub_input(),
    output:
        train="results/prompts/train.csv",
        eval="results/prompts/eval.csv",
        val="results/prompts/val.csv",
    log:
        "logs/prepare_prompts.log",
    conda:
        "../../envs/torch.yaml"
    params:
        config_digest=stage_digest(pipeline.prompts.prepare_prompts),  # reruns it when a config value its stage reads changes
    script:
        "../scripts/prepare_prompts.py"
