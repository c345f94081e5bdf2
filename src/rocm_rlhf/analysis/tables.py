"""The paper's tables from the score table: Table 1 (methods x metrics) and the divergence x beta table.

API: :func:`table1`, :func:`divergence_beta_table`, :func:`efficiency_text` and :func:`learning_text` (the
efficiency and learning tables' text). Each writes ``<stem>.csv`` (long, one row per shown cell),
``<stem>.md`` (a pipe table and a one-line legend) and ``<stem>.tex`` (a booktabs ``tabular`` for ``\\input``) and
returns the CSV's table. Rows, labels and the choice of beta come from :mod:`rocm_rlhf.analysis.arms`, the numbers
from :mod:`rocm_rlhf.analysis.stats`, the text from :mod:`rocm_rlhf.analysis.render`. Cells, bold, daggers and row
order are described in docs/method.md, section 'Evaluation, statistics, tables and figures' (Tables).
"""

from __future__ import annotations

import os
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from .. import runs
from .arms import arm_table, choose_arms, regularised, sweep_arms, tuned_setting
from .render import (DAGGER, MISSING, best_flags, cell_text, latex, markdown, md_escape, signed, tex_escape,
                     write_table)
from .scores import check_scores, name_list
from .stats import N_FLIPS, comparison_family, seed_summary

_VS = ("mean_diff", "ci_low", "ci_high", "p_value", "p_holm")
"""The comparison statistics Table 1's CSV carries per control, as ``<name>_vs_<control>``."""
_TABLE1_FIRST = ["arm", "label", "group", "method", "divergence", "beta", "metric", "mean", "ci_low", "ci_high",
                 "std", "n_seeds", "n_images", "best", "better_than_controls"]


# --------------------------------------------------------------------------------------------------------------
# Table 1
# --------------------------------------------------------------------------------------------------------------


