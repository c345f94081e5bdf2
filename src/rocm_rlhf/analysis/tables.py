"""The paper's tables from the per-image score table: Table 1 (methods x metrics), the divergence x beta table, and
the choice of beta per divergence.

Input: the long score table of the evaluation stage (``results/scores/*.parquet``), one row per (run, image,
metric), with the columns of :mod:`rocm_rlhf.stats` (run_id, arm, seed, prompt_id, sample_seed, metric, value) plus
the *arm attributes* ``method``, ``divergence`` and ``beta``:

* ``method`` in :data:`METHODS` (base, rocm, rlcm, ddpo, d3po, dpok);
* ``divergence`` in :data:`DIVERGENCES` (none, kl, js, hellinger, fisher); ``none`` for ROCM at beta = 0 and for
  every non-ROCM method;
* ``beta``: float, 0 for ROCM at beta = 0, > 0 for regularised ROCM, NaN for non-ROCM methods.

Conventions pinned here (they go into the README):

* **Cells** are ``mean ± std`` over training seeds from :func:`rocm_rlhf.stats.seed_summary`: per seed the mean
  over all its images, then the mean and the sample std (ddof = 1) of these per-seed means. With one seed (the base
  model) only the mean is shown. Numbers are rounded to ``decimals`` places (3 by default).
* **Bold** (LaTeX ``\\mathbf``, Markdown ``**``): the best mean of a column (Table 1) or of a row (the
  divergence x beta table); every cell whose *rounded* mean equals the best rounded mean is bold, so two cells that
  print the same number are both bold. "Best" is the highest mean unless the metric is declared lower-is-better.
* **Dagger** (``†``, LaTeX ``^{\\dagger}``) in Table 1: the arm is significantly better than *every* control arm
  on that metric: for each control, :func:`rocm_rlhf.stats.compare_all`'s paired test (per (prompt_id,
  sample_seed) unit, training seeds averaged; two-sided Wilcoxon) has ``p_holm < alpha`` and the mean difference has
  the right sign. Holm's family is, per metric, every (shown non-control arm) x (control arm) comparison, so the
  family size depends on the rows shown.
* **Row order**: base, then ROCM (beta = 0 first, then kl, js, hellinger, fisher, each by increasing beta), then the
  baselines in the order rlcm, ddpo, d3po, dpok (several arms of one method: by arm id).
* **Choosing beta** (:func:`choose_beta`): per divergence, the beta with the best mean *evaluation* quality over
  seeds, as the paper's sweep does. This selects on the same prompts and images that are then reported, so the
  reported quality of the chosen arm is optimistically biased (a winner's curse); a held-out selection split would
  remove the bias. Table 1 marks nothing about this: say it in the caption.
* Outputs are written atomically: ``<stem>.csv`` (machine readable, long: one row per shown cell), ``<stem>.tex``
  (a booktabs ``tabular`` without ``table`` environment or caption, for ``\\input``; needs ``\\usepackage{booktabs}``)
  and ``<stem>.md`` (a pipe table and a one-line legend).
* Bad input (missing columns or metrics, unknown methods or divergences, an arm with several methods, ROCM rows
  without beta, absent control arms, no ROCM rows where they are needed) raises one :class:`ValueError` naming what
  is wrong.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from .stats import REQUIRED_COLUMNS, compare_all, seed_summary
from .infra.utils import atomic_path

METHODS = ("base", "rocm", "rlcm", "ddpo", "d3po", "dpok")
"""Known methods, in the order of the rows of Table 1."""
BASELINES = ("rlcm", "ddpo", "d3po", "dpok")
DIVERGENCES = ("none", "kl", "js", "hellinger", "fisher")
"""Known divergences, in the order of rows and panels; ``none`` is ROCM at beta = 0 and every non-ROCM method."""
METHOD_LABELS = {"base": "Base", "rocm": "ROCM", "rlcm": "RLCM", "ddpo": "DDPO", "d3po": "D3PO", "dpok": "DPOK"}
DIVERGENCE_LABELS = {"none": "none", "kl": "KL", "js": "JS", "hellinger": "Hellinger", "fisher": "Fisher"}
ARM_ATTRIBUTES = ("method", "divergence", "beta")
SCORE_COLUMNS = (*REQUIRED_COLUMNS, *ARM_ATTRIBUTES)
DAGGER = "†"
MISSING = "–"
"""Shown in a cell of the divergence x beta table for a (divergence, beta) that was not run."""


# --------------------------------------------------------------------------------------------------------------
# validation, arms, labels
# --------------------------------------------------------------------------------------------------------------


def _as_list(x: str | Iterable[str]) -> list[str]:
    items = [x] if isinstance(x, str) else list(x)
    return list(dict.fromkeys(items))


def fmt_beta(beta: float) -> str:
    """A beta as in run ids and labels: 0.01 -> '0.01', 1e-05 -> '1e-05', 1.0 -> '1' (Python's ``:g``)."""
    return f"{float(beta):g}"


def check_scores(scores: pd.DataFrame, metrics: Iterable[str] = ()) -> pd.DataFrame:
    """Check that ``scores`` follows the score-table contract and holds every metric of ``metrics``; return it.

    The statistical checks (finite values, duplicates, one (arm, seed) per run) are :mod:`rocm_rlhf.stats`'s and
    happen when the table reaches it. Raises ValueError naming the first problem.
    """
    if not isinstance(scores, pd.DataFrame):
        raise ValueError(
            f"scores must be a pandas DataFrame (as read from results/scores/*.parquet), got {type(scores)}"
        )
    missing = [c for c in SCORE_COLUMNS if c not in scores.columns]
    if missing:
        raise ValueError(
            f"score table lacks column(s) {missing}; it needs {list(SCORE_COLUMNS)} (has {list(scores.columns)})"
        )
    if len(scores) == 0:
        raise ValueError("score table is empty: no scores to tabulate or plot")
    bad_m = sorted(set(scores["method"].astype(str)) - set(METHODS))
    if bad_m:
        raise ValueError(f"unknown method(s) {bad_m} in the score table; known methods: {list(METHODS)}")
    bad_d = sorted(set(scores["divergence"].astype(str)) - set(DIVERGENCES))
    if bad_d:
        raise ValueError(
            f"unknown divergence(s) {bad_d} in the score table; known: {list(DIVERGENCES)} "
            "('none' for beta = 0 and for non-ROCM methods)"
        )
    try:
        beta = scores["beta"].to_numpy(dtype=float)
    except (TypeError, ValueError) as err:
        raise ValueError(f"column 'beta' must be numeric (NaN for non-ROCM methods): {err}") from None
    rocm = (scores["method"] == "rocm").to_numpy()
    bad_b = rocm & ~(np.isfinite(beta) & (beta >= 0))
    if bad_b.any():
        arms = sorted(scores.loc[bad_b, "arm"].astype(str).unique())[:5]
        raise ValueError(f"ROCM arm(s) {arms} have a missing or negative beta; ROCM rows need beta >= 0 (0: none)")
    have = set(scores["metric"].astype(str))
    absent = [m for m in _as_list(metrics) if m not in have]
    if absent:
        raise ValueError(
            f"metric(s) {absent} are not in the score table (its metrics: {sorted(have)}); score them in the "
            "evaluation stage or choose metrics that exist"
        )
    return scores


def arm_label(method: str, divergence: str, beta: float) -> str:
    """Plain-text label of an arm: "Base", "ROCM (β=0)", "ROCM-KL (β=0.1)", "RLCM", ..."""
    if method == "rocm":
        if divergence == "none" or beta == 0:
            return "ROCM (β=0)"
        return f"ROCM-{DIVERGENCE_LABELS[divergence]} (β={fmt_beta(beta)})"
    return METHOD_LABELS.get(method, str(method))


def arm_order(meta: pd.DataFrame) -> pd.DataFrame:
    """``meta`` (indexed by arm, with columns method, divergence, beta) sorted into the paper's row order.

    Methods in :data:`METHODS` order (base, rocm, rlcm, ddpo, d3po, dpok); within ROCM beta = 0 first, then the
    divergences in :data:`DIVERGENCES` order, each by increasing beta; ties by arm id.
    """
    key = pd.DataFrame(
        {
            "m": meta["method"].map({m: i for i, m in enumerate(METHODS)}),
            "d": [
                0 if (m == "rocm" and (b == 0 or d == "none")) else DIVERGENCES.index(d)
                for m, d, b in zip(meta["method"], meta["divergence"], meta["beta"])
            ],
            "b": meta["beta"].astype(float).fillna(-1.0),
            "a": meta.index.astype(str),
        },
        index=meta.index,
    )
    return meta.loc[key.sort_values(["m", "d", "b", "a"]).index]


def arm_table(scores: pd.DataFrame) -> pd.DataFrame:
    """One row per arm, in the paper's row order, indexed by arm.

    Columns: method, divergence, beta, group ("base", "rocm" or "baseline") and label (plain text, e.g. "Base",
    "ROCM (β=0)", "ROCM-KL (β=0.1)", "RLCM"; a baseline with several arms is labelled by its arm id). An arm whose
    method, divergence or beta varies between its rows is an error.
    """
    check_scores(scores)
    arms = scores[["arm", *ARM_ATTRIBUTES]].drop_duplicates()  # NaN beta compares equal here
    multi = arms["arm"][arms["arm"].duplicated()].unique()
    if len(multi):
        raise ValueError(
            f"arm(s) {list(multi[:5])} have several (method, divergence, beta): an arm is one method with fixed "
            "hyperparameters; give differently configured runs different arm ids"
        )
    arms = arms.set_index("arm")
    arms["beta"] = arms["beta"].astype(float)
    arms["group"] = ["base" if m == "base" else "rocm" if m == "rocm" else "baseline" for m in arms["method"]]
    arms = arm_order(arms)
    per_method = arms.groupby("method")["group"].transform("size")
    labels = []
    for arm, row in arms.iterrows():
        if row["method"] != "rocm" and per_method[arm] > 1:
            labels.append(str(arm))
        else:
            labels.append(arm_label(row["method"], row["divergence"], row["beta"]))
    arms["label"] = labels
    dup = arms["label"][arms["label"].duplicated(keep=False)]
    if len(dup):
        arms.loc[dup.index, "label"] = dup.index.astype(str)
    arms.index.name = "arm"
    return arms


def _regularised(arms: pd.DataFrame) -> pd.DataFrame:
    """ROCM arms with a divergence and beta > 0."""
    return arms[(arms["method"] == "rocm") & (arms["divergence"] != "none") & (arms["beta"] > 0)]


def _no_rocm_error(arms: pd.DataFrame, what: str) -> ValueError:
    return ValueError(
        f"{what} needs regularised ROCM arms (method 'rocm' with a divergence other than 'none' and beta > 0), "
        f"but the score table has none (arms: {list(arms.index)}); pass the scores of the ROCM beta sweep"
    )


def choose_beta(scores: pd.DataFrame, quality_metric: str, *, lower_is_better: bool = False) -> dict[str, float]:
    """Per divergence, the beta whose arm has the best mean ``quality_metric`` over training seeds.

    The mean is :func:`rocm_rlhf.stats.seed_summary`'s (mean over seeds of the per-seed mean over images). Only
    regularised ROCM arms (divergence != none, beta > 0) are candidates; beta = 0 is never chosen. Ties go to the
    smaller beta. Returns ``{divergence: beta}`` in the order of :data:`DIVERGENCES`.

    This is how the paper picks beta, on the evaluation metric itself: the chosen arm's reported quality is
    therefore optimistic (selected and reported on the same images). Say so where the result is shown.
    """
    check_scores(scores, [quality_metric])
    arms = arm_table(scores)
    reg = _regularised(arms)
    if len(reg) == 0:
        raise _no_rocm_error(arms, "choose_beta")
    dup = reg.reset_index().duplicated(["divergence", "beta"], keep=False)
    if dup.any():
        raise ValueError(
            f"several arms share a (divergence, beta): {list(reg.index[dup.to_numpy()])}; choose_beta cannot tell "
            "them apart, pass the scores of one sweep"
        )
    sub = scores[(scores["metric"] == quality_metric) & scores["arm"].isin(reg.index)]
    summ = seed_summary(sub).set_index("arm")
    missing = [a for a in reg.index if a not in summ.index]
    if missing:
        raise ValueError(f"metric {quality_metric!r} was not scored for ROCM arm(s) {missing}")
    out: dict[str, float] = {}
    for div in DIVERGENCES:
        cand = reg[reg["divergence"] == div].sort_values("beta")
        if len(cand) == 0:
            continue
        means = summ.loc[cand.index, "mean"].to_numpy(dtype=float)
        i = int(np.argmin(means) if lower_is_better else np.argmax(means))  # first of ties = smaller beta
        out[div] = float(cand["beta"].iloc[i])
    return out


# --------------------------------------------------------------------------------------------------------------
# rendering
# --------------------------------------------------------------------------------------------------------------


def _stem(out_stem: str | os.PathLike) -> Path:
    """``out_stem`` without a known extension (so 'paper/table1.csv' and 'paper/table1' mean the same)."""
    p = Path(out_stem)
    if p.suffix in (".csv", ".tex", ".md", ".pdf", ".png"):
        p = p.with_suffix("")
    return p


def _write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def _write_csv(path: Path, df: pd.DataFrame) -> None:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)


