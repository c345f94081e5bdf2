# Staging (hub setting): download every model, reward checkpoint and dataset the config names into the Hugging Face
# cache, once, on a machine with network access (a local rule). Jobs then run offline (HF_HUB_OFFLINE=1).


rule stage_models:
    output:
        f"{RES}/staged.json",
    log:
        f"{LOG}/stage_models.log",
    conda:
        "../../envs/torch.yaml"
    params:
        config_digest=stage_digest(pipeline.stage.stage_models),  # reruns it when a config value its stage reads changes
    script:
        "../scripts/stage_models.py"
