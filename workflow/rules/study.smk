# The pairwise preference study of the evaluation samples (rocm_rlhf.study): the study folder built from the samples
# of study.arms (results/study/design), its answers (in the sandbox from simulated raters who answer through the app's
# HTTP interface; with study.answers = human from the database `rocm-rlhf study-serve` writes) and its results (a
# table and a figure in paper_figures/, beside the metrics). README.md, section 'Human preference study'.


rule study:
    input:
        STUDY,


rule build_study:
    input:
        unpack(study_inputs),
    output:
        study=directory(STUDY),
    log:
        f"{LOG}/study/build_study.log",
    conda:
        CONDA_ENVS["analysis"]
    params:
        config_digest=stage_digest(pipeline.study.build_study),  # reruns it when a config value its stage reads changes
    script:
        "../scripts/build_study.py"


rule simulate_study:
    input:
        study=STUDY,
    output:
        db=STUDY_SIMULATED,
    log:
        f"{LOG}/study/simulate_study.log",
    benchmark:
        f"{RES}/benchmarks/simulate_study.tsv"
    conda:
        CONDA_ENVS["torch"]
    params:
        config_digest=stage_digest(pipeline.study.simulate_study),  # reruns it when a config value its stage reads changes
    script:
        "../scripts/simulate_study.py"


rule analyze_study:
    input:
        study=STUDY,
        db=study_answers_db,  # the simulated raters' database, or study.database (people's answers)
    output:
        md=report(
            f"{FIG}/table_study.md",
            caption="../report/table_study.rst",
            category="Tables",
        ),
        tex=f"{FIG}/table_study.tex",
        csv=f"{FIG}/table_study.csv",
        pdf=f"{FIG}/fig_study.pdf",
        png=report(
            f"{FIG}/fig_study.png",
            caption="../report/fig_study.rst",
            category="Figures",
        ),
        answers=f"{RES}/study/answers.csv",  # every answer with its item, published with the figures
        summary=f"{RES}/study/summary.json",
    log:
        f"{LOG}/study/analyze_study.log",
    conda:
        CONDA_ENVS["analysis"]
    params:
        config_digest=stage_digest(pipeline.study.analyze_study),  # reruns it when a config value its stage reads changes
    script:
        "../scripts/analyze_study.py"