def table1(
    scores: pd.DataFrame,
    metrics: str | Iterable[str],
    quality_metric: str,
    control_arms: str | Iterable[str],
    out_stem: str | os.PathLike,
    *,
    rocm_betas: str = "best",
    chosen_arms: Mapping[str, str] | None = None,
    chosen_on: str = "",
    lower_is_better: Iterable[str] = (),
    alpha: float = 0.05,
    decimals: int = 3,
    comparisons: pd.DataFrame | None = None,
    n_boot: int = 10_000,
    n_flips: int = N_FLIPS,
    rng_seed: int = 0,
) -> pd.DataFrame:
    """Table 1: methods (rows) x metrics (columns), cells ``mean [95% CI]`` over training seeds (the hierarchical
    bootstrap of :func:`rocm_rlhf.analysis.stats.seed_summary`, ``n_boot`` resamples: training runs, then prompts).

    Rows: base, ROCM at beta = 0, regularised ROCM, baselines. ``rocm_betas="best"`` shows each divergence at the
    beta of :func:`rocm_rlhf.analysis.arms.choose_arms` on ``quality_metric`` (optimistic), ``"all"`` every ROCM
    arm. ``chosen_arms`` (``{divergence: arm}``, chosen elsewhere, e.g. on validation prompts described by
    ``chosen_on``) shows those arms instead and says so in the legend. Control arms are always shown. Columns: ``quality_metric`` first if it is not among ``metrics``, then
    ``metrics`` in the given order; ``↑`` (``↓`` for ``lower_is_better``) marks the better direction.

    Markers: bold = best in the column; dagger = better than every control arm: for each control, the comparison's
    ``significant`` (Holm over the whole family) is true and its mean difference has the better sign. The
    comparisons are ``comparisons`` (the table of results/stats/comparisons.csv) or, when None,
    :func:`rocm_rlhf.analysis.stats.comparison_family` of ``scores`` with ``alpha``, ``n_boot``, ``n_flips`` and
    ``rng_seed``: the same function, family and adjusted p-values as the stats stage's. A shown comparison missing
    from them is an error; an arm that is a control of the comparisons (never compared) gets no dagger.

    Returns the CSV's table: one row per (arm, metric) in display order with columns arm, label, group, method,
    divergence, beta, metric, mean, std, n_seeds, n_images, best, better_than_controls, and per control ``c``:
    ``mean_diff_vs_<c>``, ``ci_low_vs_<c>``, ``ci_high_vs_<c>``, ``p_value_vs_<c>``, ``p_holm_vs_<c>`` (NaN on the
    control's own row).
    """
    mets = name_list(metrics)
    if quality_metric not in mets:
        mets = [quality_metric, *mets]
    controls = name_list(control_arms)
    if not controls:
        raise ValueError("table1 needs at least one control arm (e.g. control_arms=['base'])")
    if rocm_betas not in ("best", "all"):
        raise ValueError(f"rocm_betas must be 'best' or 'all', got {rocm_betas!r}")
    lower = set(name_list(lower_is_better))
    check_scores(scores, mets)
    arms = _table1_arms(scores, quality_metric, controls, rocm_betas, lower, chosen_arms)
    sub = _shown_scores(scores, arms, mets)
    if comparisons is None:
        comparisons = comparison_family(scores, alpha=alpha, n_boot=n_boot, n_flips=n_flips, rng_seed=rng_seed)
    long = _table1_cells(sub, arms, mets, controls, lower, comparisons, n_boot, rng_seed)
    _flag_best(long, "metric", mets, decimals, lambda m: m in lower)
    long = long[_TABLE1_FIRST + [c for c in long.columns if c not in _TABLE1_FIRST]]
    legend = (
        f"Mean over training seeds [95% CI: hierarchical bootstrap over training seeds, then prompts, widened to the "
        f"Student-t interval over seeds where that is wider; over prompts alone for an arm with one run, such as the "
        f"untrained base models]. Bold: best per column. {DAGGER}: better than "
        f"every control ({', '.join(controls)}) on per-prompt means (sample and training seeds averaged): "
        f"sign-flip test over prompts and, where an arm has several training seeds, a t test counting their spread "
        f"(the larger p), Holm-adjusted over all {len(comparisons)} comparisons (every arm x control x metric), "
        f"p < {alpha:g}."
    )
    if chosen_arms:
        legend += f" ROCM beta chosen per divergence on the mean {quality_metric} of {chosen_on}."
        if any(getattr(runs.arm_or_none(a), "target", "") for a in arms.index):
            legend += (" The adaptive beta's target per divergence (beyond the paper; in its label) chosen the same "
                       "way, from its sweep of targets.")
        if any(getattr(runs.arm_or_none(a), "method", "") in runs.SCORE_FUNCTION_METHODS for a in arms.index):
            legend += (" The score-function variants' beta (ROCM-SF, ROCM-hybrid: beyond the paper, for rewards "
                       "without gradients; in their labels) chosen the same way, per variant.")
        if any(getattr(runs.arm_or_none(a), "lr", "") for a in arms.index):
            legend += " Each baseline's learning rate (in its label) chosen the same way, from its tuning runs."
    elif rocm_betas == "best" and len(regularised(arms)):
        legend += f" ROCM beta chosen per divergence on the mean {quality_metric} of these images (optimistic)."
    md, tex = _table1_text(long, arms, mets, lower, decimals)
    write_table(out_stem, long, md + "\n" + legend + "\n", tex)
    return long


def _table1_arms(scores, quality_metric, controls, rocm_betas, lower, chosen=None) -> pd.DataFrame:
    """The arm table's rows Table 1 shows: every arm, or only each divergence's chosen beta (and the controls)."""
    arms = arm_table(scores)
    absent = [c for c in controls if c not in arms.index]
    if absent:
        raise ValueError(f"control arm(s) {absent} are not in the score table (arms: {list(arms.index)})")
    reg = regularised(arms)
    if chosen:
        missing = sorted(set(chosen.values()) - set(arms.index))
        if missing:
            raise ValueError(f"the chosen arm(s) {missing} have no scores in this table")
    elif rocm_betas == "all" or len(reg) == 0:
        return arms
    else:
        chosen = choose_arms(scores, quality_metric, lower_is_better=quality_metric in lower)
    shown = set(arms.index.difference(reg.index)) | set(chosen.values()) | set(controls)
    return arms[arms.index.isin(shown)]


def _shown_scores(scores, arms, mets) -> pd.DataFrame:
    """The scores of the shown arms and metrics; an error if an arm lacks a metric."""
    sub = scores[scores["arm"].isin(arms.index) & scores["metric"].isin(mets)]
    for m in mets:
        lacking = sorted(set(arms.index) - set(sub.loc[sub["metric"] == m, "arm"]))
        if lacking:
            raise ValueError(f"metric {m!r} was not scored for arm(s) {lacking}; score every shown arm on it")
    return sub


