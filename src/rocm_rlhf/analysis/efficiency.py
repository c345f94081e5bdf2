"""Efficiency in held-out quality: how many device-hours each arm needs to reach fixed fractions of the best held-out
score any arm reaches, from the training runs' held-out probe (``curve.csv``, :func:`.logs.load_curves`).

A target is ``start + f (best - start)``: ``start`` the untrained LCM's probe value (step 0 of an LCM run, the same
for every LCM run), ``best`` the highest seed-mean curve value of any shown arm at any probe, ``f`` a fraction.
A run reaches it at the first probe at or above it, the device-hours interpolated linearly from the probe before
(0 if it starts there: a diffusion baseline starts from the base diffusion model, which may already score above a
target; the table text says "at start"); never reaching it is NaN. API: :func:`shown_arms`, :func:`hours_to_target`,
:func:`efficiency_table`, :func:`learning_table`, :func:`start_value` (the untrained LCM's probe value) (does each arm improve on held-out prompts, start to end).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from .. import runs
from .arms import adaptive_arms, arm_order, regularised, row_label

FRACTIONS = (0.5, 0.9)
"""The default fractions of the best improvement the table reports."""


def shown_arms(frame: pd.DataFrame, chosen_betas: Mapping[str, float] | None) -> pd.DataFrame:
    """The arms of training curves (logs or probe curves) that the efficiency figure and table show, in the paper's
    row order, indexed by arm: ROCM at beta = 0, each divergence at ``chosen_betas[divergence]`` (matched by
    canonical text), the score-function variants' arms (those reported: their chosen betas) and every baseline;
    untrained arms and adaptive-beta arms (their own figure,
    :func:`rocm_rlhf.analysis.figures.fig_adaptive_beta`) are left out. ``chosen_betas=None`` shows a divergence
    logged at a single beta and refuses several (pick one)."""
    lg = frame[~frame["method"].isin(runs.UNTRAINED) & ~frame["arm"].isin(adaptive_arms(frame["arm"].unique()))]
    if len(lg) == 0:
        raise ValueError("the curves hold no training run (only untrained arms)")
    meta = lg[["arm", "method", "divergence", "beta"]].drop_duplicates("arm").set_index("arm")
    reg = regularised(meta)
    keep = [a for a in meta.index if a not in reg.index]
    if chosen_betas is None:
        for d, grp in reg.groupby("divergence"):
            if grp["beta"].nunique() > 1:
                raise ValueError(
                    f"the logs hold several betas for divergence {d!r} ({sorted(grp['beta'])}); pass "
                    "chosen_betas={divergence: beta}, e.g. choose_beta(scores, quality_metric), to pick one line"
                )
        keep += list(reg.index)
    else:
        for d, b in chosen_betas.items():
            hit = reg[(reg["divergence"] == d) & (reg["beta"].map(runs.fmt_beta) == runs.fmt_beta(b))]
            if len(hit) == 0:
                have = sorted(reg.loc[reg["divergence"] == d, "beta"])
                raise ValueError(
                    f"chosen beta {runs.fmt_beta(b)} for divergence {d!r} is not in the logs (logged betas: {have})"
                )
            keep += list(hit.index)
    return arm_order(meta.loc[keep])


def hours_to_target(run_curve: pd.DataFrame, target: float, x: str = "device_hours") -> float:
    """``x`` (device-hours, or reward queries) at which one run's probe curve (rows of one metric, any order) first
    reaches ``target``: linear interpolation between the probe below and the first at or above it; 0 if the first
    probe is already there; NaN if no probe reaches it."""
    c = run_curve.sort_values("step")
    xs, ys = c[x].to_numpy(dtype=float), c["mean"].to_numpy(dtype=float)
    hit = np.flatnonzero(ys >= target)
    if len(hit) == 0:
        return float("nan")
    i = int(hit[0])
    if i == 0:
        return float(xs[0])
    x0, x1, y0, y1 = xs[i - 1], xs[i], ys[i - 1], ys[i]
    return float(x0 + (target - y0) / (y1 - y0) * (x1 - x0))


def start_value(curves: pd.DataFrame, metric: str) -> float:
    """The untrained LCM's probe value of ``metric``: step 0 of the LCM runs (identical across them)."""
    lcm = curves[(curves["metric"] == metric) & (curves["step"] == 0)
                 & curves["method"].map(lambda m: runs.generator(m) == "lcm")]
    if len(lcm) == 0:
        raise ValueError(f"no LCM run has a step-0 probe of {metric!r}: the start of the targets is unknown")
    return float(lcm["mean"].mean())


def _seed_mean_curve(arm_curve: pd.DataFrame) -> pd.Series:
    """The mean over the arm's runs of the probe value at each probed step."""
    return arm_curve.groupby("step")["mean"].mean()


