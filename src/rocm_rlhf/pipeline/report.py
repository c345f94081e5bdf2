"""Stages of workflow/rules/report.smk: the score tables of all runs, the statistics, the paper's tables and figures
(rocm_rlhf.analysis). They report on the test prompts (results/scores/all.csv); beta per divergence and the tuned
baselines' learning rates are chosen once, on the validation prompts of the sweep's and the tuning runs
(choose_settings: results/stats/chosen.csv), and Table 1, fig_efficiency and fig_divergence_gallery read that
choice."""

from __future__ import annotations

from pathlib import Path

from .. import runs
from ..infra.jobs import stage
from .common import figure_metrics

REPORT = ("seed", "setting", "figures", "train.reward", "evaluation.metrics")
"""The config keys of the statistics, tables and figures."""


def _chosen_betas(job) -> dict[str, str]:
    """Per divergence, the beta chosen on the validation prompts: ``job.input.chosen`` (results/stats/chosen.csv,
    the choose_settings stage's), the one choice every report stage shows."""
    return runs.read_chosen(job.input.chosen)


def _chosen_arms(job) -> dict[str, str]:
    """Per divergence, the ROCM arm of the chosen beta (:func:`_chosen_betas`)."""
    return {div: runs.rocm_run(div, beta, 0).arm for div, beta in _chosen_betas(job).items()}


@stage(reads=("setting", "train.reward", "figures.quality_metric", "figures.reward_metric"))
def choose_settings(job) -> None:
    """Per divergence, the beta of the sweep, and per tuned baseline, the learning rate, with the best primary
    endpoint (``figures.quality_metric``) on the validation prompts (``job.input.scores``: the sweep's and the
    tuning runs' validation scores): results/stats/chosen.csv. The confirmatory stage trains more seeds of these
    settings; Table 1 and the figures show them."""
    from ..analysis.arms import chosen_table
    from ..analysis.scores import read_scores
    from ..infra.utils import atomic_path

    _, quality = figure_metrics(job.config)
    table = chosen_table(read_scores(job.input.scores), quality)
    with atomic_path(job.output[0]) as tmp:
        table.to_csv(tmp, index=False)
    print(table.to_string(index=False))


@stage(reads=())
def collect_scores(job) -> None:
    from ..analysis.scores import read_scores
    from ..infra.utils import atomic_path

    scores = read_scores(job.input.scores)
    with atomic_path(job.output[0]) as tmp:
        scores.to_csv(tmp, index=False)
    print(f"{len(scores)} scores of {scores['run_id'].nunique()} runs")


@stage(reads=REPORT)
def stats(job) -> None:
    """Every arm against the base model and the baselines (one Holm family), and seed summaries with CIs."""
    from ..analysis.scores import read_scores
    from ..analysis.stats import comparison_family, seed_summary
    from ..infra.utils import atomic_path

    scores = read_scores(job.input.scores)
    f = job.config["figures"]
    kw = dict(n_boot=f["n_boot"], n_flips=f["n_flips"], rng_seed=job.config["seed"])
    comp = comparison_family(scores, **kw)
    with atomic_path(job.output.comparisons) as tmp:
        comp.to_csv(tmp, index=False)
    with atomic_path(job.output.summary) as tmp:
        seed_summary(scores, n_boot=kw["n_boot"], rng_seed=kw["rng_seed"]).to_csv(tmp, index=False)
    print(f"{len(comp)} comparisons, {int(comp['significant'].sum())} significant after Holm over all of them")