def _table1_cells(sub, arms, mets, controls, lower, comparisons, n_boot, rng_seed) -> pd.DataFrame:
    """One row per (arm, metric): the arm, its seed summary with the hierarchical bootstrap's 95% CI, and its
    comparison with each control (read from ``comparisons``, never recomputed)."""
    summ = seed_summary(sub, n_boot=n_boot, rng_seed=rng_seed).set_index(["arm", "metric"])
    # the family's own controls (e.g. a baseline when only the base model is a control here) are never compared
    family_controls = set(comparisons["arm_b"]) - set(comparisons["arm_a"])
    treatments = [a for a in arms.index if a not in controls and a not in family_controls]
    cmp = None
    if treatments:
        cmp = comparisons.set_index(["arm_a", "arm_b", "metric"])
        missing = [(a, c, m) for a in treatments for c in controls for m in mets if (a, c, m) not in cmp.index]
        if missing:
            raise ValueError(
                f"{len(missing)} comparison(s) Table 1 shows are not in the comparisons, e.g. (arm, control, metric) "
                f"{missing[:3]}; pass the comparisons of this score table (stats.comparison_family)"
            )
    rows = []
    for arm, a in arms.iterrows():
        for m in mets:
            s = summ.loc[(arm, m)]
            row = {"arm": arm, "label": a["label"], "group": a["group"], "method": a["method"],
                   "divergence": a["divergence"], "beta": a["beta"], "metric": m, "mean": float(s["mean"]),
                   "std": float(s["std"]), "ci_low": float(s["ci_low"]), "ci_high": float(s["ci_high"]),
                   "n_seeds": int(s["n_seeds"]), "n_images": int(s["n_images"])}
            row.update(_versus_controls(cmp, arm, m, controls, m in lower))
            rows.append(row)
    return pd.DataFrame(rows)


def _versus_controls(cmp, arm, metric, controls, lower: bool) -> dict:
    """``<stat>_vs_<control>`` for each control (NaN where not compared) and ``better_than_controls``: significant
    and of the better sign against every control (never on a control's own row)."""
    out = {}
    better_all = arm not in controls and cmp is not None
    for c in controls:
        if cmp is not None and (arm, c, metric) in cmp.index:
            r = cmp.loc[(arm, c, metric)]
            vals = tuple(r[name] for name in _VS)
            sign_ok = r["mean_diff"] < 0 if lower else r["mean_diff"] > 0
            better_all = better_all and bool(r["significant"]) and bool(sign_ok)
        else:
            vals = (np.nan,) * len(_VS)
            better_all = False
        out.update((f"{name}_vs_{c}", float(v)) for name, v in zip(_VS, vals))
    out["better_than_controls"] = bool(better_all)
    return out


def _flag_best(long: pd.DataFrame, by: str, keys, decimals: int, lower) -> None:
    """Add the column ``best``: per value of column ``by``, the cells whose rounded mean is the best."""
    long["best"] = False
    for k in keys:
        idx = long.index[long[by] == k]
        long.loc[idx, "best"] = best_flags(long.loc[idx, "mean"], decimals, lower(k)).to_numpy()


def _table1_text(long, arms, mets, lower, decimals) -> tuple[str, str]:
    """Table 1 as Markdown (without the legend) and LaTeX, a rule between the groups of rows."""
    md_rows, tex_rows, group_starts = [], [], []
    prev_group = None
    for i, (arm, a) in enumerate(arms.iterrows()):
        if a["group"] != prev_group:
            group_starts.append(i)
            prev_group = a["group"]
        cells = long[long["arm"] == arm].set_index("metric")
        md, tex = [md_escape(a["label"])], [tex_escape(a["label"])]
        for m in mets:
            c = cells.loc[m]
            kw = dict(decimals=decimals, bold=bool(c["best"]), mark=bool(c["better_than_controls"]))
            kw["ci"] = (c["ci_low"], c["ci_high"])
            md.append(cell_text(c["mean"], c["std"], c["n_seeds"], style="md", **kw))
            tex.append(cell_text(c["mean"], c["std"], c["n_seeds"], style="tex", **kw))
        md_rows.append(md)
        tex_rows.append(tex)
    md_arrow = {m: ("↓" if m in lower else "↑") for m in mets}
    tex_arrow = {m: (r"$\downarrow$" if m in lower else r"$\uparrow$") for m in mets}
    md_header = ["Method", *[f"{m} {md_arrow[m]}" for m in mets]]
    tex_header = ["Method", *[f"{tex_escape(m)} {tex_arrow[m]}" for m in mets]]
    align = "l" + "c" * len(mets)
    return markdown(md_header, md_rows, align), latex(tex_header, tex_rows, align, group_starts)


