"""The pipeline's stages: one module per rules file of ``workflow/rules``, each stage a short function that reads its
job's paths and declared config keys and calls the library (nothing here imports Snakemake).

A workflow script imports its stage by name and runs it with :func:`rocm_rlhf.infra.jobs.run_stage`; the rule
hashes the same declared keys into its rerun digest. :data:`STAGES` names every stage for ``rocm-rlhf stage``.
"""

from . import evaluate, prompts, report, sandbox, stage, study, tiny_hub, train

STAGES = {
    fn.__name__: fn
    for fn in (
        prompts.prepare_prompts,
        sandbox.sandbox_vae, sandbox.sandbox_teacher, sandbox.sandbox_lcm, sandbox.sandbox_proxy,
        sandbox.sandbox_quality,
        train.train,
        evaluate.sample_eval, evaluate.evaluate,
        report.collect_scores, report.choose_settings, report.stats, report.table1, report.table_tuning,
        report.table_divergence_beta,
        report.fig_beta_sweep, report.fig_efficiency, report.table_efficiency, report.fig_training_curves,
        report.fig_divergence_gallery, report.table_adaptive_beta, report.fig_adaptive_beta,
        report.table_score_function, report.fig_score_function,
        report.publish_results,
        study.build_study, study.simulate_study, study.analyze_study,
        stage.stage_models, stage.check_device,
        tiny_hub.tiny_hub,
    )
}
