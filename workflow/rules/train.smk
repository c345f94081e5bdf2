# Training runs: the ROCM grid (divergence x beta x seed, plus beta = 0). Each run resumes from its latest
# checkpoint in results/runs/<run>/checkpoints when restarted (after a crash or a preemption).


rule train_rocm:
    input:
        prompts=f"{RES}/prompts/train.csv",
        model=sandbox_input("lcm"),
        reward=training_reward_inputs(),
        val_prompts=PROMPT_FILES["val"],  # the held-out probe at the checkpoints (train.probe)
        probe_rewards=probe_reward_inputs(),
        tiny_hub=tiny_hub_input(),
        staged=staged_input(),  # hub setting: after stage_models
        device=device_input(),  # hub setting: after the device preflight
    output:
        run_json=f"{RES}/runs/{{run}}/run.json",
        log_csv=f"{RES}/runs/{{run}}/log.csv",
        curve_csv=f"{RES}/runs/{{run}}/curve.csv",
        adapter=directory(f"{RES}/runs/{{run}}/adapter"),
    log:
        f"{LOG}/train/{{run}}.log",
    benchmark:
        f"{RES}/benchmarks/train/{{run}}.tsv"
    wildcard_constraints:
        run=runs.ROCM_RUN_PATTERN,
    conda:
        CONDA_ENVS["torch"]
    threads: gpu_job_threads(config["train"]["num_processes"])  # per process x processes
    resources:
        gpu=config["train"]["num_processes"],  # one device per process (train.num_processes)
    params:
        config_digest=stage_digest(pipeline.train.train),  # reruns it when a config value its stage reads changes
        model_id=model_id_param,
    script:
        "../scripts/train.py"


rule train_baseline:
    input:
        prompts=f"{RES}/prompts/train.csv",
        model=generator_input,
        reward=training_reward_inputs(),
        val_prompts=PROMPT_FILES["val"],  # the held-out probe at the checkpoints (train.probe)
        probe_rewards=probe_reward_inputs(),
        tiny_hub=tiny_hub_input(),
        staged=staged_input(),  # hub setting: after stage_models
        device=device_input(),  # hub setting: after the device preflight
    output:
        run_json=f"{RES}/runs/{{run}}/run.json",
        log_csv=f"{RES}/runs/{{run}}/log.csv",
        curve_csv=f"{RES}/runs/{{run}}/curve.csv",
        adapter=directory(f"{RES}/runs/{{run}}/adapter"),
    log:
        f"{LOG}/train/{{run}}.log",
    benchmark:
        f"{RES}/benchmarks/train/{{run}}.tsv"
    wildcard_constraints:
        run=runs.BASELINE_RUN_PATTERN,
    # the baselines are the longest jobs: start them first so that they do not trail the ROCM grid
    priority: 1
    conda:
        CONDA_ENVS["torch"]
    threads: gpu_job_threads()
    resources:
        gpu=1,
    params:
        config_digest=stage_digest(pipeline.train.train),  # reruns it when a config value its stage reads changes
        model_id=model_id_param,
    script:
        "../scripts/train.py"