def _num(x: float, decimals: int) -> str:
    return f"{x:.{decimals}f}"


def cell_text(
    mean: float,
    std: float,
    n_seeds: int,
    *,
    decimals: int = 3,
    bold: bool = False,
    mark: bool = False,
    style: str = "md",
) -> str:
    """One table cell: ``mean ± std`` (std omitted with one seed or NaN std), bold and dagger as asked.

    style "md": ``**0.700 ± 0.014**†``; style "tex": ``$\\mathbf{0.700 \\pm 0.014}^{\\dagger}$``; style "plain":
    ``0.700 ± 0.014`` (no markers).
    """
    show_std = n_seeds > 1 and std is not None and math.isfinite(std)
    if style == "tex":
        body = _num(mean, decimals) + (rf" \pm {_num(std, decimals)}" if show_std else "")
        if bold:
            body = rf"\mathbf{{{body}}}"
        if mark:
            body += r"^{\dagger}"
        return f"${body}$"
    body = _num(mean, decimals) + (f" ± {_num(std, decimals)}" if show_std else "")
    if style == "plain":
        return body
    if bold:
        body = f"**{body}**"
    return body + (DAGGER if mark else "")


_TEX_ESCAPES = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}


def tex_escape(text: str) -> str:
    """Escape LaTeX's special characters; β becomes ``$\\beta$``, ± ``$\\pm$``."""
    out = "".join(_TEX_ESCAPES.get(c, c) for c in str(text))
    return out.replace("β", r"$\beta$").replace("±", r"$\pm$")


