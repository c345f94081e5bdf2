"""The adaptive beta against the best fixed beta (beyond the paper): per divergence, the target chosen on the
validation prompts against the beta chosen there, on the test prompts, with the same statistics as Table 1; what the
controller did (the divergence it held, the beta it ended at); and what each costs.

API: :func:`adaptive_table` (the comparison, one row per divergence and metric) and :func:`adaptive_text` (its
Markdown and LaTeX). Inputs: the test score table (:mod:`.scores`), the choice file (results/stats/chosen.csv, read
with pandas) and the training logs of the ROCM runs (:func:`rocm_rlhf.analysis.logs.load_training_logs`).
"""

from __future__ import annotations

from typing import Sequence

import pandas as pd

from .. import runs
from .arms import label_of, tuned_setting
from .render import latex, markdown, md_escape, signed, tex_escape
from .scores import check_scores
from .stats import N_FLIPS, compare, holm

TAIL = 0.2
"""The share of a run's last logged steps over which the held divergence and the final beta are averaged."""


def chosen_pairs(chosen: pd.DataFrame) -> list[tuple[str, str, str]]:
    """``[(divergence, fixed arm, adaptive arm)]`` of a choice file: each divergence with both a chosen beta and a
    chosen adaptive-beta target, in :data:`rocm_rlhf.runs.DIVERGENCES` order."""
    rocm = chosen[chosen["method"] == "rocm"]
    kind = rocm["arm"].map(tuned_setting)
    fixed = dict(zip(rocm.loc[kind == "beta", "divergence"], rocm.loc[kind == "beta", "arm"]))
    adaptive = dict(zip(rocm.loc[kind == "target", "divergence"], rocm.loc[kind == "target", "arm"]))
    return [(d, fixed[d], adaptive[d]) for d in runs.DIVERGENCES if d in fixed and d in adaptive]


def _tail(logs: pd.DataFrame, column: str, tail: float) -> pd.Series:
    """Per run, the mean of ``column`` over its last ``tail`` share of logged steps (at least one)."""
    out = {}
    for run_id, g in logs.groupby("run_id"):
        g = g.sort_values("step")
        k = max(1, int(round(tail * len(g))))
        out[run_id] = float(g[column].tail(k).mean())
    return pd.Series(out, dtype=float)


def adaptive_table(scores: pd.DataFrame, chosen: pd.DataFrame, logs: pd.DataFrame, metrics: Sequence[str], *,
                   n_boot: int = 10_000, n_flips: int = N_FLIPS, rng_seed: int = 0, alpha: float = 0.05,
                   tail: float = TAIL) -> pd.DataFrame:
    """Per divergence with a chosen beta and a chosen target (:func:`chosen_pairs`) and per metric of ``metrics``:
    the adaptive arm against the fixed arm on the test scores (:func:`rocm_rlhf.analysis.stats.compare`: paired over
    the training seeds both arms share, then prompts; p the larger of the sign-flip and the run-aware test), Holm
    over this table's own family (every divergence x metric); and, from the logs, the adaptive runs' divergence
    and beta over their last ``tail`` of steps (mean over seeds; the target for comparison), the fixed runs'
    divergence there, and the mean training seconds per run of each arm with the number of runs its choice took
    (the candidates of the choice file). Columns: divergence, metric, fixed_arm, adaptive_arm, fixed_label,
    adaptive_label, mean_fixed, mean_adaptive, mean_diff, ci_low, ci_high, p_value, p_holm, significant,
    seeds_paired, n_seeds_fixed, n_seeds (the adaptive arm's), target, held_divergence, fixed_divergence, end_beta, end_beta_min, end_beta_max, fixed_beta,
    seconds_adaptive, seconds_fixed, candidates_fixed, candidates_adaptive."""
    check_scores(scores, list(metrics))
    pairs = chosen_pairs(chosen)
    if not pairs:
        raise ValueError("the choice file has no divergence with both a chosen beta and a chosen adaptive-beta target "
                         "(rocm.targets); nothing to compare")
    for column in ("adaptive_beta", "divergence_mean", "wall_s"):
        if column not in logs.columns:
            raise ValueError(f"the training logs lack {column!r}: pass the logs of the ROCM runs (load_training_logs)")
    div_tail, beta_tail = _tail(logs, "divergence_mean", tail), _tail(logs, "adaptive_beta", tail)
    seconds = logs.groupby("run_id")["wall_s"].max()
    arm_of = logs.drop_duplicates("run_id").set_index("run_id")["arm"]
    candidates = chosen.set_index("arm")["candidates"].astype(str)
    rows = []
    for div, fixed, adaptive in pairs:
        a_runs, f_runs = arm_of.index[arm_of == adaptive], arm_of.index[arm_of == fixed]
        if len(a_runs) == 0 or len(f_runs) == 0:
            raise ValueError(f"the training logs lack the runs of {adaptive if len(a_runs) == 0 else fixed}")
        controller = {
            "target": float(runs.parse_arm(adaptive).target),
            "held_divergence": float(div_tail[a_runs].mean()), "fixed_divergence": float(div_tail[f_runs].mean()),
            "end_beta": float(beta_tail[a_runs].mean()), "end_beta_min": float(beta_tail[a_runs].min()),
            "end_beta_max": float(beta_tail[a_runs].max()), "fixed_beta": float(runs.parse_arm(fixed).beta),
            "seconds_adaptive": float(seconds[a_runs].mean()), "seconds_fixed": float(seconds[f_runs].mean()),
            "candidates_fixed": len(candidates[fixed].split()), "candidates_adaptive": len(candidates[adaptive].split()),
        }
        for metric in metrics:
            c = compare(scores, metric, adaptive, fixed, n_boot=n_boot, n_flips=n_flips, rng_seed=rng_seed)
            rows.append({"divergence": div, "metric": metric, "fixed_arm": fixed, "adaptive_arm": adaptive,
                         "fixed_label": label_of(fixed), "adaptive_label": label_of(adaptive),
                         "mean_fixed": c["mean_b"], "mean_adaptive": c["mean_a"], "mean_diff": c["mean_diff"],
                         "ci_low": c["ci_low"], "ci_high": c["ci_high"], "p_value": c["p_value"],
                         "seeds_paired": c["seeds_paired"], "n_seeds_fixed": c["n_seeds_b"],
                         "n_seeds": c["n_seeds_a"], **controller})
    table = pd.DataFrame(rows)
    table["p_holm"] = holm(table["p_value"].to_numpy())
    table["significant"] = table["p_holm"] < alpha
    return table


