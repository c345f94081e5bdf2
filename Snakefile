# rocm-rlhf: ROCM (RLHF on consistency models, arXiv 2503.06171) and its baselines as a Snakemake workflow.
#
#   snakemake --cores 8 --resources gpu=2            # everything (rule all is the default target)
#   snakemake --cores 2 --configfile config/config.yaml config/ci.yaml   # the smallest real run
#
# The rules only move files; everything that computes is in the rocm_rlhf package (src/rocm_rlhf).


from snakemake.utils import min_version

# the pinned dependency range (pyproject.toml): older Snakemake parses the command line differently
min_version("9.0")


# The default config, unless --configfile names one: a config given on the command line replaces it instead of being
# merged onto the sandbox's values (paper.yaml is a whole config; the ci overlay names config/config.yaml itself).
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/prompts.smk"
include: "workflow/rules/sandbox.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/study.smk"
include: "workflow/rules/stage.smk"
include: "workflow/rules/tiny_hub.smk"


onstart:
    start_fork_server()


onsuccess:
    stop_fork_server()


onerror:
    stop_fork_server()


localrules:
    all,
    stage_models,
    tiny_hub,
    prepare_prompts,
    collect_scores,
    choose_settings,
    stats,
    table1,
    table_tuning,
    table_divergence_beta,
    fig_beta_sweep,
    fig_efficiency,
    table_efficiency,
    fig_training_curves,
    fig_divergence_gallery,
    publish_results,
    study,
    build_study,
    simulate_study,
    analyze_study,


rule all:
    default_target: True
    input:
        all_targets(),
        confirm_targets,
