# The paper's setting at toy size (config/paper-tiny.yaml): tiny random stand-ins of every hub model and of the
# Pick-a-Pic captions, each saved in its hub repository's layout under results/tiny_hub/<hub id> (rocm_rlhf.infra.tiny_hub).
# Jobs depend on it only when the config names a model or the prompts inside it (tiny_hub_input in common.smk).


rule tiny_hub:
    output:
        models=directory(TINY_HUB),
        manifest=f"{TINY_HUB}.json",
    log:
        f"{LOG}/tiny_hub.log",
    conda:
        CONDA_ENVS["torch"]
    params:
        config_digest=stage_digest(pipeline.tiny_hub.tiny_hub),  # reruns it when a config value its stage reads changes
    script:
        "../scripts/tiny_hub.py"