def _ratio_ci(a: np.ndarray, b: np.ndarray, n_boot: int, rng: np.random.Generator,
              level: float = 0.95) -> tuple[float, float]:
    """Percentile CI of mean(a) / mean(b), resampling the seeds of each arm independently; NaN without two seeds
    on each side or with a run that never reached the target."""
    if len(a) < 2 or len(b) < 2 or not (np.isfinite(a).all() and np.isfinite(b).all()):
        return float("nan"), float("nan")
    ra = a[rng.integers(0, len(a), (n_boot, len(a)))].mean(1)
    rb = b[rng.integers(0, len(b), (n_boot, len(b)))].mean(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = ra / rb
    r = r[np.isfinite(r)]
    if len(r) == 0:
        return float("nan"), float("nan")
    return float(np.quantile(r, (1 - level) / 2)), float(np.quantile(r, (1 + level) / 2))


def efficiency_table(curves: pd.DataFrame, metrics: Sequence[str], reference_arm: str, *,
                     chosen_betas: Mapping[str, float] | None = None, fractions: Sequence[float] = FRACTIONS,
                     n_boot: int = 10_000, rng_seed: int = 0) -> pd.DataFrame:
    """Per shown arm (:func:`shown_arms`), metric and fraction: the device-hours (and reward queries) to reach the
    target (module docstring), mean over the arm's runs, how many runs reached it, and the ratio of
    ``reference_arm``'s mean device-hours to this arm's with a bootstrap CI over seeds (< 1: the reference is
    faster). Columns: arm, label, metric, fraction, start, best, target, n_runs, n_reached, hours_mean,
    queries_mean, ratio_ref, ratio_ci_low, ratio_ci_high."""
    arms = shown_arms(curves, chosen_betas)
    if reference_arm not in arms.index:
        raise ValueError(f"reference arm {reference_arm!r} is not among the shown arms {list(arms.index)}")
    rng = np.random.default_rng(rng_seed)
    rows = []
    for metric in metrics:
        sub = curves[curves["metric"] == metric]
        if len(sub) == 0:
            raise ValueError(f"no probe rows of metric {metric!r}; probed: {sorted(curves['metric'].unique())}")
        start = start_value(curves, metric)
        best = max(_seed_mean_curve(sub[sub["arm"] == a]).max() for a in arms.index)
        for f in fractions:
            target = start + f * (best - start)
            per_arm = {}
            for arm in arms.index:
                runs_of = sub[sub["arm"] == arm].groupby("run_id")
                per_arm[arm] = (np.array([hours_to_target(g, target) for _, g in runs_of]),
                                np.array([hours_to_target(g, target, "reward_queries") for _, g in runs_of]))
            ref = per_arm[reference_arm][0]
            for arm, row in arms.iterrows():
                hours, queries = per_arm[arm]
                reached = np.isfinite(hours)
                mean_h = float(hours.mean()) if reached.all() else float("nan")
                ratio = float(ref.mean() / mean_h) if np.isfinite(ref).all() and mean_h > 0 else float("nan")
                # the reference against itself: 1 by definition, no interval
                lo, hi = (float("nan"),) * 2 if arm == reference_arm else _ratio_ci(ref, hours, n_boot, rng)
                rows.append({"arm": arm, "label": row_label(arm, row),
                             "metric": metric, "fraction": float(f), "start": start, "best": float(best),
                             "target": float(target), "n_runs": int(len(hours)), "n_reached": int(reached.sum()),
                             "hours_mean": mean_h,
                             "queries_mean": float(queries.mean()) if reached.all() else float("nan"),
                             "ratio_ref": ratio, "ratio_ci_low": lo, "ratio_ci_high": hi})
    return pd.DataFrame(rows)


def learning_table(curves: pd.DataFrame, metrics: Sequence[str], *,
                   chosen_betas: Mapping[str, float] | None = None, level: float = 0.95) -> pd.DataFrame:
    """Whether each shown arm learns, on held-out prompts: per arm and metric, the probe value at step 0 and at the
    run's last probe (means over its runs), their difference with a t-interval over runs (NaN with one run), and
    how many runs ended above their start. Columns: arm, label, metric, n_runs, start, end, change, change_ci_low,
    change_ci_high, n_improved."""
    from .stats import t_interval

    arms = shown_arms(curves, chosen_betas)
    rows = []
    for metric in metrics:
        sub = curves[curves["metric"] == metric]
        if len(sub) == 0:
            raise ValueError(f"no probe rows of metric {metric!r}; probed: {sorted(curves['metric'].unique())}")
        for arm, row in arms.iterrows():
            starts, ends = [], []
            for _, g in sub[sub["arm"] == arm].groupby("run_id"):
                g = g.sort_values("step")
                if g["step"].iloc[0] != 0:
                    raise ValueError(f"run {g['run_id'].iloc[0]} has no step-0 probe of {metric!r}")
                starts.append(float(g["mean"].iloc[0]))
                ends.append(float(g["mean"].iloc[-1]))
            change = np.array(ends) - np.array(starts)
            n = len(change)
            lo, hi = t_interval(change.mean(), change.std(ddof=1) if n > 1 else np.nan, n, level)
            rows.append({"arm": arm, "label": row_label(arm, row),
                         "metric": metric, "n_runs": n, "start": float(np.mean(starts)), "end": float(np.mean(ends)),
                         "change": float(change.mean()), "change_ci_low": float(lo), "change_ci_high": float(hi),
                         "n_improved": int((change > 0).sum())})
    return pd.DataFrame(rows)
