# Statistics, the paper's tables and figures, one target rule each, all collected by rule all. They report on the test
# prompts (results/scores/all.csv). Beta per divergence and the tuned baselines' learning rates are chosen once, on the
# validation prompts of the sweep's and the tuning runs (checkpoint choose_settings: results/stats/chosen.csv); the
# confirmatory stage trains more seeds of the chosen settings.


rule collect_scores:
    input:
        scores=split_scores,
    output:
        f"{RES}/scores/{{table}}.csv",  # all.csv: the test scores of every run; val.csv: the validation scores
    log:
        f"{LOG}/collect_scores/{{table}}.log",
    wildcard_constraints:
        table="all|val",
    conda:
        CONDA_ENVS["analysis"]
    script:
        "../scripts/collect_scores.py"


checkpoint choose_settings:
    input:
        scores=expand(
            f"{RES}/scores/val/{{run}}.csv",
            run=runs.sweep_runs(config)
            + runs.adaptive_runs(config)
            + runs.score_function_runs(config)
            + runs.tuning_runs(config),
        ),
    output:
        CHOSEN,  # the confirmatory runs of the chosen settings are planned once it exists
    log:
        f"{LOG}/choose_settings.log",
    conda:
        CONDA_ENVS["analysis"]
    params:
        config_digest=stage_digest(pipeline.report.choose_settings),  # reruns it when a config value its stage reads changes
    script:
        "../scripts/choose_settings.py"


rule stats:
    input:
        scores=SCORE_TABLES["test"],
    output:
        comparisons=f"{RES}/stats/comparisons.csv",
        summary=f"{RES}/stats/seed_summary.csv",
    log:
        f"{LOG}/stats.log",
    conda:
        CONDA_ENVS["analysis"]
    params:
        config_digest=stage_digest(pipeline.report.stats),  # reruns it when a config value its stage reads changes
    script:
        "../scripts/stats.py"


rule table1:
    input:
        scores=SCORE_TABLES["test"],
        chosen=CHOSEN,  # beta per divergence, chosen on the validation prompts
        comparisons=f"{RES}/stats/comparisons.csv",  # the daggers: the stats stage's one family
    output:
        md=report(
            f"{FIG}/table1.md",
            caption="../report/table1.rst",
            category="Tables",
        ),
        tex=f"{FIG}/table1.tex",
        csv=f"{FIG}/table1.csv",
    log:
        f"{LOG}/table1.log",
    conda:
        CONDA_ENVS["analysis"]
    params:
        config_digest=stage_digest(pipeline.report.table1),  # reruns it when a config value its stage reads changes
    script:
        "../scripts/table1.py"


rule table_tuning:
    input:
        scores=SCORE_TABLES["val"],  # the choice's candidates: the sweep's and the tuning runs' validation scores
        chosen=CHOSEN,
    output:
        md=report(
            f"{FIG}/table_tuning.md",
            caption="../report/table_tuning.rst",
            category="Tables",
        ),
        tex=f"{FIG}/table_tuning.tex",
        csv=f"{FIG}/table_tuning.csv",
    log:
        f"{LOG}/table_tuning.log",
    conda:
        CONDA_ENVS["analysis"]
    params:
        config_digest=stage_digest(pipeline.report.table_tuning),  # reruns it when a config value its stage reads changes
    script:
        "../scripts/table_tuning.py"


rule table_divergence_beta:
    input:
        scores=SCORE_TABLES["test"],
    output:
        md=report(
            f"{FIG}/table_divergence_beta.md",
            caption="../report/table_divergence_beta.rst",
            category="Tables",
        ),
        tex=f"{FIG}/table_divergence_beta.tex",
        csv=f"{FIG}/table_divergence_beta.csv",
    log:
        f"{LOG}/table_divergence_beta.log",
    conda:
        CONDA_ENVS["analysis"]
    params:
        config_digest=stage_digest(pipeline.report.table_divergence_beta),  # reruns it when a config value its stage reads changes
    script:
        "../scripts/table_divergence_beta.py"


rule fig_beta_sweep:
    input:
        scores=SCORE_TABLES["test"],
    output:
        pdf=f"{FIG}/fig_beta_sweep.pdf",
        png=report(
            f"{FIG}/fig_beta_sweep.png",
            caption="../report/fig_beta_sweep.rst",
            category="Figures",
        ),
    log:
        f"{LOG}/fig_beta_sweep.log",
    conda:
        CONDA_ENVS["analysis"]
    params:
        config_digest=stage_digest(pipeline.report.fig_beta_sweep),  # reruns it when a config value its stage reads changes
    script:
        "../scripts/fig_beta_sweep.py"


rule fig_efficiency:
    input:
        chosen=CHOSEN,  # beta per divergence, chosen on the validation prompts
        curves=curve_files,  # each run's held-out probe at its checkpoints (train.probe)
    output:
        pdf=f"{FIG}/fig_efficiency.pdf",
        png=report(
            f"{FIG}/fig_efficiency.png",
            caption="../report/fig_efficiency.rst",
            category="Figures",
        ),
    log:
        f"{LOG}/fig_efficiency.log",
    conda:
        CONDA_ENVS["analysis"]
    params:
        config_digest=stage_digest(pipeline.report.fig_efficiency),  # reruns it when a config value its stage reads changes
    script:
        "../scripts/fig_efficiency.py"


