# Paired samples on the held-out prompts for every run and the base model, then per-image scores, of every split in
# one job each (the model or the scorers load once): val (beta is chosen on it) and test (the tables and figures
# report on it), rocm_rlhf.runs.SPLITS.


rule sample_eval:
    input:
        unpack(sample_eval_inputs),
    output:
        **{
            f"images_{split}": f"{RES}/samples/{split}/{{run}}/images.npz"
            for split in SPLITS
        },
        **{
            f"grid_{split}": report(
                f"{RES}/samples/{split}/{{run}}/grid.png",
                caption="../report/samples.rst",
                category="Samples",
                subcategory=split,
                labels={"split": split, "run": "{run}"},
            )
            for split in SPLITS
        },
    log:
        f"{LOG}/sample_eval/{{run}}.log",
    benchmark:
        f"{RES}/benchmarks/sample_eval/{{run}}.tsv"
    wildcard_constraints:
        run=runs.RUN_PATTERN,
    conda:
        CONDA_ENVS["torch"]
    resources:
        gpu=1,
    params:
        config_digest=stage_digest(pipeline.evaluate.sample_eval),  # reruns it when a config value its stage reads changes
        model_id=model_id_param,
    script:
        "../scripts/sample_eval.py"


rule evaluate:
    input:
        **{
            f"images_{split}": f"{RES}/samples/{split}/{{run}}/images.npz"
            for split in SPLITS
        },
        rewards=[
            reward_input(m) for m in config["evaluation"]["metrics"] if reward_input(m)
        ],
        tiny_hub=tiny_hub_input(),
        staged=staged_input(),  # hub setting: after stage_models
        device=device_input(),  # hub setting: after the device preflight
    output:
        **{f"scores_{split}": f"{RES}/scores/{split}/{{run}}.csv" for split in SPLITS},
    log:
        f"{LOG}/evaluate/{{run}}.log",
    benchmark:
        f"{RES}/benchmarks/evaluate/{{run}}.tsv"
    wildcard_constraints:
        run=runs.RUN_PATTERN,
    conda:
        CONDA_ENVS["torch"]
    resources:
        gpu=1,
    params:
        config_digest=stage_digest(pipeline.evaluate.evaluate),  # reruns it when a config value its stage reads changes
    script:
        "../scripts/evaluate.py"
