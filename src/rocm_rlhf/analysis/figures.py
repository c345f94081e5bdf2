"""The paper's figures: the beta sweep (reward hacking), training efficiency, training curves, the divergence
gallery; and the loader of the training logs they read.

Conventions pinned here (they go into the README):

* **Sizes** for a two-column paper: :data:`COLUMN_WIDTH` = 3.3 in (single column), :data:`TEXT_WIDTH` = 6.9 in
  (full width; the default of every figure here). Figures are built on :class:`matplotlib.figure.Figure` directly
  (no pyplot, no global backend or state), with constrained layout and *no* ``bbox_inches="tight"``, so the saved
  size is exactly the requested size: the PNG is ``round(width * DPI)`` pixels wide (DPI = 300).
* **Outputs**: ``<stem>.pdf`` (fonts embedded as TrueType, no creation date, so the bytes are reproducible) and
  ``<stem>.png``, written atomically. Every function returns a :class:`SavedFigure` (pdf, png, figure).
* **Grey scale**: every line has its own marker *and* line style (colour is a third, redundant cue; Okabe-Ito
  palette); bands are light fills of the line's colour. No figure titles (captions say what a figure shows); panel
  headers name the divergence, axis labels name the metric.
* **Seeds**: lines are means over training seeds; bands are mean ± one sample std (ddof = 1) over seeds (no band
  with one seed). Score means come from :func:`rocm_rlhf.stats.seed_summary`. Curves from the training logs are
  averaged by :func:`mean_over_seeds`: each seed's curve is linearly interpolated onto the union of all seeds'
  x values inside the x range that *every* seed covers (no extrapolation), then averaged pointwise.
* **beta = 0** on a log-scaled beta axis is drawn one decade left of the smallest beta, as an open diamond with
  its own tick labelled "0" and a break mark (//) on the axis between it and the log-scaled part.
* Bad input raises one :class:`ValueError` naming what is wrong.
"""

from __future__ import annotations

import json
import math
import os
import textwrap
from pathlib import Path
from typing import Iterable, Mapping, NamedTuple, Sequence

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FixedLocator, NullLocator

from .stats import seed_summary
from .tables import (
    BASELINES,
    DIVERGENCE_LABELS,
    DIVERGENCES,
    METHOD_LABELS,
    METHODS,
    _stem,
    arm_label,
    arm_order,
    arm_table,
    check_scores,
    fmt_beta,
)
from .infra.utils import atomic_path

COLUMN_WIDTH = 3.3
"""Single-column figure width in inches."""
TEXT_WIDTH = 6.9
"""Full-width (two-column) figure width in inches."""
DPI = 300
"""PNG resolution (dots per inch)."""

OKABE_ITO = ("#000000", "#E69F00", "#56B4E9", "#009E73", "#D55E00", "#0072B2", "#CC79A7", "#F0E442")
LINE_STYLES = (
    ("o", "-"),
    ("s", "--"),
    ("^", "-."),
    ("D", ":"),
    ("v", (0, (5, 1))),
    ("P", (0, (3, 1, 1, 1, 1, 1))),
    ("X", (0, (1, 1))),
    ("*", (0, (5, 2, 1, 2))),
)
"""(marker, line style) pairs; line i of a figure uses entry i (cyclically) and colour OKABE_ITO[i]."""

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

LOG_REQUIRED = ("step", "wall_s", "device_hours", "device", "reward_queries", "reward_mean")
LOG_OPTIONAL = ("reward_std", "divergence_mean", "loss")
"""Columns of ``log.csv``: the required ones must exist; optional ones are filled with NaN when absent (baselines
have no divergence; ``reward_std`` is empty at a batch of one image). ``div_step_<n>`` columns (divergence per sampler step, ROCM only) are kept as they are."""
RUN_META = ("run_id", "arm", "method", "divergence", "beta", "seed")


class SavedFigure(NamedTuple):
    """What a figure function wrote: the PDF and PNG paths, and the matplotlib figure (to inspect its axes)."""

    pdf: Path
    png: Path
    figure: Figure


def style(i: int) -> dict:
    """Line style number i: colour, marker, line style (grey-scale distinct for i < len(LINE_STYLES))."""
    marker, ls = LINE_STYLES[i % len(LINE_STYLES)]
    return {"color": OKABE_ITO[i % len(OKABE_ITO)], "marker": marker, "linestyle": ls}


