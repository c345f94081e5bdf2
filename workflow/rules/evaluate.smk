# Paired samples on the held-out prompts for every run and the base model, then per-image scores.


rule sample_eval:
    input:
        unpack(sample_eval_inputs),
    output:
        images="results/samples/{run}/images.npz",
        grid=report(
            "results/samples/{run}/grid.png",
            caption="../report/samples.rst",
            category="Samples",
            labels={"run": "{run}"},
        ),
    log:
        "logs/sample_eval/{run}.log",
    benchmark:
        "results/benchmarks/sample_eval/{run}.tsv"
    conda:
        "../../envs/torch.yaml"
    resources:
        gpu=1,
    params:
        # reruns it when these values change
        config_digest=lambda wildcards: config_params(
            "model",
            "evaluation.images_per_prompt",
            *sampler_keys(wildcards.run),
        ),
        method=lambda wildcards: run_method(wildcards.run),
        model_id=model_id_param,
    script:
        "../scripts/sample_eval.py"


rule evaluate:
    input:
        images="results/samples/{run}/images.npz",
        rewards=[
            reward_input(m) for m in config["evaluation"]["metrics"] if reward_input(m)
        ],
        tiny_hub=tiny_hub_input(),
    output:
        "results/scores/{run}.csv",
    log:
        "logs/evaluate/{run}.log",
    benchmark:
        "results/benchmarks/evaluate/{run}.tsv"
    conda:
        "../../envs/torch.yaml"
    resources:
        gpu=1,
    params:
        # reruns it when these values change
        config_digest=config_params(
            "setting",
            "evaluation.metrics",
            "rewards",
            "sandbox.image_size",
            "sandbox.jitter",
            "sandbox.judge_tau",
        ),
    script:
        "../scripts/evaluate.py"