def adaptive_text(table: pd.DataFrame, decimals: int = 3) -> tuple[str, str]:
    """Markdown and LaTeX of :func:`adaptive_table`: one row per divergence, the two arms' means and the difference
    [95% CI] per metric (†: Holm-significant), the divergence the controller held against its target and the fixed
    beta's, its final beta against the fixed one, and the seconds per run."""
    metrics = list(dict.fromkeys(table["metric"]))
    header = ["Divergence", "fixed β (chosen)", "adaptive (chosen target)"]
    for m in metrics:
        header += [f"{m}: fixed", f"{m}: adaptive", f"{m}: adaptive − fixed [95% CI]"]
    header += ["divergence held (target) / fixed β's", "adaptive β at the end [seeds' range] / fixed β",
               "s per run: adaptive / fixed"]
    md_rows, tex_rows = [], []
    for div, g in table.groupby("divergence", sort=False):
        r0 = g.iloc[0]
        cells = [runs.DIVERGENCE_LABELS[div], f"β={runs.fmt_beta(r0['fixed_beta'])}", f"target {r0['target']:g}"]
        for m in metrics:
            r = g[g["metric"] == m].iloc[0]
            dagger = "†" if r["significant"] else ""
            cells += [f"{r['mean_fixed']:.{decimals}f}", f"{r['mean_adaptive']:.{decimals}f}",
                      f"{signed(r['mean_diff'], decimals)} [{signed(r['ci_low'], decimals)}, "
                      f"{signed(r['ci_high'], decimals)}]{dagger}"]
        cells += [f"{r0['held_divergence']:.2g} ({r0['target']:g}) / {r0['fixed_divergence']:.2g}",
                  f"{r0['end_beta']:.3g} [{r0['end_beta_min']:.3g}, {r0['end_beta_max']:.3g}] / "
                  f"{runs.fmt_beta(r0['fixed_beta'])}",
                  f"{r0['seconds_adaptive']:.0f} / {r0['seconds_fixed']:.0f}"]
        md_rows.append([md_escape(c) for c in cells])
        tex_rows.append([tex_escape(c) for c in cells])
    align = "lll" + "ccc" * len(metrics) + "ccc"
    return markdown(header, md_rows, align), latex([tex_escape(h) for h in header], tex_rows, align)


def adaptive_legend(table: pd.DataFrame, tail: float = TAIL) -> str:
    """The table's legend: what was compared, how, and the cost of each choice in runs."""
    n = sorted(set(table["n_seeds"]) | set(table["n_seeds_fixed"]))
    paired = ("training seeds paired (the arms share their seeds)" if table["seeds_paired"].all() else
              "training seeds resampled per arm (unpaired where the arms' seeds differ)")
    cand_f, cand_a = sorted(set(table["candidates_fixed"])), sorted(set(table["candidates_adaptive"]))
    return (f"ROCM with an adaptive beta (the target chosen per divergence on the validation prompts) against ROCM "
            f"with the fixed beta chosen there, on the test prompts; mean over {'/'.join(map(str, n))} training seeds "
            f"each. Difference: adaptive − fixed, 95% CI of the hierarchical bootstrap ({paired}, then prompts); †: "
            f"Holm-significant at 0.05 over this table's {len(table)} comparisons (p the larger of the sign-flip "
            f"test over prompts and the t test over seeds). Divergence held: the adaptive runs' divergence_mean over "
            f"their last {tail:.0%} of steps (its target in brackets) and the fixed-beta runs' there; adaptive β at "
            f"the end: the controller's beta averaged over those steps, mean over seeds [range over seeds]. Cost: the "
            f"choices were among {'/'.join(map(str, cand_f))} betas and {'/'.join(map(str, cand_a))} targets (one "
            f"run each per sweep seed); seconds per run are training wall-clock on this machine.")