def save_figure(fig: Figure, out_stem: str | os.PathLike) -> SavedFigure:
    """Write ``<stem>.pdf`` and ``<stem>.png`` (DPI dots per inch) atomically, reproducibly; return the paths."""
    stem = _stem(out_stem)
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


# --------------------------------------------------------------------------------------------------------------
# training logs
# --------------------------------------------------------------------------------------------------------------


def load_training_logs(run_dirs: str | os.PathLike | Iterable[str | os.PathLike]) -> pd.DataFrame:
    """Read ``<run_dir>/log.csv`` and ``<run_dir>/run.json`` of every run; return one concatenated table.

    Columns: run_id, arm, method, divergence, beta, seed (from run.json), then the log's columns (one row per
    logged training step). From run.json: ``run_id``, ``method`` and ``seed`` are required; ``divergence``
    (missing or null -> "none") and ``beta`` (missing or null -> NaN; required for ROCM) as written; ``arm`` if
    present, else ``rocm-<divergence>-b<beta:g>`` for ROCM and the method otherwise (the arm ids of the score
    table). Required log columns: :data:`LOG_REQUIRED`; :data:`LOG_OPTIONAL` are NaN when absent.
    """
    if isinstance(run_dirs, (str, os.PathLike)):
        run_dirs = [run_dirs]
    dirs = [Path(d) for d in run_dirs]
    if not dirs:
        raise ValueError("load_training_logs needs at least one run directory (results/runs/<run_id>)")
    frames = []
    for d in dirs:
        log_path, meta_path = d / "log.csv", d / "run.json"
        for p in (log_path, meta_path):
            if not p.is_file():
                raise ValueError(f"{p} does not exist: is {d} a finished training run (results/runs/<run_id>)?")
        meta = json.loads(meta_path.read_text())
        lacking = [k for k in ("run_id", "method", "seed") if meta.get(k) is None]
        if lacking:
            raise ValueError(f"{meta_path} lacks {lacking}; run.json needs run_id, method, divergence, beta, seed")
        method = str(meta["method"])
        if method not in METHODS:
            raise ValueError(f"{meta_path}: unknown method {method!r}; known: {list(METHODS)}")
        div = meta.get("divergence") or "none"
        if div not in DIVERGENCES:
            raise ValueError(f"{meta_path}: unknown divergence {div!r}; known: {list(DIVERGENCES)}")
        beta = meta.get("beta")
        beta = float("nan") if beta is None else float(beta)
        if method == "rocm" and not (math.isfinite(beta) and beta >= 0):
            raise ValueError(f"{meta_path}: a ROCM run needs a beta >= 0 (got {meta.get('beta')!r})")
        if meta.get("arm"):
            arm = str(meta["arm"])
        elif method == "rocm":
            arm = f"rocm-{div}-b{fmt_beta(beta)}"
        else:
            arm = method
        log = pd.read_csv(log_path)
        missing = [c for c in LOG_REQUIRED if c not in log.columns]
        if missing:
            raise ValueError(f"{log_path} lacks column(s) {missing}; a training log needs {list(LOG_REQUIRED)}")
        if len(log) == 0:
            raise ValueError(f"{log_path} has no rows: the run logged no training step")
        for c in LOG_OPTIONAL:
            if c not in log.columns:
                log[c] = np.nan
        head = pd.DataFrame(
            {
                "run_id": str(meta["run_id"]),
                "arm": arm,
                "method": method,
                "divergence": div,
                "beta": beta,
                "seed": int(meta["seed"]),
            },
            index=log.index,
        )
        frames.append(pd.concat([head, log.drop(columns=[c for c in RUN_META if c in log.columns])], axis=1))
    out = pd.concat(frames, ignore_index=True)
    ids = [str(f["run_id"].iloc[0]) for f in frames]
    repeated = sorted({i for i in ids if ids.count(i) > 1})
    if repeated:
        raise ValueError(f"several run directories carry the same run_id {repeated}; run ids must be unique")
    return out


