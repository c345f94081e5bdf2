# Paired samples on the held-out prompts for every run and the base model, then per-image scores; once per split:
# val (beta is chosen on it) and test (the tables and figures report on it), common.smk's SPLITS.


rule sample_eval:
    input:
        unpack(sample_eval_inputs),
    output:
        images="results/samples/{split}/{run}/images.npz",
        grid=report(
            "results/samples/{split}/{run}/grid.png",
            caption="../report/samples.rst",
            category="Samples",
            subcategory="{split}",
            labels={"split": "{split}", "run": "{run}"},
        ),
    log:
        "logs/sample_eval/{split}/{run}.log",
    benchmark:
        "results/benchmarks/sample_eval/{split}/{run}.tsv"
    wildcard_constraints:
        split="|".join(SPLITS),
        run=runs.RUN_PATTERN,
    conda:
        "../../envs/torch.yaml"
    resources:
        gpu=1,
    params:
        config_digest=stage_digest(pipeline.evaluate.sample_eval),  # reruns it when a config value its stage reads changes
        model_id=model_id_param,
    script:
        "../scripts/sample_eval.py"


rule evaluate:
    input:
        images="results/samples/{split}/{run}/images.npz",
        rewards=[
            reward_input(m) for m in config["evaluation"]["metrics"] if reward_input(m)
        ],
        tiny_hub=tiny_hub_input(),
    output:
        "results/scores/{split}/{run}.csv",
    log:
        "logs/evaluate/{split}/{run}.log",
    benchmark:
        "results/benchmarks/evaluate/{split}/{run}.tsv"
    wildcard_constraints:
        split="|".join(SPLITS),
        run=runs.RUN_PATTERN,
    conda:
        "../../envs/torch.yaml"
    resources:
        gpu=1,
    params:
        config_digest=stage_digest(pipeline.evaluate.evaluate),  # reruns it when a config value its stage reads changes
    script:
        "../scripts/evaluate.py"
