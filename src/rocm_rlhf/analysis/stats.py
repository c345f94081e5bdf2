"""The statistics of the tables: seed summaries, paired comparisons per image, effect sizes, Holm's correction.

API: :func:`seed_summary` (per arm and metric, mean and std over training seeds), :func:`paired_differences`,
:func:`paired_test`, :func:`compare` and :func:`compare_all` (paired comparisons on the (prompt_id, sample_seed)
units, training seeds averaged, Holm-corrected per metric), :func:`bootstrap_means`, :func:`rank_biserial`,
:func:`cohen_dz` and :func:`holm`. Input: a score table (:mod:`rocm_rlhf.analysis.scores`), checked by its
validator. How the statistics are chosen: docs/method.md, section 'Evaluation, statistics, tables and figures'.
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd
from scipy import stats as _sps

from .scores import KEY_COLUMNS, UNIT, check_scores, name_list

WILCOXON_ZERO_METHOD = "wilcox"
"""Zero differences are discarded before ranking (Wilcoxon's original rule, scipy's default)."""

_BOOT_CHUNK_ELEMENTS = 4_000_000
"""Resampled indices drawn per block (32 MB of int64): bounds memory; fixed so that results depend only on the seed."""


# --------------------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------------------


def _arm_attributes(scores: pd.DataFrame) -> pd.DataFrame:
    """Extra columns constant within every arm (NaN counted as a value), one row per arm, indexed by arm."""
    extra = [c for c in scores.columns if c not in KEY_COLUMNS]
    if not extra:
        return pd.DataFrame(index=pd.Index(sorted(scores["arm"].unique()), name="arm"))
    sub = scores[["arm", *extra]].drop_duplicates()
    keep = [c for c in extra if not sub.groupby("arm")[c].nunique(dropna=False).gt(1).any()]
    return scores[["arm", *keep]].drop_duplicates("arm").set_index("arm").sort_index()


def _unit_means(scores: pd.DataFrame, metric: str, arm: str) -> tuple[pd.Series, int]:
    """One arm's value per pairing unit, averaged over its training seeds, and its number of seeds.

    Validated input assumed. Raises if the arm or the metric is absent, or if the arm's seeds did not all score
    the same units.
    """
    sel = scores[(scores["arm"] == arm) & (scores["metric"] == metric)]
    if len(sel) == 0:
        if not (scores["arm"] == arm).any():
            raise ValueError(f"arm {arm!r} is not in the score table (arms: {sorted(scores['arm'].unique())})")
        raise ValueError(
            f"metric {metric!r} was not scored for arm {arm!r} "
            f"(its metrics: {sorted(scores.loc[scores['arm'] == arm, 'metric'].unique())})"
        )
    per_unit = sel.groupby(UNIT, sort=True)["value"].agg(["mean", "size"])
    n_seeds = int(sel["seed"].nunique())
    if (per_unit["size"] != n_seeds).any():
        counts = sel.groupby("seed").size().to_dict()
        raise ValueError(
            f"arm {arm!r}, metric {metric!r}: its {n_seeds} training seeds did not score the same (prompt_id, "
            f"sample_seed) units (images per seed: {counts}); rescore the incomplete runs or drop them"
        )
    out = per_unit["mean"].astype(float)
    out.name = arm
    return out, n_seeds


def _paired_unit_means(
    scores: pd.DataFrame, metric: str, arm_a: str, arm_b: str
) -> tuple[pd.Series, pd.Series, int, int]:
    """Both arms' seed-averaged values on the same units (same index order), and their numbers of seeds."""
    a, n_a = _unit_means(scores, metric, arm_a)
    b, n_b = _unit_means(scores, metric, arm_b)
    only_a = a.index.difference(b.index)
    only_b = b.index.difference(a.index)
    if len(only_a) or len(only_b):
        raise ValueError(
            f"metric {metric!r}: arms {arm_a!r} and {arm_b!r} were not scored on the same (prompt_id, sample_seed) "
            f"units: {len(only_a)} only in {arm_a!r} (e.g. {list(only_a[:3])}), {len(only_b)} only in {arm_b!r} "
            f"(e.g. {list(only_b[:3])}); evaluate both arms on the same prompts and sample seeds"
        )
    return a, b.reindex(a.index), n_a, n_b


