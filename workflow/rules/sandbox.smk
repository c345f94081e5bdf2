# The offline sandbox world's models (setting: sandbox). Each stage reads the previous one with from_pretrained.


rule sandbox_vae:
    output:
        model=directory(f"{SBX}/vae"),
        stats=f"{SBX}/vae.json",
    log:
        f"{LOG}/sandbox/vae.log",
    benchmark:
        f"{RES}/benchmarks/sandbox/vae.tsv"
    conda:
        CONDA_ENVS["torch"]
    # nothing else can run beside it (every later stage needs it); 2 threads train it 1.2-1.3x faster than 1 on
    # 2 cores (the LCM distillation gains nothing, so it keeps 1). Capped at --cores.
    threads: 2
    params:
        config_digest=stage_digest(pipeline.sandbox.sandbox_vae),  # reruns it when a config value its stage reads changes
    script:
        "../scripts/sandbox_vae.py"


rule sandbox_teacher:
    input:
        vae=f"{SBX}/vae",
    output:
        model=directory(f"{SBX}/teacher"),
        stats=f"{SBX}/teacher.json",
    log:
        f"{LOG}/sandbox/teacher.log",
    benchmark:
        f"{RES}/benchmarks/sandbox/teacher.tsv"
    conda:
        CONDA_ENVS["torch"]
    # nothing else can run beside it (every later stage needs it); 2 threads train it 1.2-1.3x faster than 1 on
    # 2 cores (the LCM distillation gains nothing, so it keeps 1). Capped at --cores.
    threads: 2
    params:
        config_digest=stage_digest(pipeline.sandbox.sandbox_teacher),  # reruns it when a config value its stage reads changes
    script:
        "../scripts/sandbox_teacher.py"


rule sandbox_lcm:
    input:
        teacher=f"{SBX}/teacher",
    output:
        model=directory(f"{SBX}/lcm"),
        stats=f"{SBX}/lcm.json",
    log:
        f"{LOG}/sandbox/lcm.log",
    benchmark:
        f"{RES}/benchmarks/sandbox/lcm.tsv"
    conda:
        CONDA_ENVS["torch"]
    params:
        config_digest=stage_digest(pipeline.sandbox.sandbox_lcm),  # reruns it when a config value its stage reads changes
    script:
        "../scripts/sandbox_lcm.py"


rule sandbox_proxy:
    input:
        lcm=f"{SBX}/lcm",
    output:
        model=directory(f"{SBX}/rewards/{{proxy}}"),
        stats=f"{SBX}/rewards/{{proxy}}.json",
    log:
        f"{LOG}/sandbox/{{proxy}}.log",
    benchmark:
        f"{RES}/benchmarks/sandbox/{{proxy}}.tsv"
    wildcard_constraints:
        proxy="|".join(PROXIES),
    conda:
        CONDA_ENVS["torch"]
    params:
        config_digest=stage_digest(pipeline.sandbox.sandbox_proxy),  # reruns it when a config value its stage reads changes
    script:
        "../scripts/sandbox_proxy.py"


rule sandbox_quality:
    input:
        lcm=f"{SBX}/lcm",
        proxies=expand(f"{SBX}/rewards/{{proxy}}", proxy=PROXIES),
        stats=[f"{SBX}/vae.json", f"{SBX}/teacher.json", f"{SBX}/lcm.json"]
        + expand(f"{SBX}/rewards/{{proxy}}.json", proxy=PROXIES),
    output:
        f"{SBX}/quality.json",
    log:
        f"{LOG}/sandbox/quality.log",
    conda:
        CONDA_ENVS["torch"]
    params:
        config_digest=stage_digest(pipeline.sandbox.sandbox_quality),  # reruns it when a config value its stage reads changes
    script:
        "../scripts/sandbox_quality.py"