# --------------------------------------------------------------------------------------------------------------
# divergence x beta
# --------------------------------------------------------------------------------------------------------------


def divergence_beta_table(
    scores: pd.DataFrame,
    metric: str,
    out_stem: str | os.PathLike,
    *,
    lower_is_better: bool = False,
    decimals: int = 3,
) -> pd.DataFrame:
    """ROCM's ``metric`` per divergence (rows, in :data:`rocm_rlhf.runs.DIVERGENCES` order) and beta (columns,
    increasing).

    Cells ``mean ± std`` over training seeds; a dash where a (divergence, beta) was not run. The beta = 0 arm
    (divergence "none") is the same unregularised run for every divergence: when present it fills the column
    beta = 0 of every row. Bold: the best cell of each row (the best beta of that divergence, beta = 0 included).

    Returns the CSV's table, one row per filled cell of the displayed grid (the beta = 0 arm once per divergence
    row): divergence, beta, arm, mean, std, n_seeds, best.
    """
    check_scores(scores, [metric])
    zero, reg = sweep_arms(arm_table(scores), "divergence_beta_table")
    use = [*zero.index, *reg.index]
    sub = scores[scores["arm"].isin(use) & (scores["metric"] == metric)]
    lacking = sorted(set(use) - set(sub["arm"]))
    if lacking:
        raise ValueError(f"metric {metric!r} was not scored for ROCM arm(s) {lacking}")
    divs = [d for d in runs.DIVERGENCES if d in set(reg["divergence"])]
    long = _grid_cells(zero, reg, divs, seed_summary(sub).set_index("arm"))
    _flag_best(long, "divergence", divs, decimals, lambda d: lower_is_better)
    betas = list(dict.fromkeys(runs.fmt_beta(b) for b in sorted(set(reg["beta"]) | ({0.0} if len(zero) else set()))))
    md, tex = _grid_text(long, divs, betas, decimals)
    counts = sorted({int(n) for n in long["n_seeds"].dropna()})
    seeds = (f"mean ± std over training seeds ({counts[0]} to {counts[-1]} seeds per cell: the confirmatory stage "
             "adds seeds to the chosen betas and beta = 0 only; a cell of one seed shows the mean alone)"
             if len(counts) > 1 else "mean ± std over training seeds (std omitted with one seed)")
    legend = (
        f"ROCM, {metric} ({'lower' if lower_is_better else 'higher'} is better): {seeds}. "
        "Bold: best beta per divergence. beta = 0 is the same unregularised run in every row."
    )
    write_table(out_stem, long, md + "\n" + legend + "\n", tex)
    return long


def _grid_cells(zero, reg, divs, summ) -> pd.DataFrame:
    """One row per filled cell: per divergence the beta = 0 arm (if any), then its betas in increasing order."""
    rows = []
    for d in divs:
        cells = [(zero.index[0], 0.0)] if len(zero) else []
        cells += [(a, float(r["beta"])) for a, r in reg[reg["divergence"] == d].sort_values("beta").iterrows()]
        for arm, b in cells:
            s = summ.loc[arm]
            rows.append({"divergence": d, "beta": b, "arm": arm, "mean": float(s["mean"]), "std": float(s["std"]),
                         "n_seeds": int(s["n_seeds"])})
    return pd.DataFrame(rows)


def _grid_text(long, divs, betas: list[str], decimals) -> tuple[str, str]:
    """The grid as Markdown (without the legend) and LaTeX; ``betas`` are the columns' canonical beta texts."""
    md_rows, tex_rows = [], []
    for d in divs:
        row = long[long["divergence"] == d]
        cells = {runs.fmt_beta(c["beta"]): c for _, c in row.iterrows()}
        md, tex = [runs.DIVERGENCE_LABELS[d]], [runs.DIVERGENCE_LABELS[d]]
        for b in betas:
            if b in cells:
                c = cells[b]
                kw = dict(decimals=decimals, bold=bool(c["best"]))
                md.append(cell_text(c["mean"], c["std"], c["n_seeds"], style="md", **kw))
                tex.append(cell_text(c["mean"], c["std"], c["n_seeds"], style="tex", **kw))
            else:
                md.append(MISSING)
                tex.append("--")
        md_rows.append(md)
        tex_rows.append(tex)
    md_header = ["Divergence", *[f"β = {b}" for b in betas]]
    tex_header = ["Divergence", *[rf"$\beta = {b}$" for b in betas]]
    align = "l" + "c" * len(betas)
    return markdown(md_header, md_rows, align), latex(tex_header, tex_rows, align)