rule table_efficiency:
    input:
        chosen=CHOSEN,
        curves=curve_files,
    output:
        md=report(
            f"{FIG}/table_efficiency.md",
            caption="../report/table_efficiency.rst",
            category="Tables",
        ),
        tex=f"{FIG}/table_efficiency.tex",
        csv=f"{FIG}/table_efficiency.csv",
        learning_md=report(
            f"{FIG}/table_learning.md",
            caption="../report/table_learning.rst",
            category="Tables",
        ),
        learning_tex=f"{FIG}/table_learning.tex",
        learning_csv=f"{FIG}/table_learning.csv",
        curves=f"{RES}/stats/curves.csv",  # every run's probe rows, published with the figures
    log:
        f"{LOG}/table_efficiency.log",
    conda:
        CONDA_ENVS["analysis"]
    params:
        config_digest=stage_digest(pipeline.report.table_efficiency),  # reruns it when a config value its stage reads changes
    script:
        "../scripts/table_efficiency.py"


rule fig_training_curves:
    input:
        logs=log_files,
    output:
        pdf=f"{FIG}/fig_training_curves.pdf",
        png=report(
            f"{FIG}/fig_training_curves.png",
            caption="../report/fig_training_curves.rst",
            category="Figures",
        ),
    log:
        f"{LOG}/fig_training_curves.log",
    conda:
        CONDA_ENVS["analysis"]
    params:
        config_digest=stage_digest(pipeline.report.fig_training_curves),  # reruns it when a config value its stage reads changes
    script:
        "../scripts/fig_training_curves.py"


rule table_adaptive_beta:
    input:
        scores=SCORE_TABLES["test"],
        chosen=CHOSEN,  # the fixed beta and the adaptive target per divergence, chosen on validation
        logs=rocm_log_files,  # the controller's beta and divergence, the seconds per run
    output:
        md=report(
            f"{FIG}/table_adaptive_beta.md",
            caption="../report/table_adaptive_beta.rst",
            category="Tables",
        ),
        tex=f"{FIG}/table_adaptive_beta.tex",
        csv=f"{FIG}/table_adaptive_beta.csv",
    log:
        f"{LOG}/table_adaptive_beta.log",
    conda:
        CONDA_ENVS["analysis"]
    params:
        config_digest=stage_digest(pipeline.report.table_adaptive_beta),  # reruns it when a config value its stage reads changes
    script:
        "../scripts/table_adaptive_beta.py"


rule fig_adaptive_beta:
    input:
        chosen=CHOSEN,
        logs=rocm_log_files,
    output:
        pdf=f"{FIG}/fig_adaptive_beta.pdf",
        png=report(
            f"{FIG}/fig_adaptive_beta.png",
            caption="../report/fig_adaptive_beta.rst",
            category="Figures",
        ),
    log:
        f"{LOG}/fig_adaptive_beta.log",
    conda:
        CONDA_ENVS["analysis"]
    params:
        config_digest=stage_digest(pipeline.report.fig_adaptive_beta),  # reruns it when a config value its stage reads changes
    script:
        "../scripts/fig_adaptive_beta.py"


rule table_score_function:
    input:
        scores=SCORE_TABLES["test"],
        chosen=CHOSEN,  # the score-function variants' betas, ROCM's and the baselines' settings, chosen on validation
        logs=log_files,  # reward queries and seconds per run
    output:
        md=report(
            f"{FIG}/table_score_function.md",
            caption="../report/table_score_function.rst",
            category="Tables",
        ),
        tex=f"{FIG}/table_score_function.tex",
        csv=f"{FIG}/table_score_function.csv",
    log:
        f"{LOG}/table_score_function.log",
    conda:
        CONDA_ENVS["analysis"]
    params:
        config_digest=stage_digest(pipeline.report.table_score_function),  # reruns it when a config value its stage reads changes
    script:
        "../scripts/table_score_function.py"


rule fig_score_function:
    input:
        chosen=CHOSEN,
        curves=curve_files,
    output:
        pdf=f"{FIG}/fig_score_function.pdf",
        png=report(
            f"{FIG}/fig_score_function.png",
            caption="../report/fig_score_function.rst",
            category="Figures",
        ),
    log:
        f"{LOG}/fig_score_function.log",
    conda:
        CONDA_ENVS["analysis"]
    params:
        config_digest=stage_digest(pipeline.report.fig_score_function),  # reruns it when a config value its stage reads changes
    script:
        "../scripts/fig_score_function.py"


rule fig_divergence_gallery:
    input:
        chosen=CHOSEN,  # beta per divergence, chosen on the validation prompts
        samples=run_files(f"{RES}/samples/test/{{run}}/images.npz"),
    output:
        pdf=f"{FIG}/fig_divergence_gallery.pdf",
        png=report(
            f"{FIG}/fig_divergence_gallery.png",
            caption="../report/fig_divergence_gallery.rst",
            category="Figures",
        ),
    log:
        f"{LOG}/fig_divergence_gallery.log",
    conda:
        CONDA_ENVS["analysis"]
    params:
        config_digest=stage_digest(pipeline.report.fig_divergence_gallery),  # reruns it when a config value its stage reads changes
    script:
        "../scripts/fig_divergence_gallery.py"


rule publish_results:
    input:
        lambda wildcards: published()[wildcards.name],
    output:
        f"{FIG}/data/{{name}}",
    log:
        f"{LOG}/publish_results/{{name}}.log",
    wildcard_constraints:
        name="|".join(re.escape(n) for n in published()),
    conda:
        CONDA_ENVS["analysis"]
    script:
        "../scripts/publish_results.py"