def _check_logs(logs: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    if not isinstance(logs, pd.DataFrame):
        raise ValueError(f"logs must be a DataFrame from load_training_logs, got {type(logs)}")
    missing = [c for c in (*RUN_META, *columns) if c not in logs.columns]
    if missing:
        raise ValueError(
            f"training logs lack column(s) {missing}; build them with load_training_logs(run_dirs) "
            f"(has {list(logs.columns)})"
        )
    if len(logs) == 0:
        raise ValueError("training logs are empty")
    return logs


def mean_over_seeds(curves: Sequence[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pointwise mean and sample std (ddof=1; NaN with one curve) of curves y_i(x) logged at different x.

    Each curve (x, y) is sorted by x, NaN y dropped, repeated x averaged; then linearly interpolated onto the grid
    = the sorted union of every curve's x inside [max_i min x_i, min_i max x_i] (the range all curves cover: no
    extrapolation). Returns (grid, mean, std). Raises ValueError if a curve is empty or the ranges do not overlap.
    """
    if len(curves) == 0:
        raise ValueError("mean_over_seeds needs at least one curve")
    clean = []
    for x, y in curves:
        x = np.asarray(x, dtype=float)
        y = np.asarray(y, dtype=float)
        ok = np.isfinite(x) & np.isfinite(y)
        if not ok.any():
            raise ValueError("a curve has no finite (x, y) point")
        s = pd.Series(y[ok]).groupby(x[ok]).mean()
        clean.append((s.index.to_numpy(dtype=float), s.to_numpy(dtype=float)))
    lo = max(x[0] for x, _ in clean)
    hi = min(x[-1] for x, _ in clean)
    if lo > hi:
        raise ValueError(
            f"the seeds' curves share no x range (starts up to {lo:g}, ends from {hi:g}); cannot average them"
        )
    grid = np.unique(np.concatenate([x[(x >= lo) & (x <= hi)] for x, _ in clean]))
    ys = np.stack([np.interp(grid, x, y) for x, y in clean])
    mean = ys.mean(axis=0)
    std = ys.std(axis=0, ddof=1) if len(clean) > 1 else np.full_like(mean, np.nan)
    return grid, mean, std


def _plot_band(ax, x, mean, std, st: dict, label: str | None, n_marks: int = 8) -> None:
    every = max(1, len(x) // n_marks)
    ax.plot(x, mean, label=label, markevery=every, **st)
    if np.isfinite(std).any():
        ax.fill_between(x, mean - std, mean + std, color=st["color"], alpha=0.2, linewidth=0)


# --------------------------------------------------------------------------------------------------------------
# beta sweep
# --------------------------------------------------------------------------------------------------------------


def _beta_axis(ax, betas: np.ndarray, has_zero: bool) -> float:
    """Log-scale x axis over ``betas`` with a labelled beta = 0 position; return that position."""
    bmin, bmax = float(np.min(betas)), float(np.max(betas))
    x0 = bmin / 10.0
    ax.set_xscale("log")
    decades = 10.0 ** np.arange(math.floor(math.log10(bmin) + 1e-9), math.ceil(math.log10(bmax) - 1e-9) + 1)
    decades = decades[(decades >= bmin / 1.0001) & (decades <= bmax * 1.0001)]
    ticks = ([x0] if has_zero else []) + list(decades if len(decades) else [bmin])
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels(["0" if (has_zero and i == 0) else fmt_beta(t) for i, t in enumerate(ticks)])
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

    One column per divergence (order of :data:`DIVERGENCES`), x = beta on a log scale, beta = 0 (the "none" ROCM
    arm, shared by all columns) as an open diamond at the left (module docstring). y = mean over training seeds
    (:func:`rocm_rlhf.stats.seed_summary`), band / error bar = ± one std over seeds. The base model (method
    "base", if in the table) is a dotted horizontal line. Rows share y limits; axes = 2 x number of divergences.
    """
    check_scores(scores, [reward_metric, quality_metric])
    arms = arm_table(scores)
    reg = arms[(arms["method"] == "rocm") & (arms["divergence"] != "none") & (arms["beta"] > 0)]
    if len(reg) == 0:
        raise ValueError(
            "fig_beta_sweep needs regularised ROCM arms (method 'rocm', a divergence other than 'none', beta > 0); "
            f"the score table has arms {list(arms.index)}"
        )
    zero = arms[(arms["method"] == "rocm") & ((arms["beta"] == 0) | (arms["divergence"] == "none"))]
    base = arms[arms["method"] == "base"]
    if len(zero) > 1 or len(base) > 1:
        raise ValueError(
            f"expected at most one ROCM beta = 0 arm and one base arm, got {list(zero.index)} and "
            f"{list(base.index)}"
        )
    use = [*reg.index, *zero.index, *base.index]
    mets = [reward_metric, quality_metric]
    sub = scores[scores["arm"].isin(use) & scores["metric"].isin(mets)]
    summ = seed_summary(sub).set_index(["arm", "metric"])
    for a in use:
        for m in mets:
            if (a, m) not in summ.index:
                raise ValueError(f"metric {m!r} was not scored for arm {a!r}")

    divs = [d for d in DIVERGENCES if d in set(reg["divergence"])]
    with matplotlib.rc_context(STYLE):
        fig = _new_figure(width, height)
        axes = fig.subplots(2, len(divs), sharey="row", squeeze=False)
        st_line = style(0)
        st_zero = {"color": st_line["color"], "marker": "D", "markerfacecolor": "white", "linestyle": "none"}
        for j, d in enumerate(divs):
            cand = reg[reg["divergence"] == d].sort_values("beta")
            betas = cand["beta"].to_numpy(dtype=float)
            for i, m in enumerate(mets):
                ax = axes[i, j]
                x0 = _beta_axis(ax, betas, has_zero=len(zero) > 0)
                mean = np.array([summ.loc[(a, m), "mean"] for a in cand.index], dtype=float)
                std = np.array([summ.loc[(a, m), "std"] for a in cand.index], dtype=float)
                _plot_band(ax, betas, mean, std, st_line, None, n_marks=len(betas))
                if len(zero):
                    z = summ.loc[(zero.index[0], m)]
                    zerr = z["std"] if np.isfinite(z["std"]) else None
                    ax.errorbar([x0], [z["mean"]], yerr=zerr, capsize=2, **st_zero)
                if len(base):
                    ax.axhline(summ.loc[(base.index[0], m), "mean"], color="0.4", linestyle=":", linewidth=1.0)
                if i == 0:
                    ax.set_title(DIVERGENCE_LABELS[d])
                    ax.tick_params(labelbottom=False)
                else:
                    ax.set_xlabel("β")
            axes[0, 0].set_ylabel(f"{reward_metric}\n(training reward)")
            axes[1, 0].set_ylabel(f"{quality_metric}\n(held-out quality)")
        handles = [Line2D([], [], **st_line, label="ROCM, β > 0 (mean ± std over seeds)")]
        if len(zero):
            handles.append(Line2D([], [], **st_zero, label="ROCM, β = 0"))
        if len(base):
            handles.append(Line2D([], [], color="0.4", linestyle=":", label="base model"))
        fig.legend(handles=handles, loc="outside upper center", ncol=len(handles))
        return save_figure(fig, out_stem)


# --------------------------------------------------------------------------------------------------------------
# training efficiency and curves
# --------------------------------------------------------------------------------------------------------------


def _device_label(logs: pd.DataFrame) -> str:
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
    logs: pd.DataFrame,
    out_stem: str | os.PathLike,
    *,
    chosen_betas: Mapping[str, float] | None = None,
    width: float = TEXT_WIDTH,
    height: float = 2.5,
) -> SavedFigure:
    """Training reward (``reward_mean``) against device hours (left) and against reward queries (right).

    One line per arm: ROCM at beta = 0, regularised ROCM at ``chosen_betas[divergence]`` for each divergence in
    ``chosen_betas`` (e.g. ``choose_beta(scores, quality_metric)``, or a single entry for one regularised line),
    and every baseline arm; base-model rows are ignored. With ``chosen_betas=None``, a divergence logged at a
    single beta is shown, several betas are an error (pick one). Lines are means over seeds on a common grid
    (:func:`mean_over_seeds`), bands ± one std. x label: "GPU hours" or "CPU core-hours" (from ``device``; a mix
    of CPU and GPU runs is an error). Two axes.
    """
    _check_logs(logs, ["step", "device_hours", "reward_queries", "reward_mean", "device"])
    lg = logs[logs["method"] != "base"]
    if len(lg) == 0:
        raise ValueError("fig_efficiency: the logs hold no training run (only base-model rows)")
    xlabel = _device_label(lg)
    meta = lg[["arm", "method", "divergence", "beta"]].drop_duplicates("arm").set_index("arm")
    reg = meta[(meta["method"] == "rocm") & (meta["divergence"] != "none") & (meta["beta"] > 0)]
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
            hit = reg[(reg["divergence"] == d) & np.isclose(reg["beta"].to_numpy(dtype=float), float(b))]
            if len(hit) == 0:
                have = sorted(reg.loc[reg["divergence"] == d, "beta"])
                raise ValueError(f"chosen beta {b:g} for divergence {d!r} is not in the logs (logged betas: {have})")
            keep += list(hit.index)
    info = arm_order(meta.loc[keep])

    with matplotlib.rc_context(STYLE):
        fig = _new_figure(width, height)
        axes = fig.subplots(1, 2, sharey=True, squeeze=False)[0]
        for i, (arm, row) in enumerate(info.iterrows()):
            runs = lg[lg["arm"] == arm]
            st = style(i)
            label = arm_label(row["method"], row["divergence"], row["beta"])
            for ax, xcol in zip(axes, ("device_hours", "reward_queries")):
                curves = [(g[xcol].to_numpy(), g["reward_mean"].to_numpy()) for _, g in runs.groupby("run_id")]
                grid, mean, std = mean_over_seeds(curves)
                _plot_band(ax, grid, mean, std, st, label if ax is axes[0] else None)
        axes[0].set_xlabel(xlabel)
        axes[1].set_xlabel("reward queries")
        axes[0].set_ylabel("training reward (batch mean)")
        fig.legend(loc="outside upper center", ncol=min(4, len(info)))
        return save_figure(fig, out_stem)


def fig_training_curves(
    logs: pd.DataFrame,
    out_stem: str | os.PathLike,
    *,
    width: float = TEXT_WIDTH,
    height: float = 3.2,
    log_divergence: bool = False,
) -> SavedFigure:
    """ROCM's ``reward_mean`` (top row) and ``divergence_mean`` (bottom row) against training step.

    One column per divergence, one line per beta (increasing; each with its own marker and line style, the same
    beta rank gets the same style in every column), mean over seeds (:func:`mean_over_seeds`) with a ± std band.
    The beta = 0 run (if logged) is the first line of every column's reward panel; it is left out of the
    divergence panels, since it optimises no divergence. ``log_divergence=True`` puts the divergence rows on a log
    scale (useful when the betas span decades; non-positive values, e.g. 0 at the first step where LoRA's B = 0,
    are then not drawn). Axes = 2 x number of divergences.
    """
    _check_logs(logs, ["step", "reward_mean", "divergence_mean"])
    rocm = logs[logs["method"] == "rocm"]
    reg = rocm[(rocm["divergence"] != "none") & (rocm["beta"] > 0)]
    zero = rocm[(rocm["divergence"] == "none") | (rocm["beta"] == 0)]
    if len(reg) == 0:
        raise ValueError(
            "fig_training_curves needs logs of regularised ROCM runs (method 'rocm', divergence other than "
            f"'none', beta > 0); the logs hold arms {sorted(logs['arm'].unique())}"
        )
    if zero["arm"].nunique() > 1:
        raise ValueError(f"several ROCM beta = 0 arms in the logs: {sorted(zero['arm'].unique())}; keep one")
    divs = [d for d in DIVERGENCES if d in set(reg["divergence"])]

    with matplotlib.rc_context(STYLE):
        fig = _new_figure(width, height)
        axes = fig.subplots(2, len(divs), sharex="col", sharey="row", squeeze=False)
        for j, d in enumerate(divs):
            lines = []
            if len(zero):
                lines.append((0.0, zero))
            sd = reg[reg["divergence"] == d]
            lines += [(float(b), g) for b, g in sd.groupby("beta", sort=True)]
            for i, (b, g) in enumerate(lines):
                st = style(i)
                for r, ycol in enumerate(("reward_mean", "divergence_mean")):
                    if r == 1 and b == 0:
                        continue
                    curves = [(s["step"].to_numpy(), s[ycol].to_numpy()) for _, s in g.groupby("run_id")]
                    if not any(np.isfinite(np.asarray(y, dtype=float)).any() for _, y in curves):
                        raise ValueError(f"ROCM run(s) {sorted(g['run_id'].unique())} logged no finite {ycol}")
                    grid, mean, std = mean_over_seeds(curves)
                    _plot_band(axes[r, j], grid, mean, std, st, f"β={fmt_beta(b)}" if r == 0 else None)
            axes[0, j].set_title(DIVERGENCE_LABELS[d])
            axes[0, j].legend(loc="best")
            axes[1, j].set_xlabel("training step")
            if log_divergence:
                axes[1, j].set_yscale("log")
        axes[0, 0].set_ylabel("training reward\n(batch mean)")
        axes[1, 0].set_ylabel("divergence to base\n(batch mean)")
        return save_figure(fig, out_stem)


# --------------------------------------------------------------------------------------------------------------
# gallery
# --------------------------------------------------------------------------------------------------------------


def _row_label(key: str) -> str:
    """A readable label for an arm id ('base', 'rocm-kl-b0.1', 'rlcm'); other keys are shown as they are."""
    if key == "base":
        return "Base"
    parts = key.split("-")
    if len(parts) == 3 and parts[0] == "rocm" and parts[1] in DIVERGENCES and parts[2].startswith("b"):
        try:
            return arm_label("rocm", parts[1], float(parts[2][1:]))
        except ValueError:
            return key
    if key in BASELINES:
        return METHOD_LABELS[key]
    return key


def fig_divergence_gallery(
    images: Mapping[str, np.ndarray],
    prompts: Sequence[str],
    out_stem: str | os.PathLike,
    *,
    width: float = TEXT_WIDTH,
    show_prompts: bool = True,
    wrap: int = 22,
) -> SavedFigure:
    """Image grid: rows = runs, columns = prompts; the caller guarantees the same prompts and noise in every row.

    ``images``: ``{row key: array (N, H, W, 3) in [0, 1]}`` with N = len(prompts), all of one (H, W). Row order:
    the key "base" first (if present), then the others in the mapping's order (base, then each divergence at its
    chosen beta). Row labels: arm ids are rendered readable ("rocm-kl-b0.1" -> "ROCM-KL (β=0.1)"), other keys as
    given. Column headers: the prompts, wrapped at ``wrap`` characters (``show_prompts=False`` to omit). Images
    are shown pixel-exact (nearest neighbour). Axes = rows x prompts.
    """
    if not isinstance(images, Mapping) or len(images) == 0:
        raise ValueError("images must be a non-empty dict {run: array (N, H, W, 3) in [0, 1]}")
    prompts = [str(p) for p in prompts]
    if len(prompts) == 0:
        raise ValueError("prompts is empty: the gallery needs at least one prompt (one column)")
    keys = list(images)
    if "base" in keys:
        keys.remove("base")
        keys.insert(0, "base")
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
    label_w = 1.0
    cell = (width - label_w) / ncols
    header = 0.35 if show_prompts else 0.05
    height = nrows * cell * shape[0] / shape[1] + header

    with matplotlib.rc_context(STYLE):
        fig = _new_figure(width, height)
        fig.get_layout_engine().set(w_pad=0.01, h_pad=0.01, wspace=0.02, hspace=0.02)
        axes = fig.subplots(nrows, ncols, squeeze=False)
        for r, k in enumerate(keys):
            for c in range(ncols):
                ax = axes[r, c]
                ax.imshow(arrays[k][c], interpolation="nearest", vmin=0.0, vmax=1.0)
                ax.set_xticks([])
                ax.set_yticks([])
                for sp in ax.spines.values():
                    sp.set_visible(False)
                if r == 0 and show_prompts:
                    ax.set_title(textwrap.fill(prompts[c], wrap), fontsize=6)
            axes[r, 0].set_ylabel(_row_label(k), rotation=0, ha="right", va="center", fontsize=7)
        return save_figure(fig, out_stem)


gallery = fig_divergence_gallery
"""Alias: the name used in the issue's contract."""

__all__ = [
    "COLUMN_WIDTH", "TEXT_WIDTH", "DPI", "SavedFigure", "style", "save_figure", "load_training_logs",
    "mean_over_seeds", "fig_beta_sweep", "fig_efficiency", "fig_training_curves",
    "fig_divergence_gallery", "gallery",
]  # fmt: skip