# --------------------------------------------------------------------------------------------------------------
# efficiency in held-out quality
# --------------------------------------------------------------------------------------------------------------


def efficiency_text(table: pd.DataFrame, reference_label: str, unit: str, decimals: int = 4) -> tuple[str, str]:
    """Markdown and LaTeX of :func:`rocm_rlhf.analysis.efficiency.efficiency_table`: one row per arm, per (metric,
    fraction) the mean device-hours to the target ('–' unless every run reached it, with k/n runs) and the ratio
    ``reference / arm`` with its 95% bootstrap CI over seeds."""
    keys = list(dict.fromkeys(zip(table["metric"], table["fraction"])))
    arms = list(dict.fromkeys(table["arm"]))
    cells = table.set_index(["arm", "metric", "fraction"])
    header = ["Method"] + [f"{m} {f:.0%}: {unit}" for m, f in keys] + [f"{m} {f:.0%}: ratio" for m, f in keys]
    md_rows, tex_rows = [], []
    for arm in arms:
        label = cells.loc[(arm, *keys[0]), "label"]
        hours, ratios = [], []
        for m, f in keys:
            c = cells.loc[(arm, m, f)]
            reached = f"{int(c['n_reached'])}/{int(c['n_runs'])}"
            if not np.isfinite(c["hours_mean"]):
                hours.append(MISSING + f" ({reached})")
            elif c["hours_mean"] == 0:
                hours.append(f"at start ({reached})")
            else:
                hours.append(f"{c['hours_mean']:.{decimals}f} ({reached})")
            if not np.isfinite(c["ratio_ref"]):
                ratios.append(MISSING)
            elif np.isfinite(c["ratio_ci_low"]):
                ratios.append(f"{c['ratio_ref']:.2f} [{c['ratio_ci_low']:.2f}, {c['ratio_ci_high']:.2f}]")
            else:
                ratios.append(f"{c['ratio_ref']:.2f}")
        md_rows.append([md_escape(label), *hours, *ratios])
        tex_rows.append([tex_escape(label), *(tex_escape(h) for h in hours), *(tex_escape(r) for r in ratios)])
    align = "l" + "c" * (len(header) - 1)
    return (markdown(header, md_rows, align),
            latex([tex_escape(h) for h in header], tex_rows, align))


def learning_text(table: pd.DataFrame, decimals: int = 3) -> tuple[str, str]:
    """Markdown and LaTeX of :func:`rocm_rlhf.analysis.efficiency.learning_table`: per arm and metric, start -> end
    and the change with its 95% t-interval over runs (k/n runs improved)."""
    metrics = list(dict.fromkeys(table["metric"]))
    arms = list(dict.fromkeys(table["arm"]))
    cells = table.set_index(["arm", "metric"])
    header = ["Method"] + [f"{m}: start → end" for m in metrics] + [f"{m}: change [95% CI] (improved)" for m in metrics]
    md_rows, tex_rows = [], []
    for arm in arms:
        ends, changes = [], []
        for m in metrics:
            c = cells.loc[(arm, m)]
            ends.append(f"{c['start']:.{decimals}f} → {c['end']:.{decimals}f}")
            ci = (f" [{signed(c['change_ci_low'], decimals)}, {signed(c['change_ci_high'], decimals)}]"
                  if np.isfinite(c["change_ci_low"]) else "")
            changes.append(f"{signed(c['change'], decimals)}{ci} ({int(c['n_improved'])}/{int(c['n_runs'])})")
        label = cells.loc[(arm, metrics[0]), "label"]
        md_rows.append([md_escape(label), *ends, *changes])
        tex_rows.append([tex_escape(label), *(tex_escape(e).replace("→", r"$\to$") for e in ends),
                         *(tex_escape(c) for c in changes)])
    align = "l" + "c" * (len(header) - 1)
    return (markdown(header, md_rows, align),
            latex([tex_escape(h).replace("→", r"$\to$") for h in header], tex_rows, align))


