"""The paper's figures: the beta sweep (reward hacking), training efficiency, training curves, the divergence
gallery.

API: :func:`fig_beta_sweep` (from the score table), :func:`fig_efficiency` and :func:`fig_training_curves` (from
:func:`rocm_rlhf.analysis.logs.load_training_logs`), :func:`fig_divergence_gallery` with :func:`load_gallery_images`,
and :func:`save_figure`. Each figure function writes ``<stem>.pdf`` and ``<stem>.png`` reproducibly and returns a
:class:`SavedFigure`. Sizes, styles and how seeds are drawn: docs/method.md,
section 'Evaluation, statistics, tables and figures' (Figures).
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
from matplotlib.lines import Line2D
from matplotlib.ticker import FixedLocator, NullLocator

from .. import runs
from ..infra.utils import atomic_path
from .arms import arm_order, arm_table, label_of, regularised, sweep_arms, unregularised
from .logs import check_logs, mean_over_seeds
from .render import out_stem as _out_stem
from .scores import check_scores
from .stats import seed_summary

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

    One column per divergence (order of :data:`rocm_rlhf.runs.DIVERGENCES`), x = beta on a log scale, beta = 0
    (the "none" ROCM arm, shared by all columns) as an open diamond at the left, after an axis break. y = mean over
    training seeds (:func:`seed_summary`), band / error bar = ± one std over seeds. The base model (method "base",
    if in the table) is a dotted horizontal line. Rows share y limits; axes = 2 x number of divergences.
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

    divs = [d for d in runs.DIVERGENCES if d in set(reg["divergence"])]
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
                    ax.set_title(runs.DIVERGENCE_LABELS[d])
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
    ``chosen_betas`` (e.g. :func:`rocm_rlhf.analysis.arms.choose_beta`'s, or a single entry for one regularised
    line; a beta is matched by its canonical text, :func:`rocm_rlhf.runs.fmt_beta`), and every baseline arm;
    base-model rows are ignored. With ``chosen_betas=None``, a divergence logged at a single beta is shown, several
    betas are an error (pick one). Lines are means over seeds on a common grid (:func:`mean_over_seeds`), bands
    ± one std. x label: "GPU hours" or "CPU core-hours" (from ``device``; a mix of CPU and GPU runs is an error).
    Two axes.
    """
    check_logs(logs, ["step", "device_hours", "reward_queries", "reward_mean", "device"])
    lg = logs[logs["method"] != runs.BASE]
    if len(lg) == 0:
        raise ValueError("fig_efficiency: the logs hold no training run (only base-model rows)")
    xlabel = _device_label(lg)
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
    info = arm_order(meta.loc[keep])

    with matplotlib.rc_context(STYLE):
        fig = _new_figure(width, height)
        axes = fig.subplots(1, 2, sharey=True, squeeze=False)[0]
        for i, (arm, row) in enumerate(info.iterrows()):
            arm_logs = lg[lg["arm"] == arm]
            st = style(i)
            label = runs.arm_label(row["method"], row["divergence"], row["beta"])
            for ax, xcol in zip(axes, ("device_hours", "reward_queries")):
                curves = [(g[xcol].to_numpy(), g["reward_mean"].to_numpy()) for _, g in arm_logs.groupby("run_id")]
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
    check_logs(logs, ["step", "reward_mean", "divergence_mean"])
    reg, zero = regularised(logs), unregularised(logs)
    if len(reg) == 0:
        raise ValueError(
            "fig_training_curves needs logs of regularised ROCM runs (method 'rocm', divergence other than "
            f"'none', beta > 0); the logs hold arms {sorted(logs['arm'].unique())}"
        )
    if zero["arm"].nunique() > 1:
        raise ValueError(f"several ROCM beta = 0 arms in the logs: {sorted(zero['arm'].unique())}; keep one")
    divs = [d for d in runs.DIVERGENCES if d in set(reg["divergence"])]

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
                    _plot_band(axes[r, j], grid, mean, std, st, f"β={runs.fmt_beta(b)}" if r == 0 else None)
            axes[0, j].set_title(runs.DIVERGENCE_LABELS[d])
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
    chosen beta). Row labels: :func:`label_of` ("rocm-kl-b0.1" -> "ROCM-KL (β=0.1)"; keys that are not arm ids as
    given). Column headers: the prompts, wrapped at ``wrap`` characters (``show_prompts=False`` to omit). Images are
    shown pixel-exact (nearest neighbour). Axes = rows x prompts.
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
            axes[r, 0].set_ylabel(label_of(k), rotation=0, ha="right", va="center", fontsize=7)
        return save_figure(fig, out_stem)

