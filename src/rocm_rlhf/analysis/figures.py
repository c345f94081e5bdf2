"""The paper's figures: the beta sweep (reward hacking), training efficiency, training curves, the divergence
gallery; and beyond the paper, the adaptive beta and rewards without gradients.

API: :func:`fig_beta_sweep` (from the score table), :func:`fig_efficiency`, :func:`fig_training_curves` and
:func:`fig_adaptive_beta` (from :func:`rocm_rlhf.analysis.logs.load_training_logs`), :func:`fig_score_function` (from
the probe curves), :func:`fig_divergence_gallery` with :func:`load_gallery_images`,
and :func:`save_figure`; helpers :func:`~.stats.t_interval` (the 95 % interval of a mean over seeds) and :func:`smooth_steps`
(the moving average of training curves). Each figure function writes ``<stem>.pdf`` and ``<stem>.png``
reproducibly and returns a :class:`SavedFigure`; every arm is drawn in its style of :mod:`rocm_rlhf.analysis.style`.
Sizes, styles and how seeds are drawn: docs/method.md, section 'Evaluation, statistics, tables and figures' (Figures).
"""

from __future__ import annotations

import math
import os
import textwrap
from pathlib import Path
from typing import Mapping, NamedTuple, Sequence

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties
from matplotlib.legend_handler import HandlerTuple
from matplotlib.lines import Line2D
from matplotlib.textpath import TextToPath
from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, NullFormatter, NullLocator

from .. import runs
from ..infra.utils import atomic_path
from .arms import arm_order, arm_table, label_of, regularised, row_label, sweep_arms, unregularised
from .logs import check_logs, mean_over_seeds
from .render import out_stem as _out_stem
from .scores import check_scores
from .stats import seed_summary, t_interval
from .style import arm_style, beta_styles, legend_label_seeds

COLUMN_WIDTH = 3.3
"""Single-column figure width in inches."""
TEXT_WIDTH = 6.9
"""Full-width (two-column) figure width in inches."""
DPI = 300
"""PNG resolution (dots per inch)."""

STYLE = {
    "font.size": 8,
    "axes.labelsize": 8,
    "axes.titlesize": 8,
    "legend.fontsize": 7,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "lines.linewidth": 1.2,
    "lines.markersize": 4,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "pdf.fonttype": 42,
    "ps.fonttype": 42,
    "svg.hashsalt": "rocm-rlhf",
    "legend.frameon": False,
}
"""rcParams used while a figure is built and saved (a context: global settings are left alone)."""


class SavedFigure(NamedTuple):
    """What a figure function wrote: the PDF and PNG paths, and the matplotlib figure (to inspect its axes)."""

    pdf: Path
    png: Path
    figure: Figure


def save_figure(fig: Figure, out_stem: str | os.PathLike) -> SavedFigure:
    """Write ``<stem>.pdf`` and ``<stem>.png`` (DPI dots per inch) atomically, reproducibly; return the paths."""
    stem = _out_stem(out_stem)
    pdf = stem.with_name(stem.name + ".pdf")
    png = stem.with_name(stem.name + ".png")
    with matplotlib.rc_context(STYLE):
        with atomic_path(pdf) as tmp:
            fig.savefig(tmp, format="pdf", metadata={"CreationDate": None, "ModDate": None, "Producer": None})
        with atomic_path(png) as tmp:
            fig.savefig(tmp, format="png", dpi=DPI, metadata={"Software": None})
    return SavedFigure(pdf, png, fig)


def _new_figure(width: float, height: float) -> Figure:
    if not (width > 0 and height > 0):
        raise ValueError(f"figure size must be positive, got {width} x {height} in")
    return Figure(figsize=(width, height), layout="constrained")


def _mark_indices(ax, x, n_marks: int, phase: float) -> list[int] | None:
    """Indices of ``x`` to mark: all if there are at most ``n_marks`` points, else the points nearest to
    ``n_marks`` positions evenly spaced over x as the axis shows it (log10 on a log axis), shifted by ``phase``
    (0 to 1) of a spacing, so that the markers of several lines do not sit on top of each other."""
    x = np.asarray(x, dtype=float)
    if len(x) <= n_marks:
        return None
    t = np.log10(np.where(x > 0, x, np.nan)) if ax.get_xscale() == "log" else x
    ok = np.flatnonzero(np.isfinite(t))
    if len(ok) == 0:
        return None
    lo, hi = t[ok].min(), t[ok].max()
    targets = lo + (hi - lo) * (np.arange(n_marks) + phase % 1.0) / n_marks
    return sorted({int(ok[np.argmin(np.abs(t[ok] - v))]) for v in targets})