def tuning_table(
    val_scores: pd.DataFrame,
    chosen: pd.DataFrame,
    metrics: Sequence[str],
    out_stem: str | os.PathLike,
    *,
    decimals: int = 3,
) -> pd.DataFrame:
    """Every setting the choice saw, on the validation prompts: per row of ``chosen`` (the choice file,
    results/stats/chosen.csv: a divergence's betas or a tuned baseline's learning rates, its ``candidates``), each
    candidate's mean of ``metrics`` (the first is the endpoint chosen on) over the training seeds every candidate of
    that row has (the seeds the choice compared), the chosen one in bold. ROCM's and the baselines' tuning reported
    the same way.

    Returns the CSV's table: method, divergence, tuned ('beta', 'target' or 'lr'), setting (its text), arm,
    chosen, n_seeds, then one column per metric.
    """
    check_scores(val_scores, list(metrics))
    rows = []
    for _, c in chosen.iterrows():
        tuned = tuned_setting(c["arm"])
        make = {"beta": lambda s: runs.rocm_run(c["divergence"], s, 0, c["method"]),
                "target": lambda s: runs.adaptive_run(c["divergence"], s, 0),
                "lr": lambda s: runs.baseline_run(c["method"], 0, s)}[tuned]
        cand = {s: make(s).arm for s in str(c["candidates"]).split()}
        sub = val_scores[val_scores["arm"].isin(list(cand.values()))]
        missing = sorted(set(cand.values()) - set(sub["arm"]))
        if missing:
            raise ValueError(f"the validation scores lack the candidate arm(s) {missing} of the choice file")
        seeds = set.intersection(*(set(sub.loc[sub["arm"] == a, "seed"]) for a in cand.values()))
        summ = seed_summary(sub[sub["seed"].isin(seeds)]).set_index(["arm", "metric"])["mean"]
        for s, arm in cand.items():
            rows.append({"method": c["method"], "divergence": c["divergence"], "tuned": tuned, "setting": s,
                         "arm": arm, "chosen": arm == c["arm"], "n_seeds": len(seeds),
                         **{m: float(summ.get((arm, m), np.nan)) for m in metrics}})
    long = pd.DataFrame(rows)
    header = ["Method", "setting", *[f"{m} (validation)" for m in metrics]]
    md_rows, tex_rows, starts = [], [], []
    for i, (_, r) in enumerate(long.iterrows()):
        key = ["method", "divergence", "tuned"]
        first = i == 0 or tuple(r[key]) != tuple(long.iloc[i - 1][key])
        if first:
            starts.append(i)
        name = runs.METHOD_LABELS[r["method"]]
        if r["method"] in runs.REGULARISED_METHODS:
            name = f"{name}-{runs.DIVERGENCE_LABELS[r['divergence']]}"
            name += ", adaptive β" if r["tuned"] == "target" else ""
        label = name if first else ""
        setting = {"beta": "β", "target": "target", "lr": "lr"}[r["tuned"]] + f"={r['setting']}"
        cells = [setting, *(f"{r[m]:.{decimals}f}" for m in metrics)]
        md_rows.append([md_escape(label), *(f"**{x}**" if r["chosen"] else md_escape(x) for x in cells)])
        tex_rows.append([tex_escape(label), *(rf"\textbf{{{tex_escape(x)}}}" if r["chosen"] else tex_escape(x)
                                              for x in cells)])
    align = "ll" + "c" * len(metrics)
    seeds = sorted(set(long["n_seeds"]))
    legend = (f"The settings each method was tuned over, on the validation prompts (mean over the "
              f"{'/'.join(map(str, seeds))} training seed(s) every candidate has): ROCM's beta per divergence"
              + (", the adaptive beta's target per divergence" if (long["tuned"] == "target").any() else "")
              + (", the score-function variants' beta" if long["method"].isin(runs.SCORE_FUNCTION_METHODS).any()
                 else "")
              + f" and each baseline's learning rate. Bold: the setting chosen on {metrics[0]} (results/stats/chosen.csv), the one "
              "Table 1 reports on the test prompts with more seeds.")
    write_table(out_stem, long, markdown(header, md_rows, align) + "\n" + legend + "\n",
                latex([tex_escape(h) for h in header], tex_rows, align, midrules_before=starts))
    return long