@stage(reads=REPORT)
def table1(job) -> None:
    """Table 1 on the test prompts (results/scores/all.csv), each divergence at the beta chosen on the validation
    prompts (results/scores/val.csv); its daggers from the stats stage's comparisons (results/stats/comparisons.csv),
    the one family of every test arm."""
    import pandas as pd

    from ..analysis.scores import read_scores
    from ..analysis.tables import table1 as make

    scores = read_scores(job.input.scores)
    _, quality = figure_metrics(job.config)
    metrics = [m for m in job.config["evaluation"]["metrics"] + ["diversity"] if m != quality]
    make(scores, metrics, quality, runs.control_arms(scores["arm"]), Path(job.output.md).with_suffix(""),
         rocm_betas="all", chosen_arms=_chosen_arms(job),
         chosen_on="the validation prompts (results/stats/chosen.csv), which share no prompt with these",
         comparisons=pd.read_csv(job.input.comparisons), n_boot=job.config["figures"]["n_boot"],
         rng_seed=job.config["seed"])


@stage(reads=REPORT)
def table_tuning(job) -> None:
    """Every setting the choice saw (each divergence's betas, each tuned baseline's learning rates) on the validation
    prompts (results/scores/val.csv), on the primary endpoint and the training reward, the chosen one in bold."""
    import pandas as pd

    from ..analysis.scores import read_scores
    from ..analysis.tables import tuning_table

    reward, quality = figure_metrics(job.config)
    tuning_table(read_scores(job.input.scores), pd.read_csv(job.input.chosen, dtype={"beta": str, "lr": str}),
                 list(dict.fromkeys([quality, reward])), Path(job.output.md).with_suffix(""))


@stage(reads=REPORT)
def table_divergence_beta(job) -> None:
    from ..analysis.scores import read_scores
    from ..analysis.tables import divergence_beta_table

    _, quality = figure_metrics(job.config)
    divergence_beta_table(read_scores(job.input.scores), quality, Path(job.output.md).with_suffix(""))


@stage(reads=REPORT)
def fig_beta_sweep(job) -> None:
    from ..analysis.figures import fig_beta_sweep as make
    from ..analysis.scores import read_scores

    reward, quality = figure_metrics(job.config)
    make(read_scores(job.input.scores), reward, quality, Path(job.output.pdf).with_suffix(""))


def _logs(job):
    from ..analysis.logs import load_training_logs

    return load_training_logs([Path(p).parent for p in job.input.logs])


def _curves(job):
    from ..analysis.logs import load_curves

    return load_curves([Path(p).parent for p in job.input.curves])


def _chosen_floats(job) -> dict[str, float]:
    return {d: float(b) for d, b in _chosen_betas(job).items()}


@stage(reads=REPORT)
def fig_efficiency(job) -> None:
    """Held-out primary endpoint and training reward (the runs' probe curves) against device-hours and reward
    queries, each divergence at its beta chosen on validation."""
    from ..analysis.figures import fig_efficiency as make

    reward, quality = figure_metrics(job.config)
    make(_curves(job), Path(job.output.pdf).with_suffix(""), list(dict.fromkeys([quality, reward])),
         chosen_betas=_chosen_floats(job))