# --------------------------------------------------------------------------------------------------------------
# summaries across training seeds
# --------------------------------------------------------------------------------------------------------------


def seed_summary(scores: pd.DataFrame) -> pd.DataFrame:
    """Per (arm, metric): mean and spread across training seeds.

    For each training seed, the seed's score is the mean over all its images (every image, i.e. every
    (prompt_id, sample_seed) unit, weighs the same; with the same number of sample seeds per prompt this is the
    mean over prompts of the per-prompt means). Then across seeds:

    * ``mean``: the mean of the per-seed means (equals :func:`compare`'s ``mean_a`` when all seeds scored the same
      units);
    * ``std``: their sample standard deviation, ddof=1 (NaN with a single seed, e.g. the base model);
    * ``n_seeds``, ``n_images`` (all images of the arm over all seeds, for that metric) and ``n_prompts``.

    Arm attributes (extra columns constant within each arm, e.g. method, divergence, beta) are carried.
    Rows sorted by arm, then metric.
    """
    scores = check_scores(scores, arm_attributes=False)
    per_seed = scores.groupby(["arm", "metric", "seed"], sort=True)["value"].mean().rename("seed_mean").reset_index()
    agg = per_seed.groupby(["arm", "metric"], sort=True)["seed_mean"].agg(
        mean="mean", std=lambda s: s.std(ddof=1) if len(s) > 1 else np.nan, n_seeds="size"
    )
    counts = scores.groupby(["arm", "metric"], sort=True).agg(
        n_images=("value", "size"), n_prompts=("prompt_id", "nunique")
    )
    out = agg.join(counts).reset_index()
    out["n_seeds"] = out["n_seeds"].astype(int)
    attrs = _arm_attributes(scores)
    if len(attrs.columns):
        out = out.merge(attrs, left_on="arm", right_index=True, how="left")
    return out.reset_index(drop=True)


# --------------------------------------------------------------------------------------------------------------
# paired comparisons
# --------------------------------------------------------------------------------------------------------------


def paired_differences(scores: pd.DataFrame, metric: str, arm_a: str, arm_b: str) -> pd.Series:
    """Per pairing unit (prompt_id, sample_seed): arm_a's value minus arm_b's, each averaged over its training seeds.

    Returns a float Series indexed by the MultiIndex (prompt_id, sample_seed), sorted, named ``"arm_a - arm_b"``.
    Raises ValueError, naming the arms, if an arm or the metric is absent, if the two arms did not score the same
    units (the message counts the units missing on each side and shows a few), or if an arm's training seeds
    scored different units.
    """
    scores = check_scores(scores, arm_attributes=False)
    a, b, _, _ = _paired_unit_means(scores, metric, arm_a, arm_b)
    d = a - b
    d.name = f"{arm_a} - {arm_b}"
    return d


def rank_biserial(differences: Sequence[float] | np.ndarray) -> float:
    """Matched-pairs rank-biserial correlation (Kerby 2014, "simple difference formula").

    ``r = (T+ - T-) / (T+ + T-)`` where T+ (T-) is the sum of the ranks of |d| over the positive (negative)
    differences; zero differences are discarded (as in the Wilcoxon test with zero_method="wilcox") and tied |d|
    get average ranks. In [-1, 1]; +1: every non-zero difference is positive. Defined as 0 when every difference is
    zero (no evidence either way).
    """
    d = np.asarray(differences, dtype=float)
    d = d[d != 0]
    if d.size == 0:
        return 0.0
    ranks = _sps.rankdata(np.abs(d), method="average")
    t_plus = ranks[d > 0].sum()
    t_minus = ranks[d < 0].sum()
    return float((t_plus - t_minus) / (t_plus + t_minus))


