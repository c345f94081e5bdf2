# Statistics, the paper's tables and figures, one target rule each, all collected by rule all. They report on the test
# prompts (results/scores/all.csv). Beta per divergence and the tuned baselines' learning rates are chosen once, on the
# validation prompts of the sweep's and the tuning runs (checkpoint choose_settings: results/stats/chosen.csv); the
# confirmatory stage trains more seeds of the chosen settings.


rule collect_scores:
    input:
        scores=split_scores,
    output:
        "results/scores/{table}.csv",  # all.csv: the test scores of every run; val.csv: the validation scores
    log:
        "logs/collect_scores/{table}.log",
    wildcard_constraints:
        table="all|val",
    conda:
        "../../envs/analysis.yaml"
    script:
        "../scripts/collect_scores.py"


checkpoint choose_settings:
    input:
        scores=expand(
            "results/scores/val/{run}.csv",
            run=runs.sweep_runs(config) + runs.tuning_runs(config),
        ),
    output:
        CHOSEN,  # the confirmatory runs of the chosen betas are planned once it exists
    log:
        "logs/choose_settings.log",
    conda:
        "../../envs/analysis.yaml"
    params:
        config_digest=stage_digest(pipeline.report.choose_settings),  # reruns it when a config value its stage reads changes
    script:
        "../scripts/choose_settings.py"


rule stats:
    input:
        scores=SCORE_TABLES["test"],
    output:
        comparisons="results/stats/comparisons.csv",
        summary="results/stats/seed_summary.csv",
    log:
        "logs/stats.log",
    conda:
        "../../envs/analysis.yaml"
    params:
        config_digest=stage_digest(pipeline.report.stats),  # reruns it when a config value its stage reads changes
    script:
        "../scripts/stats.py"


rule table1:
    input:
        scores=SCORE_TABLES["test"],
        chosen=CHOSEN,  # beta per divergence, chosen on the validation prompts
        comparisons="results/stats/comparisons.csv",  # the daggers: the stats stage's one family
    output:
        md=report(
            "paper_figures/table1.md",
            caption="../report/table1.rst",
            category="Tables",
        ),
        tex="paper_figures/table1.tex",
        csv="paper_figures/table1.csv",
    log:
        "logs/table1.log",
    conda:
        "../../envs/analysis.yaml"
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
            "paper_figures/table_tuning.md",
            caption="../report/table_tuning.rst",
            category="Tables",
        ),
        tex="paper_figures/table_tuning.tex",
        csv="paper_figures/table_tuning.csv",
    log:
        "logs/table_tuning.log",
    conda:
        "../../envs/analysis.yaml"
    params:
        config_digest=stage_digest(pipeline.report.table_tuning),  # reruns it when a config value its stage reads changes
    script:
        "../scripts/table_tuning.py"


rule table_divergence_beta:
    input:
        scores=SCORE_TABLES["test"],
    output:
        md=report(
            "paper_figures/table_divergence_beta.md",
            caption="../report/table_divergence_beta.rst",
            category="Tables",
        ),
        tex="paper_figures/table_divergence_beta.tex",
        csv="paper_figures/table_divergence_beta.csv",
    log:
        "logs/table_divergence_beta.log",
    conda:
        "../../envs/analysis.yaml"
    params:
        config_digest=stage_digest(pipeline.report.table_divergence_beta),  # reruns it when a config value its stage reads changes
    script:
        "../scripts/table_divergence_beta.py"


rule fig_beta_sweep:
    input:
        scores=SCORE_TABLES["test"],
    output:
        pdf="paper_figures/fig_beta_sweep.pdf",
        png=report(
            "paper_figures/fig_beta_sweep.png",
            caption="../report/fig_beta_sweep.rst",
            category="Figures",
        ),
    log:
        "logs/fig_beta_sweep.log",
    conda:
        "../../envs/analysis.yaml"
    params:
        config_digest=stage_digest(pipeline.report.fig_beta_sweep),  # reruns it when a config value its stage reads changes
    script:
        "../scripts/fig_beta_sweep.py"


rule fig_efficiency:
    input:
        chosen=CHOSEN,  # beta per divergence, chosen on the validation prompts
        curves=curve_files,  # each run's held-out probe at its checkpoints (train.probe)
    output:
        pdf="paper_figures/fig_efficiency.pdf",
        png=report(
            "paper_figures/fig_efficiency.png",
            caption="../report/fig_efficiency.rst",
            category="Figures",
        ),
    log:
        "logs/fig_efficiency.log",
    conda:
        "../../envs/analysis.yaml"
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
            "paper_figures/table_efficiency.md",
            caption="../report/table_efficiency.rst",
            category="Tables",
        ),
        tex="paper_figures/table_efficiency.tex",
        csv="paper_figures/table_efficiency.csv",
        learning_md=report(
            "paper_figures/table_learning.md",
            caption="../report/table_learning.rst",
            category="Tables",
        ),
        learning_tex="paper_figures/table_learning.tex",
        learning_csv="paper_figures/table_learning.csv",
        curves="results/stats/curves.csv",  # every run's probe rows, published with the figures
    log:
        "logs/table_efficiency.log",
    conda:
        "../../envs/analysis.yaml"
    params:
        config_digest=stage_digest(pipeline.report.table_efficiency),  # reruns it when a config value its stage reads changes
    script:
        "../scripts/table_efficiency.py"


rule fig_training_curves:
    input:
        logs=log_files,
    output:
        pdf="paper_figures/fig_training_curves.pdf",
        png=report(
            "paper_figures/fig_training_curves.png",
            caption="../report/fig_training_curves.rst",
            category="Figures",
        ),
    log:
        "logs/fig_training_curves.log",
    conda:
        "../../envs/analysis.yaml"
    params:
        config_digest=stage_digest(pipeline.report.fig_training_curves),  # reruns it when a config value its stage reads changes
    script:
        "../scripts/fig_training_curves.py"


rule fig_divergence_gallery:
    input:
        chosen=CHOSEN,  # beta per divergence, chosen on the validation prompts
        samples=run_files("results/samples/test/{run}/images.npz"),
    output:
        pdf="paper_figures/fig_divergence_gallery.pdf",
        png=report(
            "paper_figures/fig_divergence_gallery.png",
            caption="../report/fig_divergence_gallery.rst",
            category="Figures",
        ),
    log:
        "logs/fig_divergence_gallery.log",
    conda:
        "../../envs/analysis.yaml"
    params:
        config_digest=stage_digest(pipeline.report.fig_divergence_gallery),  # reruns it when a config value its stage reads changes
    script:
        "../scripts/fig_divergence_gallery.py"


rule publish_results:
    input:
        lambda wildcards: published()[wildcards.name],
    output:
        "paper_figures/data/{name}",
    log:
        "logs/publish_results/{name}.log",
    wildcard_constraints:
        name="|".join(re.escape(n) for n in published()),
    conda:
        "../../envs/analysis.yaml"
    script:
        "../scripts/publish_results.py"