@stage(reads=REPORT)
def table_efficiency(job) -> None:
    """From the runs' held-out probe: the device-hours to reach 50% and 90% of the best held-out improvement any arm
    reaches, per arm, with the ratio to the ROCM arm with the best validation score (results/stats/chosen.csv); the
    learning table (start -> end per arm, over seeds); and every probe row collected (results/stats/curves.csv)."""
    import pandas as pd

    from ..analysis.efficiency import efficiency_table, learning_table
    from ..analysis.figures import device_label
    from ..analysis.render import write_table
    from ..analysis.tables import efficiency_text, learning_text
    from ..infra.utils import atomic_path

    from ..analysis.arms import tuned_setting

    reward, quality = figure_metrics(job.config)
    chosen = pd.read_csv(job.input.chosen)
    chosen = chosen[(chosen["method"] == "rocm") & (chosen["arm"].map(tuned_setting) == "beta")]  # ROCM's fixed betas
    reference = str(chosen.loc[chosen["mean"].idxmax(), "arm"])
    curves = _curves(job)
    table = efficiency_table(curves, list(dict.fromkeys([quality, reward])), reference,
                             chosen_betas=_chosen_floats(job), n_boot=job.config["figures"]["n_boot"],
                             rng_seed=job.config["seed"])
    ref_label = str(table.loc[table["arm"] == reference, "label"].iloc[0])
    unit = device_label(curves[~curves["method"].isin(runs.UNTRAINED)])
    md, tex = efficiency_text(table, ref_label, unit)
    legend = (f"{unit} (mean over training seeds; k/n runs reached the target) to reach {{50%, 90%}} of the best "
              f"held-out improvement any arm reaches over the untrained LCM (validation prompts, held-out probe at "
              f"each checkpoint, interpolated between checkpoints); ratio = {ref_label} (the ROCM arm with the best "
              f"validation {quality}) / method, 95% bootstrap CI over training seeds (< 1: {ref_label} is faster).")
    write_table(Path(job.output.md).with_suffix(""), table, md + "\n" + legend + "\n", tex)
    learn = learning_table(curves, list(dict.fromkeys([quality, reward])), chosen_betas=_chosen_floats(job))
    md_l, tex_l = learning_text(learn)
    legend_l = ("Held-out probe (validation prompts) at step 0 and at each run's last checkpoint, mean over training "
                "seeds; change = end - start with a 95% t-interval over seeds; (k/n): runs that ended above their "
                "start.")
    write_table(Path(job.output.learning_md).with_suffix(""), learn, md_l + "\n" + legend_l + "\n", tex_l)
    with atomic_path(job.output.curves) as tmp:
        curves.to_csv(tmp, index=False)
    print(md + "\n\n" + md_l)


@stage(reads=REPORT)
def fig_training_curves(job) -> None:
    from ..analysis.figures import fig_training_curves as make

    make(_logs(job), Path(job.output.pdf).with_suffix(""))


@stage(reads=REPORT)
def table_adaptive_beta(job) -> None:
    """Beyond the paper: per divergence, the adaptive beta at its target chosen on validation against the fixed beta
    chosen there, on the test prompts (the primary endpoint and the training reward, paired over training seeds, its
    own Holm family), with what the controller held and what each run cost (rocm_rlhf.analysis.adaptive)."""
    import pandas as pd

    from ..analysis.adaptive import adaptive_legend, adaptive_table, adaptive_text
    from ..analysis.render import write_table
    from ..analysis.scores import read_scores

    reward, quality = figure_metrics(job.config)
    f = job.config["figures"]
    table = adaptive_table(read_scores(job.input.scores), pd.read_csv(job.input.chosen), _logs(job),
                           list(dict.fromkeys([quality, reward])), n_boot=f["n_boot"], n_flips=f["n_flips"],
                           rng_seed=job.config["seed"])
    md, tex = adaptive_text(table)
    write_table(Path(job.output.md).with_suffix(""), table, md + "\n" + adaptive_legend(table) + "\n", tex)
    print(md)


@stage(reads=REPORT)
def fig_adaptive_beta(job) -> None:
    """Beyond the paper: the adaptive beta's beta and held divergence per step, every target swept, against the
    fixed beta chosen on validation."""
    from ..analysis.figures import fig_adaptive_beta as make

    make(_logs(job), Path(job.output.pdf).with_suffix(""), chosen_betas=_chosen_floats(job),
         chosen_targets=runs.read_chosen_targets(job.input.chosen))


@stage(reads=(*REPORT, "rocm.seeds", "rocm.unregularised"))
def fig_divergence_gallery(job) -> None:
    """Base model and each divergence at its beta chosen on validation (first training seed), on the same test
    prompts and noise."""
    from ..analysis.arms import gallery_runs
    from ..analysis.figures import fig_divergence_gallery as make
    from ..analysis.figures import load_gallery_images

    chosen = {d: float(b) for d, b in _chosen_betas(job).items()}
    samples = {Path(p).parent.name: p for p in job.input.samples}
    rows = gallery_runs(chosen, min(job.config["rocm"]["seeds"]), unregularised=job.config["rocm"]["unregularised"])
    images, prompts = load_gallery_images({arm: samples[run_id] for arm, run_id in rows.items()},
                                          job.config["figures"]["gallery_prompts"])
    make(images, prompts, Path(job.output.pdf).with_suffix(""))