def cohen_dz(differences: Sequence[float] | np.ndarray) -> float:
    """Cohen's d_z = mean(d) / sd(d) with the sample sd (ddof=1), over all differences (zeros included).

    Defined as 0 when every difference is zero, as +-inf when all differences are equal and non-zero, and NaN with
    fewer than two differences.
    """
    d = np.asarray(differences, dtype=float)
    if d.size < 2:
        return float("nan")
    m = d.mean()
    sd = d.std(ddof=1)
    if sd == 0:
        return 0.0 if m == 0 else float(np.sign(m) * np.inf)
    return float(m / sd)


def bootstrap_means(differences: Sequence[float] | np.ndarray, n_boot: int = 10_000, rng_seed: int = 0) -> np.ndarray:
    """``n_boot`` bootstrap replicates of the mean of ``differences`` (units resampled with replacement).

    Vectorised: index blocks of shape (block, n) are drawn with ``numpy.random.default_rng(rng_seed).integers``
    and averaged in one go; the block size is a fixed constant, so the replicates depend only on the data and
    ``rng_seed``.
    """
    d = np.asarray(differences, dtype=float)
    n = d.size
    if n == 0:
        raise ValueError("cannot bootstrap an empty set of differences")
    if int(n_boot) < 1:
        raise ValueError(f"n_boot must be a positive integer, got {n_boot}")
    n_boot = int(n_boot)
    rng = np.random.default_rng(rng_seed)
    block = max(1, _BOOT_CHUNK_ELEMENTS // n)
    out = np.empty(n_boot)
    for start in range(0, n_boot, block):  # blocks of resamples, not a loop over resamples
        stop = min(n_boot, start + block)
        idx = rng.integers(0, n, size=(stop - start, n))
        out[start:stop] = d[idx].mean(axis=1)
    return out


def paired_test(
    differences: Sequence[float] | np.ndarray, n_boot: int = 10_000, ci: float = 0.95, rng_seed: int = 0
) -> dict[str, Any]:
    """Statistics of a vector of paired differences d (one per pairing unit, treatment minus control).

    Returns a dict with

    * ``mean_diff``: mean(d);
    * ``ci_low``, ``ci_high``: percentile bootstrap CI of mean(d) at level ``ci``: the ``(1-ci)/2`` and
      ``(1+ci)/2`` quantiles (numpy's default linear interpolation) of :func:`bootstrap_means`;
    * ``p_value``: two-sided Wilcoxon signed-rank test, ``scipy.stats.wilcoxon(d, zero_method="wilcox",
      correction=False, alternative="two-sided", method="auto")``: zero differences are discarded, ties get
      average ranks; scipy uses the exact null distribution for at most 50 differences without ties or zeros, an
      exact permutation distribution for at most 13 with ties or zeros, and the tie-corrected normal
      approximation otherwise. p = 1 when every difference is zero;
    * ``wilcoxon_stat``: min(T+, T-), scipy's two-sided statistic (NaN when every difference is zero);
    * ``rank_biserial`` (:func:`rank_biserial`) and ``d_z`` (:func:`cohen_dz`);
    * ``n_pairs`` (all units) and ``n_nonzero`` (units with a non-zero difference, those the Wilcoxon test uses).

    At least two differences are required.
    """
    d = np.asarray(differences, dtype=float).ravel()
    if d.size < 2:
        raise ValueError(f"a paired test needs at least 2 pairing units, got {d.size}")
    if not np.all(np.isfinite(d)):
        raise ValueError("differences contain NaN or infinite values")
    if not 0 < ci < 1:
        raise ValueError(f"ci must be in (0, 1), e.g. 0.95, got {ci}")
    boot = bootstrap_means(d, n_boot=n_boot, rng_seed=rng_seed)
    lo, hi = np.quantile(boot, [(1 - ci) / 2, (1 + ci) / 2])
    n_nonzero = int(np.count_nonzero(d))
    if n_nonzero == 0:
        p, w = 1.0, float("nan")
    else:
        res = _sps.wilcoxon(
            d, zero_method=WILCOXON_ZERO_METHOD, correction=False, alternative="two-sided", method="auto"
        )
        p, w = float(res.pvalue), float(res.statistic)
    return {
        "mean_diff": float(d.mean()),
        "ci_low": float(lo),
        "ci_high": float(hi),
        "p_value": p,
        "wilcoxon_stat": w,
        "rank_biserial": rank_biserial(d),
        "d_z": cohen_dz(d),
        "n_pairs": int(d.size),
        "n_nonzero": n_nonzero,
    }


def compare(
    scores: pd.DataFrame,
    metric: str,
    arm_a: str,
    arm_b: str,
    n_boot: int = 10_000,
    ci: float = 0.95,
    rng_seed: int = 0,
) -> dict[str, Any]:
    """Paired comparison of arm_a (treatment) against arm_b (control) on one metric.

    The differences are :func:`paired_differences` (per unit, each arm averaged over its training seeds, a - b);
    the statistics are :func:`paired_test`'s, plus ``metric``, ``arm_a``, ``arm_b``, ``mean_a`` and ``mean_b``
    (each arm's mean over units of its seed-averaged values; ``mean_a - mean_b == mean_diff``), ``n_seeds_a`` and
    ``n_seeds_b``, and ``ci`` (the CI level).
    """
    scores = check_scores(scores, arm_attributes=False)
    return _compare(scores, metric, arm_a, arm_b, n_boot=n_boot, ci=ci, rng_seed=rng_seed)


def _compare(scores: pd.DataFrame, metric: str, arm_a: str, arm_b: str, **kw: Any) -> dict[str, Any]:
    """:func:`compare` on an already validated table."""
    a, b, n_a, n_b = _paired_unit_means(scores, metric, arm_a, arm_b)
    out: dict[str, Any] = {
        "metric": metric,
        "arm_a": arm_a,
        "arm_b": arm_b,
        "mean_a": float(a.mean()),
        "mean_b": float(b.mean()),
        "n_seeds_a": n_a,
        "n_seeds_b": n_b,
        "ci": float(kw.get("ci", 0.95)),
    }
    out.update(paired_test((a - b).to_numpy(), **kw))
    return out


# --------------------------------------------------------------------------------------------------------------
# multiple comparisons
# --------------------------------------------------------------------------------------------------------------


def holm(pvalues: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm-Bonferroni step-down adjusted p-values, in the input's order and shape.

    With the m non-NaN p-values sorted ascending, p_(1) <= ... <= p_(m):
    ``adj_(i) = min(1, max_{j <= i} (m - j + 1) * p_(j))``. Rejecting the hypotheses with adj <= alpha is exactly
    Holm's procedure at level alpha. Properties: adj >= p, adj is monotone in p, adj_(1) = min(1, m * p_(1))
    (Bonferroni for the smallest p), adj <= min(1, m * p) everywhere. Tied p-values get equal adjusted values.

    NaN: a NaN p-value (a comparison that could not be tested) stays NaN and is not counted in the family size m.
    Values outside [0, 1] raise ValueError.
    """
    p = np.asarray(pvalues, dtype=float)
    flat = p.ravel()
    ok = ~np.isnan(flat)
    if np.any((flat[ok] < 0) | (flat[ok] > 1)):
        bad = flat[ok][(flat[ok] < 0) | (flat[ok] > 1)]
        raise ValueError(f"p-values must lie in [0, 1] (or be NaN), got {bad[:5]}")
    out = np.full_like(flat, np.nan)
    q = flat[ok]
    m = q.size
    if m:
        order = np.argsort(q, kind="stable")
        stepped = (m - np.arange(m)) * q[order]
        adj_sorted = np.minimum(1.0, np.maximum.accumulate(stepped))
        adj = np.empty(m)
        adj[order] = adj_sorted
        out[ok] = adj
    return out.reshape(p.shape)


def compare_all(
    scores: pd.DataFrame,
    treatments: str | Iterable[str],
    controls: str | Iterable[str],
    metrics: str | Iterable[str] | None = None,
    alpha: float = 0.05,
    **kw: Any,
) -> pd.DataFrame:
    """Every treatment arm against every control arm for every metric: one row per comparison.

    * Pairs with treatment == control are skipped; a pair whose mirror image (control, treatment) was already
      compared is skipped too (it is the same test with the sign flipped, and would double-count in the family).
    * ``metrics=None`` means every metric in the table (sorted).
    * ``kw`` goes to :func:`compare` (n_boot, ci, rng_seed); every comparison uses the same ``rng_seed``.
    * ``p_holm``: :func:`holm` within each metric's **family = all comparisons made for that metric** (every
      treatment x control pair kept above). ``significant = p_holm < alpha`` (alpha = 0.05 by default).
    * Arm attributes (extra columns constant within each arm) are carried with suffixes ``_a`` and ``_b``.

    Columns: metric, arm_a, arm_b, mean_a, mean_b, mean_diff, ci_low, ci_high, ci, p_value, p_holm, significant,
    rank_biserial, d_z, wilcoxon_stat, n_pairs, n_nonzero, n_seeds_a, n_seeds_b, then the carried attributes.
    Rows in the order metric, treatment, control as given.
    """
    scores = check_scores(scores, arm_attributes=False)
    treat = name_list(treatments)
    ctrl = name_list(controls)
    if not treat or not ctrl:
        raise ValueError("compare_all needs at least one treatment arm and one control arm")
    arms = set(scores["arm"].unique())
    absent = [a for a in [*treat, *ctrl] if a not in arms]
    if absent:
        raise ValueError(f"arm(s) {absent} are not in the score table (arms: {sorted(arms)})")
    mets = sorted(scores["metric"].unique()) if metrics is None else name_list(metrics)
    unknown = sorted(set(kw) - {"n_boot", "ci", "rng_seed"})
    if unknown:
        raise ValueError(f"compare_all passes only n_boot, ci and rng_seed to compare(); unknown: {unknown}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    pairs: list[tuple[str, str]] = []
    for a in treat:
        for b in ctrl:
            if a != b and (b, a) not in pairs:
                pairs.append((a, b))
    if not pairs:
        raise ValueError(f"no comparison left: treatments {treat} and controls {ctrl} only pair arms with themselves")
    rows = [_compare(scores, m, a, b, **kw) for m in mets for a, b in pairs]
    cols = [
        "metric", "arm_a", "arm_b", "mean_a", "mean_b", "mean_diff", "ci_low", "ci_high", "ci", "p_value",
        "p_holm", "significant", "rank_biserial", "d_z", "wilcoxon_stat", "n_pairs", "n_nonzero", "n_seeds_a",
        "n_seeds_b",
    ]  # fmt: skip
    out = pd.DataFrame(rows)
    out["p_holm"] = np.nan
    for _, idx in out.groupby("metric", sort=False).groups.items():
        out.loc[idx, "p_holm"] = holm(out.loc[idx, "p_value"].to_numpy())
    out["significant"] = out["p_holm"] < alpha
    out = out[cols]
    attrs = _arm_attributes(scores)
    if len(attrs.columns):
        out = out.merge(attrs.add_suffix("_a"), left_on="arm_a", right_index=True, how="left")
        out = out.merge(attrs.add_suffix("_b"), left_on="arm_b", right_index=True, how="left")
    return out.reset_index(drop=True)
