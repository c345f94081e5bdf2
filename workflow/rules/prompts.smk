rule prepare_prompts:
    output:
        train="results/prompts/train.csv",
        eval="results/prompts/eval.csv",
    conda:
        "../../envs/torch.yaml"
    log:
        "logs/prepare_prompts.log",
    script:
        "../scripts/prepare_prompts.py"