def _md_escape(text: str) -> str:
    return str(text).replace("|", r"\|")


def _markdown(header: list[str], rows: list[list[str]], align: str) -> str:
    lines = [
        "| " + " | ".join(_md_escape(h) for h in header) + " |",
        "|" + "|".join(":---" if a == "l" else ":---:" for a in align) + "|",
    ]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _latex(header: list[str], rows: list[list[str]], align: str, midrules_before: Iterable[int] = ()) -> str:
    before = set(midrules_before)
    lines = [rf"\begin{{tabular}}{{{align}}}", r"\toprule", " & ".join(header) + r" \\", r"\midrule"]
    for i, r in enumerate(rows):
        if i in before and i > 0:
            lines.append(r"\midrule")
        lines.append(" & ".join(r) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def _best_flags(means: pd.Series, decimals: int, lower: bool) -> pd.Series:
    """True where the rounded mean equals the best rounded mean (NaN never best)."""
    ok = means.dropna()
    if len(ok) == 0:
        return pd.Series(False, index=means.index)
    best = ok.min() if lower else ok.max()
    target = _num(best, decimals)
    return means.map(lambda m: isinstance(m, float) and math.isfinite(m) and _num(m, decimals) == target).astype(bool)


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
    lower_is_better: Iterable[str] = (),
    alpha: float = 0.05,
    decimals: int = 3,
    n_boot: int = 10_000,
    rng_seed: int = 0,
) -> pd.DataFrame:
    """Table 1: methods (rows) x metrics (columns), cells ``mean ± std`` over training seeds.

    Rows: base, ROCM at beta = 0, regularised ROCM, baselines (module docstring). ``rocm_betas="best"`` shows each
    divergence at the beta of :func:`choose_beta` on ``quality_metric`` (optimistic; see there), ``"all"`` every
    ROCM arm. Control arms are always shown. Columns: ``quality_metric`` first if it is not among ``metrics``,
    then ``metrics`` in the given order; a ``↑`` (``↓`` for ``lower_is_better``) marks the better direction.

    Markers: bold = best in the column; dagger = significantly better than every control arm (Holm over, per
    metric, all shown non-control arms x controls, ``p_holm < alpha``; :func:`rocm_rlhf.stats.compare_all` with
    ``n_boot`` and ``rng_seed``).

    Writes ``<stem>.csv``, ``<stem>.tex``, ``<stem>.md``. Returns the CSV's table: one row per (arm, metric) in
    display order with columns arm, label, group, method, divergence, beta, metric, mean, std, n_seeds,
    n_images, best, better_than_controls, and per control ``c``: ``mean_diff_vs_<c>``, ``ci_low_vs_<c>``,
    ``ci_high_vs_<c>``, ``p_value_vs_<c>``, ``p_holm_vs_<c>`` (NaN on the control's own row).
    """
    mets = _as_list(metrics)
    if quality_metric not in mets:
        mets = [quality_metric, *mets]
    controls = _as_list(control_arms)
    if not controls:
        raise ValueError("table1 needs at least one control arm (e.g. control_arms=['base'])")
    if rocm_betas not in ("best", "all"):
        raise ValueError(f"rocm_betas must be 'best' or 'all', got {rocm_betas!r}")
    lower = set(_as_list(lower_is_better))
    check_scores(scores, mets)
    arms = arm_table(scores)
    absent = [c for c in controls if c not in arms.index]
    if absent:
        raise ValueError(f"control arm(s) {absent} are not in the score table (arms: {list(arms.index)})")

    if rocm_betas == "all" or len(_regularised(arms)) == 0:
        shown = set(arms.index)
    else:
        chosen = choose_beta(scores, quality_metric, lower_is_better=quality_metric in lower)
        reg = _regularised(arms)
        keep_reg = {a for a, r in reg.iterrows() if chosen.get(r["divergence"]) == r["beta"]}
        shown = set(arms.index.difference(reg.index)) | keep_reg | set(controls)
    arms = arms[arms.index.isin(shown)]
    sub = scores[scores["arm"].isin(arms.index) & scores["metric"].isin(mets)]
    for m in mets:
        lacking = sorted(set(arms.index) - set(sub.loc[sub["metric"] == m, "arm"]))
        if lacking:
            raise ValueError(f"metric {m!r} was not scored for arm(s) {lacking}; score every shown arm on it")

    summ = seed_summary(sub).set_index(["arm", "metric"])
    treatments = [a for a in arms.index if a not in controls]
    cmp = None
    if treatments:
        cmp = compare_all(sub, treatments, controls, mets, alpha=alpha, n_boot=n_boot, rng_seed=rng_seed)
        cmp = cmp.set_index(["arm_a", "arm_b", "metric"])

    rows = []
    for arm, a in arms.iterrows():
        for m in mets:
            s = summ.loc[(arm, m)]
            row = {
                "arm": arm,
                "label": a["label"],
                "group": a["group"],
                "method": a["method"],
                "divergence": a["divergence"],
                "beta": a["beta"],
                "metric": m,
                "mean": float(s["mean"]),
                "std": float(s["std"]),
                "n_seeds": int(s["n_seeds"]),
                "n_images": int(s["n_images"]),
            }
            better_all = arm not in controls and cmp is not None
            for c in controls:
                if cmp is not None and (arm, c, m) in cmp.index:
                    r = cmp.loc[(arm, c, m)]
                    vals = (r["mean_diff"], r["ci_low"], r["ci_high"], r["p_value"], r["p_holm"])
                    sign_ok = r["mean_diff"] < 0 if m in lower else r["mean_diff"] > 0
                    better_all = better_all and bool(r["significant"]) and bool(sign_ok)
                else:
                    vals = (np.nan,) * 5
                    better_all = False
                for name, v in zip(("mean_diff", "ci_low", "ci_high", "p_value", "p_holm"), vals):
                    row[f"{name}_vs_{c}"] = float(v)
            row["better_than_controls"] = bool(better_all)
            rows.append(row)
    long = pd.DataFrame(rows)
    long["best"] = False
    for m in mets:
        idx = long.index[long["metric"] == m]
        long.loc[idx, "best"] = _best_flags(long.loc[idx, "mean"], decimals, m in lower).to_numpy()
    first = [
        "arm",
        "label",
        "group",
        "method",
        "divergence",
        "beta",
        "metric",
        "mean",
        "std",
        "n_seeds",
        "n_images",
        "best",
        "better_than_controls",
    ]
    long = long[first + [c for c in long.columns if c not in first]]

    arrow = {m: ("↓" if m in lower else "↑") for m in mets}
    md_rows, tex_rows, group_starts = [], [], []
    prev_group = None
    for i, (arm, a) in enumerate(arms.iterrows()):
        if a["group"] != prev_group:
            group_starts.append(i)
            prev_group = a["group"]
        cells = long[long["arm"] == arm].set_index("metric")
        md, tex = [_md_escape(a["label"])], [tex_escape(a["label"])]
        for m in mets:
            c = cells.loc[m]
            kw = dict(decimals=decimals, bold=bool(c["best"]), mark=bool(c["better_than_controls"]))
            md.append(cell_text(c["mean"], c["std"], c["n_seeds"], style="md", **kw))
            tex.append(cell_text(c["mean"], c["std"], c["n_seeds"], style="tex", **kw))
        md_rows.append(md)
        tex_rows.append(tex)
    md_header = ["Method", *[f"{m} {arrow[m]}" for m in mets]]
    tex_arrow = {m: (r"$\downarrow$" if m in lower else r"$\uparrow$") for m in mets}
    tex_header = ["Method", *[f"{tex_escape(m)} {tex_arrow[m]}" for m in mets]]
    align = "l" + "c" * len(mets)
    legend = (
        f"Mean ± std over training seeds (std omitted with one seed). Bold: best per column. {DAGGER}: better than "
        f"every control ({', '.join(controls)}) in a paired Wilcoxon test per (prompt, sample seed), Holm-corrected "
        f"per metric, p < {alpha:g}."
    )
    if rocm_betas == "best" and len(_regularised(arms)):
        legend += f" ROCM beta chosen per divergence on the mean {quality_metric} of these images (optimistic)."
    stem = _stem(out_stem)
    _write_csv(stem.with_name(stem.name + ".csv"), long)
    _write_text(stem.with_name(stem.name + ".md"), _markdown(md_header, md_rows, align) + "\n" + legend + "\n")
    _write_text(stem.with_name(stem.name + ".tex"), _latex(tex_header, tex_rows, align, group_starts))
    return long


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
    """ROCM's ``metric`` per divergence (rows, in :data:`DIVERGENCES` order) and beta (columns, increasing).

    Cells ``mean ± std`` over training seeds; :data:`MISSING` where a (divergence, beta) was not run. The beta = 0
    arm (divergence "none") is the same unregularised run for every divergence: when present it fills the column
    beta = 0 of every row. Bold: the best cell of each row (the best beta of that divergence, beta = 0 included).

    Writes ``<stem>.csv``, ``<stem>.tex``, ``<stem>.md``. Returns the CSV's table, one row per filled cell of the
    displayed grid (the beta = 0 arm once per divergence row): divergence, beta, arm, mean, std, n_seeds, best.
    """
    check_scores(scores, [metric])
    arms = arm_table(scores)
    reg = _regularised(arms)
    if len(reg) == 0:
        raise _no_rocm_error(arms, "divergence_beta_table")
    zero = arms[(arms["method"] == "rocm") & ((arms["beta"] == 0) | (arms["divergence"] == "none"))]
    if len(zero) > 1:
        raise ValueError(f"several ROCM beta = 0 arms {list(zero.index)}: keep one")
    dup = reg.reset_index().duplicated(["divergence", "beta"], keep=False)
    if dup.any():
        raise ValueError(f"several arms share a (divergence, beta): {list(reg.index[dup.to_numpy()])}")
    use = [*zero.index, *reg.index]
    sub = scores[scores["arm"].isin(use) & (scores["metric"] == metric)]
    lacking = sorted(set(use) - set(sub["arm"]))
    if lacking:
        raise ValueError(f"metric {metric!r} was not scored for ROCM arm(s) {lacking}")
    summ = seed_summary(sub).set_index("arm")

    divs = [d for d in DIVERGENCES if d in set(reg["divergence"])]
    betas = sorted(set(reg["beta"]) | ({0.0} if len(zero) else set()))
    rows = []
    for d in divs:
        cells = [(zero.index[0], 0.0)] if len(zero) else []
        cells += [(a, float(r["beta"])) for a, r in reg[reg["divergence"] == d].sort_values("beta").iterrows()]
        for arm, b in cells:
            s = summ.loc[arm]
            rows.append(
                {
                    "divergence": d,
                    "beta": b,
                    "arm": arm,
                    "mean": float(s["mean"]),
                    "std": float(s["std"]),
                    "n_seeds": int(s["n_seeds"]),
                }
            )
    long = pd.DataFrame(rows)
    long["best"] = False
    for d in divs:
        idx = long.index[long["divergence"] == d]
        long.loc[idx, "best"] = _best_flags(long.loc[idx, "mean"], decimals, lower_is_better).to_numpy()

    md_rows, tex_rows = [], []
    for d in divs:
        cells = long[long["divergence"] == d].set_index("beta")
        md, tex = [DIVERGENCE_LABELS[d]], [DIVERGENCE_LABELS[d]]
        for b in betas:
            if b in cells.index:
                c = cells.loc[b]
                md.append(
                    cell_text(c["mean"], c["std"], c["n_seeds"], decimals=decimals, bold=bool(c["best"]), style="md")
                )
                tex.append(
                    cell_text(c["mean"], c["std"], c["n_seeds"], decimals=decimals, bold=bool(c["best"]), style="tex")
                )
            else:
                md.append(MISSING)
                tex.append("--")
        md_rows.append(md)
        tex_rows.append(tex)
    md_header = ["Divergence", *[f"β = {fmt_beta(b)}" for b in betas]]
    tex_header = ["Divergence", *[rf"$\beta = {fmt_beta(b)}$" for b in betas]]
    align = "l" + "c" * len(betas)
    legend = (
        f"ROCM, {metric} ({'lower' if lower_is_better else 'higher'} is better): mean ± std over training seeds. "
        "Bold: best beta per divergence. beta = 0 is the same unregularised run in every row."
    )
    stem = _stem(out_stem)
    _write_csv(stem.with_name(stem.name + ".csv"), long)
    _write_text(stem.with_name(stem.name + ".md"), _markdown(md_header, md_rows, align) + "\n" + legend + "\n")
    _write_text(stem.with_name(stem.name + ".tex"), _latex(tex_header, tex_rows, align))
    return long


__all__ = [
    "METHODS", "BASELINES", "DIVERGENCES", "METHOD_LABELS", "DIVERGENCE_LABELS", "SCORE_COLUMNS",
    "fmt_beta", "check_scores", "arm_label", "arm_order", "arm_table", "choose_beta", "cell_text", "tex_escape", "table1",
    "divergence_beta_table",
]  # fmt: skip
