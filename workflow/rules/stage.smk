# Staging (hub setting): download every model, reward checkpoint and dataset the config names into the Hugging Face
# cache, once, on a machine with network access (a local rule). Jobs then run offline (HF_HUB_OFFLINE=1). Every job
# that loads a hub model or dataset depends on its record, so `all` stages first. Then the device preflight.


rule stage_models:
    output:
        f"{RES}/staged.json",
    log:
        f"{LOG}/stage_models.log",
    conda:
        CONDA_ENVS["torch"]
    params:
        config_digest=stage_digest(pipeline.stage.stage_models),  # reruns it when a config value its stage reads changes
    script:
        "../scripts/stage_models.py"


rule check_device:
    output:
        f"{RES}/device.json",
    log:
        f"{LOG}/check_device.log",
    # before any GPU job, in the jobs' own environment and (under Slurm) on a GPU node: a config asking for CUDA fails
    # here, at once, where the jobs' torch is a CPU build or sees no device. Checked once per results folder: the jobs
    # take its output as ancient(), so neither rerunning it nor its digest reruns them.
    priority: 100
    conda:
        CONDA_ENVS["torch"]
    resources:
        gpu=1,
    params:
        config_digest=stage_digest(pipeline.stage.check_device),  # reruns it when a config value its stage reads changes
    script:
        "../scripts/check_device.py"