def _plot_band(ax, x, mean, lo, hi, st: dict, label: str | None, n_marks: int = 8, phase: float = 0.0) -> None:
    """The mean line (about ``n_marks`` points marked, evenly over the x axis as shown, see :func:`_mark_indices`;
    set the axis scale first) and a light band of its colour between lo and hi (none where they are NaN, e.g.
    with one seed)."""
    ax.plot(x, mean, label=label, markevery=_mark_indices(ax, x, n_marks, phase), **st)
    lo, hi = np.asarray(lo, dtype=float), np.asarray(hi, dtype=float)
    if (np.isfinite(lo) & np.isfinite(hi)).any():
        ax.fill_between(x, lo, hi, color=st["color"], alpha=0.2, linewidth=0)


def smooth_steps(y, k: int) -> np.ndarray:
    """Centred moving average over ``k`` consecutive logged steps (k odd; k = 1 leaves y as it is); at the ends the
    window shrinks symmetrically (point i averages y[i-h .. i+h], h = min(k // 2, i, n-1-i)), so a linear trend is
    kept exactly and the first and last points are the logged ones. NaN values are skipped in the averages."""
    if k < 1 or k % 2 == 0:
        raise ValueError(f"smoothing window must be a positive odd number of logged steps, got {k}")
    y = np.asarray(y, dtype=float)
    if k == 1 or len(y) < 3:
        return y.copy()
    n = len(y)
    ok = np.isfinite(y)
    csum = np.concatenate([[0.0], np.cumsum(np.where(ok, y, 0.0))])
    ccnt = np.concatenate([[0], np.cumsum(ok)])
    i = np.arange(n)
    h = np.minimum(np.minimum(k // 2, i), n - 1 - i)
    s, c = csum[i + h + 1] - csum[i - h], ccnt[i + h + 1] - ccnt[i - h]
    with np.errstate(invalid="ignore"):
        return np.where(ok & (c > 0), s / np.maximum(c, 1), np.nan)


def _seed_curves(logs: pd.DataFrame, xcol: str, ycol: str, smooth: int = 1) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per run (training seed) of ``logs``: (x, y) in step order, y smoothed over ``smooth`` logged steps."""
    out = []
    for _, g in logs.groupby("run_id", sort=True):
        g = g.sort_values("step")
        out.append((g[xcol].to_numpy(dtype=float), smooth_steps(g[ycol].to_numpy(dtype=float), smooth)))
    return out


def _mean_band(curves) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """(grid, mean, mean - std, mean + std, number of seeds) of :func:`mean_over_seeds` (no band with one seed)."""
    grid, mean, std = mean_over_seeds(curves)
    return grid, mean, mean - std, mean + std, len(curves)


def _curve_band_words(n_seeds) -> str:
    return legend_label_seeds(n_seeds, "band ± 1 s.d.")


# --------------------------------------------------------------------------------------------------------------
# beta sweep
# --------------------------------------------------------------------------------------------------------------


def _beta_axis(ax, betas: np.ndarray, has_zero: bool) -> float:
    """Log-scale x axis with a tick at each beta that was run (labelled in :func:`rocm_rlhf.runs.fmt_beta`'s text)
    and a labelled beta = 0 position one decade left of the smallest, after a break mark; return that position."""
    betas = np.unique(np.asarray(betas, dtype=float))
    bmin, bmax = float(betas[0]), float(betas[-1])
    x0 = bmin / 10.0
    ax.set_xscale("log")
    ticks = ([x0] if has_zero else []) + list(betas)
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels(["0" if (has_zero and i == 0) else runs.fmt_beta(t) for i, t in enumerate(ticks)])
    ax.set_xlim(x0 / 10**0.4 if has_zero else bmin / 10**0.4, bmax * 10**0.4)
    if has_zero:
        xb = math.sqrt(x0 * bmin)
        for dx in (10**-0.06, 10**0.06):
            ax.plot(
                [xb * dx],
                [0.0],
                marker=[(-1, -2), (1, 2)],
                markersize=6,
                color="black",
                linestyle="none",
                clip_on=False,
                transform=ax.get_xaxis_transform(),
                zorder=5,
            )
    return x0


def fig_beta_sweep(
    scores: pd.DataFrame,
    reward_metric: str,
    quality_metric: str,
    out_stem: str | os.PathLike,
    *,
    width: float = TEXT_WIDTH,
    height: float = 3.0,
) -> SavedFigure:
    """The reward-hacking picture: training reward (top row) and held-out quality (bottom row) against beta.

    One column per divergence (order of :data:`rocm_rlhf.runs.DIVERGENCES`), x = beta on a log scale with a tick
    at each beta that was run, beta = 0 (the "none" ROCM arm, shared by all columns) as an open diamond at the left,
    after an axis break. y = mean over training seeds of the per-seed means (:func:`seed_summary`); where an arm has
    >= 2 training seeds, a band (an error bar at beta = 0, and where only some betas have several seeds, as after the
    confirmatory stage) shows the 95 % Student-t interval of that mean over seeds (:func:`t_interval`); with one seed only the point is drawn and the legend says "one training seed". Each
    divergence in its style (:mod:`rocm_rlhf.analysis.style`). The base model (method "base", if in the table) is
    a dotted horizontal line. Rows share y limits; axes = 2 x number of divergences.
    """
    check_scores(scores, [reward_metric, quality_metric])
    arms = arm_table(scores)
    zero, reg = sweep_arms(arms, "fig_beta_sweep")
    base = arms[arms["method"] == runs.BASE]
    if len(base) > 1:
        raise ValueError(f"expected at most one base arm, got {list(base.index)}")
    use = [*reg.index, *zero.index, *base.index]
    mets = [reward_metric, quality_metric]
    sub = scores[scores["arm"].isin(use) & scores["metric"].isin(mets)]
    summ = seed_summary(sub).set_index(["arm", "metric"])
    for a in use:
        for m in mets:
            if (a, m) not in summ.index:
                raise ValueError(f"metric {m!r} was not scored for arm {a!r}")
    trained = [a for a in use if a not in base.index]
    seed_words = legend_label_seeds(summ.loc[trained, "n_seeds"], "95 % t-interval")

    divs = [d for d in runs.DIVERGENCES if d in set(reg["divergence"])]
    st_zero = {**arm_style("rocm", runs.UNREGULARISED, 0.0), "linestyle": "none"}
    st_base = arm_style(runs.BASE)
    with matplotlib.rc_context(STYLE):
        fig = _new_figure(width, height)
        axes = fig.subplots(2, len(divs), sharey="row", squeeze=False)
        for j, d in enumerate(divs):
            cand = reg[reg["divergence"] == d].sort_values("beta")
            betas = cand["beta"].to_numpy(dtype=float)
            st_line = arm_style("rocm", d, 1.0)
            for i, m in enumerate(mets):
                ax = axes[i, j]
                x0 = _beta_axis(ax, betas, has_zero=len(zero) > 0)
                s = summ.loc[[(a, m) for a in cand.index]]
                mean = s["mean"].to_numpy(dtype=float)
                lo, hi = t_interval(mean, s["std"], s["n_seeds"])
                _plot_band(ax, betas, mean, lo, hi, st_line, None, n_marks=len(betas))
                ok = np.isfinite(lo) & np.isfinite(hi)
                if ok.any() and not ok.all():  # a band needs neighbours: the betas with seeds get error bars
                    ax.errorbar(betas[ok], mean[ok], yerr=[mean[ok] - lo[ok], hi[ok] - mean[ok]], fmt="none",
                                ecolor=st_line["color"], capsize=2)
                if len(zero):
                    z = summ.loc[(zero.index[0], m)]
                    zlo, zhi = t_interval(z["mean"], z["std"], z["n_seeds"])
                    yerr = [[z["mean"] - zlo], [zhi - z["mean"]]] if np.isfinite(zlo) else None
                    ax.errorbar([x0], [z["mean"]], yerr=yerr, capsize=2, **st_zero)
                if len(base):
                    ax.axhline(summ.loc[(base.index[0], m), "mean"], color=st_base["color"],
                               linestyle=st_base["linestyle"], linewidth=1.0)
                if i == 0:
                    ax.set_title(runs.DIVERGENCE_LABELS[d])
                    ax.tick_params(labelbottom=False)
                else:
                    ax.set_xlabel("β")
            axes[0, 0].set_ylabel(f"{reward_metric}\n(training reward)")
            axes[1, 0].set_ylabel(f"{quality_metric}\n(held-out quality)")
        rocm_handles = tuple(Line2D([], [], **arm_style("rocm", d, 1.0)) for d in divs)
        handles = [rocm_handles]
        labels = [f"ROCM, β > 0 ({seed_words})"]
        if len(zero):
            handles.append(Line2D([], [], **st_zero))
            labels.append("ROCM, β = 0")
        if len(base):
            handles.append(Line2D([], [], color=st_base["color"], linestyle=st_base["linestyle"]))
            labels.append("base model")
        fig.legend(handles, labels, loc="outside upper center", ncol=len(handles),
                   handler_map={tuple: HandlerTuple(ndivide=None)}, handlelength=max(2.0, 1.2 * len(divs)))
        return save_figure(fig, out_stem)


# --------------------------------------------------------------------------------------------------------------
# training efficiency and curves
# --------------------------------------------------------------------------------------------------------------


def device_label(logs: pd.DataFrame) -> str:
    devs = sorted(set(logs["device"].astype(str).str.lower().str.split(":").str[0]))
    if devs == ["cpu"]:
        return "CPU core-hours"
    if "cpu" in devs:
        raise ValueError(
            f"the logs mix devices {devs}: device_hours are accelerator-hours on GPU but CPU core-hours on CPU, "
            "which are not comparable; plot runs of one device kind"
        )
    return "GPU hours" if devs == ["cuda"] else "accelerator hours"


def fig_efficiency(
    curves: pd.DataFrame,
    out_stem: str | os.PathLike,
    metrics: Sequence[str],
    *,
    chosen_betas: Mapping[str, float] | None = None,
    width: float = TEXT_WIDTH,
    height: float = 4.4,
) -> SavedFigure:
    """Held-out quality against training cost: one row per metric of ``metrics`` (the primary endpoint, then the
    training reward), scored on the validation prompts by each run's held-out probe at its checkpoints
    (:func:`rocm_rlhf.analysis.logs.load_curves`), against device-hours (left) and reward queries (right), both on a
    log scale (the step-0 probe, at zero cost, is the dotted line of the untrained LCM).

    One line per shown arm (:func:`rocm_rlhf.analysis.efficiency.shown_arms`: ROCM at beta = 0, each divergence at
    ``chosen_betas[divergence]``, the score-function variants' arms, every baseline), mean over its runs on a common grid (:func:`mean_over_seeds`)
    with a 95% t-interval band over training seeds where there are several (:func:`t_interval`), in the arm's style
    (:mod:`rocm_rlhf.analysis.style`). Axes = 2 x len(metrics).
    """
    from .efficiency import shown_arms, start_value

    check_logs(curves, ["step", "device_hours", "reward_queries", "metric", "mean", "device"])
    if not metrics:
        raise ValueError("fig_efficiency needs at least one metric")
    info = shown_arms(curves, chosen_betas)
    xlabel = device_label(curves[~curves["method"].isin(runs.UNTRAINED)])
    n_seeds = []
    with matplotlib.rc_context(STYLE):
        fig = _new_figure(width, height)
        axes = fig.subplots(len(metrics), 2, sharex="col", squeeze=False)
        for r, metric in enumerate(metrics):
            sub = curves[(curves["metric"] == metric)]
            if len(sub) == 0:
                raise ValueError(f"no probe rows of metric {metric!r}; probed: {sorted(curves['metric'].unique())}")
            lcm_runs = sub["method"].map(lambda m: runs.generator(m) == "lcm")
            start = start_value(curves, metric) if ((sub["step"] == 0) & lcm_runs).any() else None
            axes[r, 1].sharey(axes[r, 0])
            for ax, xcol in zip(axes[r], ("device_hours", "reward_queries")):
                ax.set_xscale("log")
                ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))  # 1-2-5: within a decade too
                ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
                ax.xaxis.set_minor_formatter(NullFormatter())  # unlabelled minor ticks: their labels collide
                if start is not None:
                    ax.axhline(start, color="#666666", linestyle=":", linewidth=0.8)
                n = _probe_lines(ax, sub, info, xcol, labelled=r == 0 and xcol == "device_hours")
                if r == 0 and xcol == "device_hours":
                    n_seeds += n
            axes[r, 0].set_ylabel(f"held-out {metric}\n(validation prompts)")
        axes[-1, 0].set_xlabel(xlabel)
        axes[-1, 1].set_xlabel("reward queries")
        fig.legend(loc="outside upper center", ncol=min(4, len(info)),
                   title=legend_label_seeds(n_seeds, "95% t-interval") + "; dotted: the untrained LCM")
        return save_figure(fig, out_stem)


def _probe_lines(ax, sub: pd.DataFrame, info: pd.DataFrame, xcol: str, *, labelled: bool,
                 labels: Mapping[str, str] | None = None) -> list[int]:
    """One line per arm of ``info`` (an arm table's rows, in order) of the probe curves ``sub`` (one metric) against
    ``xcol`` (positive values only), mean over the arm's runs on a common grid (:func:`mean_over_seeds`) with a 95%
    t-interval band over training seeds, in the arm's style; the arm's label (``labels[arm]`` where given) where
    ``labelled``. Returns the number of runs of each line drawn."""
    n_seeds = []
    for i, (arm, row) in enumerate(info.iterrows()):
        arm_curve = sub[(sub["arm"] == arm) & (sub[xcol] > 0)]
        if len(arm_curve) == 0:
            continue
        grid, mean, std = mean_over_seeds(
            [(g.sort_values("step")[xcol].to_numpy(float), g.sort_values("step")["mean"].to_numpy(float))
             for _, g in arm_curve.groupby("run_id", sort=True)])
        n = arm_curve["run_id"].nunique()
        lo, hi = t_interval(mean, std, np.full_like(mean, n))
        _plot_band(ax, grid, mean, lo, hi, arm_style(row["method"], row["divergence"], row["beta"]),
                   (labels or {}).get(arm, row_label(arm, row)) if labelled else None, n_marks=6,
                   phase=i / len(info))
        n_seeds.append(n)
    return n_seeds


def fig_score_function(
    curves: pd.DataFrame,
    out_stem: str | os.PathLike,
    metrics: Sequence[str],
    arms: Sequence[str],
    *,
    surrogate_arms: Sequence[str] = (),
    width: float = TEXT_WIDTH,
    height: float = 2.9,
) -> SavedFigure:
    """Rewards given only as numbers (beyond the paper): held-out ``metrics`` (the training reward, then the primary
    endpoint; one panel each), scored on the validation prompts by each run's probe at its checkpoints
    (:func:`rocm_rlhf.analysis.logs.load_curves`), against reward queries, for ``arms`` (ROCM's score-function
    variants and what they are compared with, :func:`rocm_rlhf.analysis.score_function.comparison_arms`): mean over
    each arm's runs with a 95% t-interval band over training seeds, in the arm's style; the dotted line is the
    untrained LCM (the step-0 probe). ``surrogate_arms`` trained on the surrogate instead of the reward: their
    runs count surrogate calls, so their x is that and their label says so. Axes = len(metrics)."""
    from .efficiency import start_value

    check_logs(curves, ["step", "reward_queries", "metric", "mean"])
    if not metrics:
        raise ValueError("fig_score_function needs at least one metric")
    missing = [a for a in arms if a not in set(curves["arm"])]
    if missing:
        raise ValueError(f"the probe curves lack the arm(s) {missing}; probed: {sorted(curves['arm'].unique())}")
    meta = curves[["arm", "method", "divergence", "beta"]].drop_duplicates("arm").set_index("arm")
    info = arm_order(meta.loc[list(arms)])
    labels = {a: f"{label_of(a)} (x: surrogate calls)" for a in surrogate_arms}
    n_seeds = []
    with matplotlib.rc_context(STYLE):
        fig = _new_figure(width, height)
        axes = fig.subplots(1, len(metrics), squeeze=False)[0]
        for j, metric in enumerate(metrics):
            sub = curves[curves["metric"] == metric]
            if len(sub) == 0:
                raise ValueError(f"no probe rows of metric {metric!r}; probed: {sorted(curves['metric'].unique())}")
            lcm_runs = sub["method"].map(lambda m: runs.generator(m) == "lcm")
            if ((sub["step"] == 0) & lcm_runs).any():
                axes[j].axhline(start_value(curves, metric), color="#666666", linestyle=":", linewidth=0.8)
            n = _probe_lines(axes[j], sub, info, "reward_queries", labelled=j == 0, labels=labels)
            n_seeds += n if j == 0 else []
            axes[j].set_xlabel("reward queries")
            axes[j].set_ylabel(f"held-out {metric}\n(validation prompts)")
        fig.legend(loc="outside upper center", ncol=min(3, len(info)),
                   title=legend_label_seeds(n_seeds, "95% t-interval") + "; dotted: the untrained LCM")
        return save_figure(fig, out_stem)


def fig_training_curves(
    logs: pd.DataFrame,
    out_stem: str | os.PathLike,
    *,
    width: float = TEXT_WIDTH,
    height: float = 3.6,
    log_divergence: bool = True,
    smooth: int = 5,
) -> SavedFigure:
    """ROCM's ``reward_mean`` (top row) and ``divergence_mean`` (bottom row) against training step.

    One column per divergence, one line per beta (increasing), mean over seeds (:func:`mean_over_seeds`) with a
    ± one std band where there are several seeds. Line styles: each beta of a divergence in a shade of that
    divergence's colour with its own marker and line style (:func:`rocm_rlhf.analysis.style.beta_styles`); the
    beta = 0 run (if logged) in its own style is the first line of every column's reward panel; it is left out of
    the divergence panels, since it optimises no divergence. Each column's legend sits above it, headed by the
    divergence. The reward rows share one y scale; each divergence panel has its own (the divergences have
    different units and ranges). The reward is smoothed per run by :func:`smooth_steps` over ``smooth`` logged
    steps (the y label says so); the divergence is not. ``log_divergence=True`` (the default) puts the divergence
    rows on a log scale, since the divergence falls by decades as beta rises by decades; non-positive values (e.g.
    0 at the first step, where LoRA's B = 0) are then left out of the line (a gap), ``False`` a linear scale.
    Axes = 2 x number of divergences.
    """
    check_logs(logs, ["step", "reward_mean", "divergence_mean"])
    smooth_steps([], smooth)  # checks the window
    reg, zero = regularised(logs), unregularised(logs)
    if len(reg) == 0:
        raise ValueError(
            "fig_training_curves needs logs of regularised ROCM runs (method 'rocm', divergence other than "
            f"'none', beta > 0); the logs hold arms {sorted(logs['arm'].unique())}"
        )
    if zero["arm"].nunique() > 1:
        raise ValueError(f"several ROCM beta = 0 arms in the logs: {sorted(zero['arm'].unique())}; keep one")
    divs = [d for d in runs.DIVERGENCES if d in set(reg["divergence"])]
    st_zero = arm_style("rocm", runs.UNREGULARISED, 0.0)

    n_seeds = []
    with matplotlib.rc_context(STYLE):
        fig = _new_figure(width, height)
        axes = fig.subplots(2, len(divs), sharex="col", squeeze=False)
        for j, d in enumerate(divs):
            if j:
                axes[0, j].sharey(axes[0, 0])
                axes[0, j].tick_params(labelleft=False)
            sd = reg[reg["divergence"] == d]
            groups = [(float(b), g) for b, g in sd.groupby("beta", sort=True)]
            lines = [(0.0, zero, st_zero)] if len(zero) else []
            lines += [(b, g, st) for (b, g), st in zip(groups, beta_styles(d, len(groups)))]
            for k, (b, g, st) in enumerate(lines):
                for r, ycol in enumerate(("reward_mean", "divergence_mean")):
                    if r == 1 and b == 0:
                        continue
                    curves = _seed_curves(g, "step", ycol, smooth if r == 0 else 1)
                    if not any(np.isfinite(y).any() for _, y in curves):
                        raise ValueError(f"ROCM run(s) {sorted(g['run_id'].unique())} logged no finite {ycol}")
                    grid, mean, lo, hi, n = _mean_band(curves)
                    _plot_band(axes[r, j], grid, mean, lo, hi, st, f"β={runs.fmt_beta(b)}" if r == 0 else None,
                               n_marks=6, phase=k / len(lines))
                    n_seeds.append(n)
            axes[0, j].legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, borderaxespad=0.2,
                              title=runs.DIVERGENCE_LABELS[d], handlelength=2.8, columnspacing=1.0)
            axes[1, j].set_xlabel("training step")
            if log_divergence:
                axes[1, j].set_yscale("log", nonpositive="mask")
        smoothing = f"{smooth}-step centred mean" if smooth > 1 else "unsmoothed"
        axes[0, 0].set_ylabel(f"training reward\n(batch mean,\n{smoothing})")
        axes[1, 0].set_ylabel("divergence to base\n(batch mean,\nown scale per panel)")
        fig.align_ylabels(axes[:, 0])
        fig.suptitle(_curve_band_words(n_seeds), fontsize=STYLE["legend.fontsize"])
        return save_figure(fig, out_stem)


def fig_adaptive_beta(
    logs: pd.DataFrame,
    out_stem: str | os.PathLike,
    *,
    chosen_betas: Mapping[str, float] | None = None,
    chosen_targets: Mapping[str, str] | None = None,
    width: float = TEXT_WIDTH,
    height: float = 3.6,
    smooth: int = 5,
) -> SavedFigure:
    """What the adaptive beta did: per divergence (columns), its beta (top row) and the divergence it held (bottom
    row) against training step, one line per target (increasing; the target chosen on validation marked in the
    legend), mean over the target's training seeds with a ± one std band where there are several. The bottom row
    draws each target as a thin horizontal line of its colour; the top row the beta chosen on validation for the
    divergence (``chosen_betas``) as a grey dashed line, so the controller's beta reads against the sweep's. Both
    rows on log scales, each panel its own (the divergences have different units); the divergence is smoothed per
    run over ``smooth`` logged steps, beta is not (it moves smoothly by construction). ``logs``: the adaptive-beta
    runs' training logs (:func:`rocm_rlhf.analysis.logs.load_training_logs`; other runs are ignored)."""
    from .arms import adaptive_arms

    check_logs(logs, ["step", "divergence_mean", "adaptive_beta"])
    smooth_steps([], smooth)
    logs = logs[logs["arm"].isin(adaptive_arms(logs["arm"].unique()))].copy()
    if len(logs) == 0:
        raise ValueError("fig_adaptive_beta needs the logs of adaptive-beta runs (rocm-<divergence>-t<target>-s<seed>, "
                         "config rocm.targets); the logs hold none")
    logs["target"] = [float(runs.parse_arm(a).target) for a in logs["arm"]]
    divs = [d for d in runs.DIVERGENCES if d in set(logs["divergence"])]
    chosen_betas, chosen_targets = dict(chosen_betas or {}), dict(chosen_targets or {})
    n_seeds = []
    with matplotlib.rc_context(STYLE):
        fig = _new_figure(width, height)
        axes = fig.subplots(2, len(divs), sharex="col", squeeze=False)
        for j, d in enumerate(divs):
            groups = [(t, g) for t, g in logs[logs["divergence"] == d].groupby("target", sort=True)]
            for k, ((t, g), st) in enumerate(zip(groups, beta_styles(d, len(groups)))):
                chosen = d in chosen_targets and float(chosen_targets[d]) == t
                label = f"target {t:g}" + (" (chosen)" if chosen else "")
                for r, (ycol, k_smooth) in enumerate((("adaptive_beta", 1), ("divergence_mean", smooth))):
                    grid, mean, lo, hi, n = _mean_band(_seed_curves(g, "step", ycol, k_smooth))
                    _plot_band(axes[r, j], grid, mean, lo, hi, st, label if r == 0 else None, n_marks=6,
                               phase=k / len(groups))
                    n_seeds.append(n)
                axes[1, j].axhline(t, color=st["color"], linewidth=0.6, linestyle="-", alpha=0.7)
            if d in chosen_betas:
                axes[0, j].axhline(float(chosen_betas[d]), color="#666666", linewidth=0.9, linestyle=(0, (4, 2)),
                                   label=f"fixed β={runs.fmt_beta(chosen_betas[d])} (chosen)")
            for r in range(2):
                axes[r, j].set_yscale("log", nonpositive="mask")
            axes[0, j].legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=1, borderaxespad=0.2,
                              title=runs.DIVERGENCE_LABELS[d], handlelength=2.8)
            axes[1, j].set_xlabel("training step")
        axes[0, 0].set_ylabel("adaptive β\n(the step's)")
        axes[1, 0].set_ylabel(f"divergence to base\n(batch mean, {smooth}-step\ncentred mean; thin: target)"
                              if smooth > 1 else "divergence to base\n(batch mean; thin: target)")
        fig.align_ylabels(axes[:, 0])
        fig.suptitle(_curve_band_words(n_seeds), fontsize=STYLE["legend.fontsize"])
        return save_figure(fig, out_stem)


# --------------------------------------------------------------------------------------------------------------
# gallery
# --------------------------------------------------------------------------------------------------------------


def load_gallery_images(samples: Mapping[str, str | os.PathLike], n_prompts: int
                        ) -> tuple[dict[str, np.ndarray], list[str]]:
    """The gallery's images from the runs' ``images.npz`` (``{row key: path}``, e.g. from
    :func:`rocm_rlhf.analysis.arms.gallery_runs`): per row, the images of sample seed 0 of the first ``n_prompts``
    prompts, as floats in [0, 1]; and those prompts (from the first row). Returns ``(images, prompts)``."""
    images, prompts = {}, None
    for key, path in samples.items():
        with np.load(path, allow_pickle=False) as z:
            keep = np.flatnonzero(z["sample_seed"] == 0)[:n_prompts]
            images[key] = z["images"][keep].astype(np.float32) / 255.0
            if prompts is None:
                prompts = [str(p) for p in z["prompt"][keep]]
    return images, prompts


def _text_width_in(text: str, fontsize: float) -> float:
    """Width in inches of one line of ``text`` in the current rc font at ``fontsize`` points (no renderer needed)."""
    w, _, _ = TextToPath().get_text_width_height_descent(text, FontProperties(size=fontsize), ismath=False)
    return w / 72.0


def _wrap_to_width(text: str, width_in: float, fontsize: float, max_chars: int | None = None) -> str:
    """``text`` wrapped into lines no wider than ``width_in`` inches (at most ``max_chars`` characters per line if
    given): the widest wrap that fits; words longer than a line are broken."""
    chars = max(1, min(len(text), max_chars or len(text)))
    while True:
        lines = textwrap.wrap(text, chars, break_long_words=True, break_on_hyphens=True) or [""]
        if chars == 1 or max(_text_width_in(line, fontsize) for line in lines) <= width_in:
            return "\n".join(lines)
        chars -= 1


GALLERY_TITLE_SIZE = 6.0
GALLERY_LABEL_SIZE = 7.0


def fig_divergence_gallery(
    images: Mapping[str, np.ndarray],
    prompts: Sequence[str],
    out_stem: str | os.PathLike,
    *,
    width: float = TEXT_WIDTH,
    show_prompts: bool = True,
    wrap: int | None = None,
) -> SavedFigure:
    """Image grid: rows = runs, columns = prompts; the caller guarantees the same prompts and noise in every row.

    ``images``: ``{row key: array (N, H, W, 3) in [0, 1]}`` with N = len(prompts), all of one (H, W). Row order:
    the key "base" first (if present), then the others in the mapping's order (base, then each divergence at its
    chosen beta). Row labels: :func:`label_of` ("rocm-kl-b0.1" -> "ROCM-KL (β=0.1)"; keys that are not arm ids as
    given), in a margin as wide as the widest label. Column headers: the prompts, wrapped to the width of an image
    column (at most ``wrap`` characters a line if given; ``show_prompts=False`` to omit); the header band is as tall
    as the longest wrapped prompt, so every header is fully visible for any number of prompts. Images are shown
    pixel-exact (nearest neighbour). Axes = rows x prompts.
    """
    if not isinstance(images, Mapping) or len(images) == 0:
        raise ValueError("images must be a non-empty dict {run: array (N, H, W, 3) in [0, 1]}")
    prompts = [str(p) for p in prompts]
    if len(prompts) == 0:
        raise ValueError("prompts is empty: the gallery needs at least one prompt (one column)")
    keys = list(images)
    if runs.BASE in keys:
        keys.remove(runs.BASE)
        keys.insert(0, runs.BASE)
    shape = None
    arrays = {}
    for k in keys:
        a = np.asarray(images[k], dtype=float)
        if a.ndim != 4 or a.shape[-1] != 3:
            raise ValueError(f"images[{k!r}] has shape {a.shape}; expected (N, H, W, 3), channels last")
        if a.shape[0] != len(prompts):
            raise ValueError(f"images[{k!r}] holds {a.shape[0]} images but there are {len(prompts)} prompts")
        if shape is None:
            shape = a.shape[1:3]
        elif a.shape[1:3] != shape:
            raise ValueError(f"images[{k!r}] are {a.shape[1:3]} pixels, others {shape}: use one size")
        if not np.all(np.isfinite(a)) or a.min() < 0 or a.max() > 1:
            raise ValueError(f"images[{k!r}] must be finite and in [0, 1] (divide uint8 images by 255)")
        arrays[k] = a
    nrows, ncols = len(keys), len(prompts)
    with matplotlib.rc_context(STYLE):
        labels = [label_of(k) for k in keys]
        label_w = max(_text_width_in(t, GALLERY_LABEL_SIZE) for t in labels) + 0.12
        gap = 0.03  # inches between images
        cell = (width - label_w - 0.04) / ncols - gap
        if cell <= 0.05:
            raise ValueError(f"{ncols} prompts do not fit a {width} in wide gallery; show fewer or widen it")
        titles = [_wrap_to_width(p, 0.95 * cell, GALLERY_TITLE_SIZE, wrap) for p in prompts] if show_prompts else []
        n_lines = max((t.count("\n") + 1 for t in titles), default=0)
        header = n_lines * GALLERY_TITLE_SIZE * 1.25 / 72 + 0.06
        height = nrows * (cell * shape[0] / shape[1] + gap) + header + 0.04

        fig = _new_figure(width, height)
        fig.set_layout_engine(None)
        left, right = label_w / width, 1 - 0.02 / width
        top, bottom = 1 - header / height, 0.02 / height
        axes = fig.subplots(nrows, ncols, squeeze=False, gridspec_kw=dict(
            left=left, right=right, top=top, bottom=bottom, wspace=gap / cell,
            hspace=gap / (cell * shape[0] / shape[1])))
        for r, k in enumerate(keys):
            for c in range(ncols):
                ax = axes[r, c]
                ax.imshow(arrays[k][c], interpolation="nearest", vmin=0.0, vmax=1.0, aspect="auto")
                ax.set_xticks([])
                ax.set_yticks([])
                for sp in ax.spines.values():
                    sp.set_visible(False)
                if r == 0 and show_prompts:
                    ax.set_title(titles[c], fontsize=GALLERY_TITLE_SIZE, pad=2)
            axes[r, 0].set_ylabel(labels[r], rotation=0, ha="right", va="center", fontsize=GALLERY_LABEL_SIZE,
                                  labelpad=4)
        return save_figure(fig, out_stem)
