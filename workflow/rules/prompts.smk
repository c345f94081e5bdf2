rule prepare_prompts:
    output:
        train="results/prompts/train.csv",
        eval="results/prompts/eval.csv",
    log:
        "logs/prepare_prompts.log",
    conda:
        "../../envs/torch.yaml"
    script:
        "../scripts/prepare_prompts.py"
