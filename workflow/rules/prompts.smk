rule prepare_prompts:
    input:
        tiny_hub=tiny_hub_input(),
    output:
        train="results/prompts/train.csv",
        eval="results/prompts/eval.csv",
    log:
        "logs/prepare_prompts.log",
    conda:
        "../../envs/torch.yaml"
    params:
        # reruns it when these values change
        config_digest=config_params(
            "setting", "seed", "prompts", "sandbox.image_size", "sandbox.jitter"
        ),
    script:
        "../scripts/prepare_prompts.py"
