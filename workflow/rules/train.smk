# Training runs: the ROCM grid (divergence x beta x seed, plus beta = 0). Each run resumes from its latest
# checkpoint in results/runs/<run>/checkpoints when restarted (after a crash or a preemption).


rule train_rocm:
    input:
        prompts="results/prompts/train.csv",
        model=sandbox_input("lcm"),
        reward=reward_input(config["train"]["reward"]),
        tiny_hub=tiny_hub_input(),
    output:
        run_json="results/runs/{run}/run.json",
        log_csv="results/runs/{run}/log.csv",
        adapter=directory("results/runs/{run}/adapter"),
    log:
        "logs/train/{run}.log",
    benchmark:
        "results/benchmarks/train/{run}.tsv"
    wildcard_constraints:
        run=runs.ROCM_RUN_PATTERN,
    conda:
        "../../envs/torch.yaml"
    threads: config["train"]["threads"] * config["train"]["num_processes"]  # per process x processes
    resources:
        gpu=config["train"]["num_processes"],  # one device per process (train.num_processes)
    params:
        # reruns it when these values change
        config_digest=config_params(
            "model", "rewards", "train", "rocm.reduction", "rocm.final_step"
        ),
        method="rocm",
        divergence=run_param("divergence"),
        beta=run_param("beta"),
        seed=run_param("seed"),
        model_id=model_id_param,
    script:
        "../scripts/train.py"


rule train_baseline:
    input:
        prompts="results/prompts/train.csv",
        model=generator_input,
        reward=reward_input(config["train"]["reward"]),
        tiny_hub=tiny_hub_input(),
    output:
        run_json="results/runs/{run}/run.json",
        log_csv="results/runs/{run}/log.csv",
        adapter=directory("results/runs/{run}/adapter"),
    log:
        "logs/train/{run}.log",
    benchmark:
        "results/benchmarks/train/{run}.tsv"
    wildcard_constraints:
        run=runs.BASELINE_RUN_PATTERN,
    # the baselines are the longest jobs: start them first so that they do not trail the ROCM grid
    priority: 1
    conda:
        "../../envs/torch.yaml"
    threads: config["train"]["threads"]
    resources:
        gpu=1,
    params:
        # reruns it when these values change (a method's own block: only that method's runs)
        config_digest=lambda wildcards: config_params(
            "model",
            "rewards",
            "train",
            "rocm.reduction",
            "rocm.final_step",
            "baselines.reward_queries",
            "baselines.eta",
            "baselines.log_divergence",
            f"baselines.{run_method(wildcards.run)}",
        ),
        method=run_param("method"),
        divergence="none",
        beta="nan",
        seed=run_param("seed"),
        model_id=model_id_param,
    script:
        "../scripts/train.py"
