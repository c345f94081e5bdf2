"""Rewards given only as numbers (beyond the paper): ROCM's score-function variants (``rocm_sf``, ``rocm_hybrid``;
:mod:`rocm_rlhf.training.rocm_sf`) against what else can train for such a reward, on the test prompts with the same
statistics as Table 1: ROCM's pathwise gradient of the differentiable surrogate (``train.surrogate``) at its chosen
beta, and the baselines, which train on the reward's numbers as the variants do.

API: :func:`comparison_arms` (treatments and references from the choice file), :func:`score_function_table` (every
treatment x reference x metric, its own Holm family, with each arm's reward queries and seconds per run) and
:func:`score_function_text` (its Markdown and LaTeX, with :func:`score_function_legend`). Inputs: the test score table
(:mod:`.scores`), the choice file (results/stats/chosen.csv, read with pandas) and the training logs
(:func:`rocm_rlhf.analysis.logs.load_training_logs`).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import pandas as pd

from .. import runs
from .arms import label_of, tuned_setting
from .render import latex, markdown, md_escape, signed, tex_escape
from .scores import check_scores
from .stats import N_FLIPS, compare, holm


def comparison_arms(chosen: pd.DataFrame, arms: Sequence[str]) -> tuple[list[str], list[str]]:
    """(treatments, references) of the comparison. Treatments: each score-function variant's arm at its chosen beta
    (the choice file's rows of :data:`rocm_rlhf.runs.SCORE_FUNCTION_METHODS`, in that order). References: ROCM at the
    beta chosen for the variants' divergence (pathwise, on the surrogate) where the choice file has it, then every
    trained control among ``arms`` (the baselines, :func:`rocm_rlhf.runs.control_arms` without the base model)."""
    rows = chosen[chosen["method"].isin(runs.SCORE_FUNCTION_METHODS)]
    order = {m: i for i, m in enumerate(runs.SCORE_FUNCTION_METHODS)}
    treatments = [str(a) for a in sorted(rows["arm"], key=lambda a: order[runs.parse_arm(str(a)).method])]
    if not treatments:
        raise ValueError("the choice file has no score-function variant (score_function.methods); nothing to compare")
    divs = {runs.parse_arm(a).divergence for a in treatments} - {runs.UNREGULARISED}
    rocm = chosen[(chosen["method"] == "rocm") & (chosen["arm"].map(tuned_setting) == "beta")
                  & chosen["divergence"].isin(divs)]
    references = [str(a) for a in rocm["arm"]]
    references += [a for a in runs.control_arms(arms) if a != runs.BASE]
    return treatments, references


def score_function_table(scores: pd.DataFrame, chosen: pd.DataFrame, logs: pd.DataFrame, metrics: Sequence[str],
                         trains_on: Mapping[str, str], surrogate_use: Mapping[str, str] | None = None, *,
                         n_boot: int = 10_000, n_flips: int = N_FLIPS, rng_seed: int = 0,
                         alpha: float = 0.05) -> pd.DataFrame:
    """Per treatment x reference (:func:`comparison_arms`) x metric of ``metrics`` (the training reward, then the
    primary endpoint): the treatment against the reference on the test scores
    (:func:`rocm_rlhf.analysis.stats.compare`: paired over shared training seeds, then prompts; p the larger of the
    sign-flip and the run-aware test), Holm over this table's own family. Each row also carries both arms' mean
    queries of the reward and calls of the surrogate per run and training seconds per run (the logs' last
    ``reward_queries`` and ``wall_s``) and what each trains on (``trains_on``: method -> words). The logs count the
    calls of what a run trained on: ``surrogate_use`` (method -> 'instead' or 'also') says which methods called the
    surrogate: 'instead' (ROCM climbing it): its logged count is surrogate calls and it made no reward queries;
    'also' (the hybrid): one surrogate call per reward query. Columns: treatment, reference, treatment_label,
    reference_label, metric, mean_treatment, mean_reference, mean_diff, ci_low, ci_high, p_value, p_holm,
    significant, seeds_paired, n_seeds_treatment, n_seeds_reference, queries_treatment, queries_reference,
    surrogate_calls_treatment, surrogate_calls_reference, seconds_treatment, seconds_reference,
    trains_on_treatment, trains_on_reference."""
    check_scores(scores, list(metrics))
    treatments, references = comparison_arms(chosen, scores["arm"].unique())
    for column in ("reward_queries", "wall_s"):
        if column not in logs.columns:
            raise ValueError(f"the training logs lack {column!r}: pass the logs of the compared runs "
                             "(load_training_logs)")
    last = logs.sort_values("step").groupby("run_id").last()
    missing = [a for a in treatments + references if a not in set(last["arm"])]
    if missing:
        raise ValueError(f"the training logs lack the runs of {missing}")
    per_arm = last.groupby("arm")[["reward_queries", "wall_s"]].mean()
    method_of = {a: runs.parse_arm(a).method for a in treatments + references}
    unknown = sorted({m for m in method_of.values() if m not in trains_on})
    if unknown:
        raise ValueError(f"trains_on has no entry for method(s) {unknown}")
    use = dict(surrogate_use or {})
    bad = {m: u for m, u in use.items() if u not in ("instead", "also")}
    if bad:
        raise ValueError(f"surrogate_use takes 'instead' or 'also' per method, got {bad}")

    def calls(arm):
        """(reward queries, surrogate calls) per run of an arm."""
        n = float(per_arm.loc[arm, "reward_queries"])
        u = use.get(method_of[arm], "")
        return (0.0, n) if u == "instead" else (n, n) if u == "also" else (n, 0.0)

    rows = []
    for t in treatments:
        for r in references:
            for metric in metrics:
                c = compare(scores, metric, t, r, n_boot=n_boot, n_flips=n_flips, rng_seed=rng_seed)
                rows.append({"treatment": t, "reference": r, "treatment_label": label_of(t),
                             "reference_label": label_of(r), "metric": metric, "mean_treatment": c["mean_a"],
                             "mean_reference": c["mean_b"], "mean_diff": c["mean_diff"], "ci_low": c["ci_low"],
                             "ci_high": c["ci_high"], "p_value": c["p_value"], "seeds_paired": c["seeds_paired"],
                             "n_seeds_treatment": c["n_seeds_a"], "n_seeds_reference": c["n_seeds_b"],
                             "queries_treatment": calls(t)[0], "queries_reference": calls(r)[0],
                             "surrogate_calls_treatment": calls(t)[1], "surrogate_calls_reference": calls(r)[1],
                             "seconds_treatment": float(per_arm.loc[t, "wall_s"]),
                             "seconds_reference": float(per_arm.loc[r, "wall_s"]),
                             "trains_on_treatment": trains_on[method_of[t]],
                             "trains_on_reference": trains_on[method_of[r]]})
    table = pd.DataFrame(rows)
    table["p_holm"] = holm(table["p_value"].to_numpy())
    table["significant"] = table["p_holm"] < alpha
    return table


def score_function_text(table: pd.DataFrame, decimals: int = 3) -> tuple[str, str]:
    """Markdown and LaTeX of :func:`score_function_table`: first the arms (what each trains on, its reward queries
    and seconds per run, its mean per metric), then one row per treatment x reference with the difference [95% CI]
    per metric (†: Holm-significant)."""
    metrics = list(dict.fromkeys(table["metric"]))
    arms = {}
    for side in ("treatment", "reference"):
        for _, r in table.iterrows():
            arms.setdefault(r[side], {"label": r[f"{side}_label"], "trains_on": r[f"trains_on_{side}"],
                                      "queries": r[f"queries_{side}"], "calls": r[f"surrogate_calls_{side}"],
                                      "seconds": r[f"seconds_{side}"],
                                      "n": r[f"n_seeds_{side}"]})
            arms[r[side]].setdefault(r["metric"], r[f"mean_{side}"])
    header = ["Arm", "trains on", "reward queries per run", "surrogate calls per run", "s per run", "seeds", *metrics]
    md_rows, tex_rows = [], []
    for a in arms.values():
        cells = [a["label"], a["trains_on"], f"{a['queries']:.0f}", f"{a['calls']:.0f}", f"{a['seconds']:.0f}",
                 f"{a['n']}",
                 *(f"{a[m]:.{decimals}f}" for m in metrics)]
        md_rows.append([md_escape(c) for c in cells])
        tex_rows.append([tex_escape(c) for c in cells])
    align = "llcccc" + "c" * len(metrics)
    md_arms, tex_arms = markdown(header, md_rows, align), latex([tex_escape(h) for h in header], tex_rows, align)
    header = ["Score-function variant", "against", *[f"{m}: difference [95% CI]" for m in metrics]]
    md_rows, tex_rows = [], []
    for (t, r), g in table.groupby(["treatment", "reference"], sort=False):
        cells = [g["treatment_label"].iloc[0], g["reference_label"].iloc[0]]
        for m in metrics:
            row = g[g["metric"] == m].iloc[0]
            cells.append(f"{signed(row['mean_diff'], decimals)} [{signed(row['ci_low'], decimals)}, "
                         f"{signed(row['ci_high'], decimals)}]{'†' if row['significant'] else ''}")
        md_rows.append([md_escape(c) for c in cells])
        tex_rows.append([tex_escape(c) for c in cells])
    align = "ll" + "c" * len(metrics)
    md = md_arms + "\n" + markdown(header, md_rows, align)
    tex = tex_arms + "\n" + latex([tex_escape(h) for h in header], tex_rows, align)
    return md, tex


def score_function_legend(table: pd.DataFrame) -> str:
    """The table's legend: what was compared, how, and at which budget."""
    n = sorted(set(table["n_seeds_treatment"]) | set(table["n_seeds_reference"]))
    paired = ("training seeds paired (the arms share their seeds)" if table["seeds_paired"].all() else
              "training seeds resampled per arm (unpaired where the arms' seeds differ)")
    return (f"Rewards given only as numbers (beyond the paper): ROCM's score-function variants at the beta chosen on "
            f"the validation prompts (rocm_sf: the reward's numbers alone; rocm_hybrid: ROCM's pathwise gradient of "
            f"the differentiable surrogate plus the score-function term on the reward minus the surrogate) against "
            f"ROCM's pathwise gradient of the surrogate at its chosen beta and the baselines at their chosen "
            f"learning rates, on the test prompts; mean over {'/'.join(map(str, n))} training seeds per arm. "
            f"Difference: variant − other, 95% CI of the hierarchical bootstrap ({paired}, then prompts); †: "
            f"Holm-significant at 0.05 over this table's {len(table)} comparisons (p the larger of the sign-flip "
            f"test over prompts and the t test over seeds; the variants are also treatments of Table 1's family, "
            f"where the same pairs are corrected over that larger family). Reward queries: calls of the training "
            f"reward per run; surrogate calls: of the differentiable surrogate (the data the surrogate was trained on "
            f"are not counted); both from the training logs' last step, as are the seconds per run (training "
            f"wall-clock on this machine), mean over runs.")