@stage(reads=())
def publish_results(job) -> None:
    """Copy one small result file (a score table, the statistics, the sandbox's quality report) next to the figures,
    paper_figures/data/, where it is committed so that a reader can check every number."""
    import shutil

    from ..infra.utils import atomic_path

    with atomic_path(job.output[0]) as tmp:
        shutil.copyfile(job.input[0], tmp)
    print(f"published {job.input[0]} as {job.output[0]}")


def _trains_on(config: dict) -> dict[str, str]:
    """What each method trains on, in words, for the score-function table: ROCM's pathwise gradient climbs
    :func:`rocm_rlhf.infra.scorer_catalogue.pathwise_reward`, the score-function variants and the baselines weigh
    ``train.reward``'s numbers, the hybrid both."""
    from ..infra.scorer_catalogue import pathwise_reward, reward_label

    reward, surrogate = reward_label(config["train"]["reward"]), config["train"]["surrogate"]
    pathwise = reward_label(pathwise_reward(config))
    out = {"rocm": f"{pathwise} (gradient)", "rocm_sf": f"{reward} (numbers)",
           "rocm_hybrid": f"{surrogate} (gradient) + {reward} (numbers)"}
    out.update({m: f"{reward} (numbers)" for m in runs.BASELINES})
    return out


def _surrogate_use(config: dict) -> dict[str, str]:
    """Which methods call ``train.surrogate`` (:func:`rocm_rlhf.analysis.score_function.score_function_table`): ROCM
    instead of ``train.reward`` where it climbs it, the hybrid also."""
    from ..infra.scorer_catalogue import pathwise_reward

    use = {"rocm_hybrid": "also"} if config["train"]["surrogate"] else {}
    if pathwise_reward(config) != config["train"]["reward"]:
        use["rocm"] = "instead"
    return use


@stage(reads=(*REPORT, "train.surrogate"))
def table_score_function(job) -> None:
    """Beyond the paper: ROCM's score-function variants at their betas chosen on validation against ROCM's pathwise
    gradient of the surrogate and the baselines, on the training reward and the primary endpoint of the test
    prompts (paired over training seeds, its own Holm family), with reward queries and seconds per run
    (rocm_rlhf.analysis.score_function)."""
    import pandas as pd

    from ..analysis.render import write_table
    from ..analysis.score_function import score_function_legend, score_function_table, score_function_text
    from ..analysis.scores import read_scores

    reward, quality = figure_metrics(job.config)
    f = job.config["figures"]
    table = score_function_table(read_scores(job.input.scores), pd.read_csv(job.input.chosen), _logs(job),
                                 list(dict.fromkeys([reward, quality])), _trains_on(job.config),
                                 _surrogate_use(job.config), n_boot=f["n_boot"], n_flips=f["n_flips"],
                                 rng_seed=job.config["seed"])
    md, tex = score_function_text(table)
    write_table(Path(job.output.md).with_suffix(""), table, md + "\n" + score_function_legend(table) + "\n", tex)
    print(md)


@stage(reads=(*REPORT, "train.surrogate"))
def fig_score_function(job) -> None:
    """Beyond the paper: held-out training reward and primary endpoint against reward queries for ROCM's
    score-function variants and what they are compared with."""
    import pandas as pd

    from ..analysis.figures import fig_score_function as make
    from ..analysis.score_function import comparison_arms

    reward, quality = figure_metrics(job.config)
    curves = _curves(job)
    treatments, references = comparison_arms(pd.read_csv(job.input.chosen), curves["arm"].unique())
    instead = [m for m, u in _surrogate_use(job.config).items() if u == "instead"]
    make(curves, Path(job.output.pdf).with_suffix(""), list(dict.fromkeys([reward, quality])),
         treatments + references, surrogate_arms=[a for a in references if runs.parse_arm(a).method in instead])
