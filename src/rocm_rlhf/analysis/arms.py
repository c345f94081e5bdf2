"""The arms of a score table: their row order, labels and groups, the choice of beta per divergence, the controls.

An arm is a run id without its training seed (:mod:`rocm_rlhf.runs`, whose names, labels and beta text are used
here). API: :func:`arm_table` and :func:`arm_order` (rows in the paper's order), :func:`regularised` and
:func:`unregularised` (ROCM arms or log rows with beta > 0 or beta = 0), :func:`sweep_arms`, :func:`choose_arms` and
:func:`choose_beta` (the best beta per divergence) and :func:`chosen_table` (that choice, with the tuned baselines'
learning rates, as the file the stages share), :func:`comparison_arms` (treatments and controls),
:func:`label_of` (an arm id's label) and :func:`gallery_runs` (the gallery's rows).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from .. import runs
from .scores import ARM_ATTRIBUTES, DIVERGENCE_VALUES, check_scores
from .stats import seed_summary


def arm_order(meta: pd.DataFrame) -> pd.DataFrame:
    """``meta`` (indexed by arm, with columns method, divergence, beta) sorted into the paper's row order.

    Methods in :data:`rocm_rlhf.runs.ARM_METHODS` order (base, rocm, then the baselines); within ROCM beta = 0
    first, then the divergences in :data:`rocm_rlhf.runs.DIVERGENCES` order, each by increasing beta, then its
    adaptive-beta arms by increasing target; ties by arm id.
    """
    key = pd.DataFrame(
        {
            "m": meta["method"].map({m: i for i, m in enumerate(runs.ARM_METHODS)}),
            "d": [
                0 if (m == "rocm" and runs.is_unregularised(d, b)) else DIVERGENCE_VALUES.index(d)
                for m, d, b in zip(meta["method"], meta["divergence"], meta["beta"])
            ],
            "b": [np.inf if (m == "rocm" and getattr(runs.arm_or_none(a), "adaptive", False)) else
                  (-1.0 if pd.isna(b) else float(b)) for a, m, b in zip(meta.index, meta["method"], meta["beta"])],
            "t": [float(getattr(runs.arm_or_none(a), "target", "") or -1.0) for a in meta.index.astype(str)],
            "a": meta.index.astype(str),
        },
        index=meta.index,
    )
    return meta.loc[key.sort_values(["m", "d", "b", "t", "a"]).index]


def _group(method: str) -> str:
    if method in runs.UNTRAINED:
        return "base"
    if method in runs.SCORE_FUNCTION_METHODS:
        return "score_function"
    return "rocm" if method == "rocm" else "baseline"


def arm_table(scores: pd.DataFrame) -> pd.DataFrame:
    """One row per arm, in the paper's row order, indexed by arm.

    Columns: method, divergence, beta, group ("base", "rocm", "score_function" or "baseline") and label (:func:`rocm_rlhf.runs.arm_label`,
    e.g. "Base", "ROCM (β=0)", "ROCM-KL (β=0.1)", "RLCM"; a baseline with several arms, or two arms with one label,
    are labelled by their arm ids). An arm whose method, divergence or beta varies between its rows is an error.
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
    arms["group"] = [_group(m) for m in arms["method"]]
    arms = arm_order(arms)
    per_method = arms.groupby("method")["group"].transform("size")
    arms["label"] = [
        str(arm) if row["method"] != "rocm" and per_method[arm] > 1 and not is_arm_id(arm) else row_label(arm, row)
        for arm, row in arms.iterrows()
    ]
    dup = arms["label"][arms["label"].duplicated(keep=False)]
    if len(dup):
        arms.loc[dup.index, "label"] = dup.index.astype(str)
    arms.index.name = "arm"
    return arms


def regularised(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows of ROCM with a divergence and beta > 0 (of an arm table, or of training logs)."""
    return frame[(frame["method"] == "rocm") & (frame["divergence"] != runs.UNREGULARISED) & (frame["beta"] > 0)]


def unregularised(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows of ROCM at beta = 0 (of an arm table, or of training logs)."""
    return frame[(frame["method"] == "rocm") & ((frame["beta"] == 0) | (frame["divergence"] == runs.UNREGULARISED))]


def no_rocm_error(arms: pd.DataFrame, what: str) -> ValueError:
    return ValueError(
        f"{what} needs regularised ROCM arms (method 'rocm' with a divergence other than "
        f"'{runs.UNREGULARISED}' and beta > 0), but the score table has none (arms: {list(arms.index)}); pass the "
        "scores of the ROCM beta sweep"
    )


def _sweep(arms: pd.DataFrame, what: str) -> pd.DataFrame:
    """The regularised ROCM arms; an error if there are none or if two share a divergence and beta (as text)."""
    reg = regularised(arms)
    if len(reg) == 0:
        raise no_rocm_error(arms, what)
    cell = pd.DataFrame({"divergence": reg["divergence"], "beta": reg["beta"].map(runs.fmt_beta)})
    dup = cell.duplicated(keep=False)
    if dup.any():
        raise ValueError(
            f"several arms share a (divergence, beta): {list(reg.index[dup.to_numpy()])}; {what} cannot tell them "
            "apart, pass the scores of one sweep"
        )
    return reg


def sweep_arms(arms: pd.DataFrame, what: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The ROCM beta sweep of an arm table: (the beta = 0 arm, at most one; the regularised arms, at least one)."""
    reg = _sweep(arms, what)
    zero = unregularised(arms)
    if len(zero) > 1:
        raise ValueError(f"several ROCM beta = 0 arms {list(zero.index)}: keep one")
    return zero, reg


def _chosen(scores: pd.DataFrame, quality_metric: str, lower_is_better: bool) -> pd.DataFrame:
    """The arm-table rows of the best beta per divergence, in :data:`rocm_rlhf.runs.DIVERGENCES` order."""
    check_scores(scores, [quality_metric])
    reg = _sweep(arm_table(scores), "choose_beta")
    sub = scores[(scores["metric"] == quality_metric) & scores["arm"].isin(reg.index)]
    summ = seed_summary(sub).set_index("arm")
    missing = [a for a in reg.index if a not in summ.index]
    if missing:
        raise ValueError(f"metric {quality_metric!r} was not scored for ROCM arm(s) {missing}")
    chosen = []
    for div in runs.DIVERGENCES:
        cand = reg[reg["divergence"] == div].sort_values("beta")
        if len(cand) == 0:
            continue
        chosen.append(_best(summ.loc[cand.index, "mean"], lower_is_better))  # ties: smaller beta
    return reg.loc[chosen]


def choose_arms(scores: pd.DataFrame, quality_metric: str, *, lower_is_better: bool = False) -> dict[str, str]:
    """Per divergence, the arm id of the beta with the best mean ``quality_metric`` over training seeds.

    The mean is :func:`rocm_rlhf.analysis.stats.seed_summary`'s. Only regularised ROCM arms (beta > 0) are
    candidates; ties go to the smaller beta. Returns ``{divergence: arm}`` in the order of
    :data:`rocm_rlhf.runs.DIVERGENCES`. The report stages call it on the validation scores; called on the scores
    that are then reported it is optimistic (docs/method.md, section 'Evaluation, statistics, tables and figures').
    """
    chosen = _chosen(scores, quality_metric, lower_is_better)
    return dict(zip(chosen["divergence"], chosen.index))


def choose_beta(scores: pd.DataFrame, quality_metric: str, *, lower_is_better: bool = False) -> dict[str, float]:
    """Per divergence, the beta of :func:`choose_arms`' arm: ``{divergence: beta}``."""
    chosen = _chosen(scores, quality_metric, lower_is_better)
    return {div: float(beta) for div, beta in zip(chosen["divergence"], chosen["beta"])}


def _best(cand: pd.Series, lower_is_better: bool):
    """The index of the best value of ``cand`` (sorted by the setting, so that a tie goes to the first)."""
    values = cand.to_numpy(dtype=float)
    return cand.index[int(np.argmin(values) if lower_is_better else np.argmax(values))]


def _choose_within(scores: pd.DataFrame, quality_metric: str, lower_is_better: bool, candidates: dict,
                   groups: Sequence[str], group_of, setting_of, what: str) -> list[dict]:
    """The one choice of a setting among candidate arms, per group: ``candidates`` ``{arm: Run}``, grouped by
    ``group_of(run)`` (in ``groups`` order), each group's arms sorted by the value of ``setting_of(run)`` (its
    canonical text); the arm with the best mean ``quality_metric`` over training seeds wins (ties: the smaller
    setting). Rows: group, setting, arm, mean, n_seeds, candidates (the settings' texts)."""
    sub = scores[(scores["metric"] == quality_metric) & scores["arm"].isin(list(candidates))]
    summ = seed_summary(sub).set_index("arm")
    missing = sorted(set(candidates) - set(summ.index))
    if missing:
        raise ValueError(f"metric {quality_metric!r} was not scored for {what} arm(s) {missing}")
    rows = []
    for group in groups:
        cand = sorted((float(setting_of(r)), arm) for arm, r in candidates.items() if group_of(r) == group)
        if not cand:
            continue
        best = _best(summ.loc[[arm for _, arm in cand], "mean"], lower_is_better)
        rows.append({"group": group, "setting": setting_of(candidates[best]), "arm": best,
                     "mean": float(summ.loc[best, "mean"]), "n_seeds": int(summ.loc[best, "n_seeds"]),
                     "candidates": " ".join(setting_of(candidates[arm]) for _, arm in cand)})
    return rows


def _chosen_lrs(scores: pd.DataFrame, quality_metric: str, lower_is_better: bool) -> pd.DataFrame:
    """Per tuned baseline (arms that carry a learning rate, :func:`rocm_rlhf.runs.lr_grid`), the row of the learning
    rate with the best mean ``quality_metric`` over training seeds (ties: the smaller one): columns method, lr, arm,
    mean, n_seeds, candidates; in :data:`rocm_rlhf.runs.BASELINES` order."""
    tuned = {}
    for arm in scores["arm"].unique():
        run = runs.arm_or_none(arm)
        if run is not None and run.method in runs.BASELINES and run.lr:
            tuned[arm] = run
    rows = _choose_within(scores, quality_metric, lower_is_better, tuned, runs.BASELINES, lambda r: r.method,
                          lambda r: r.lr, "tuned baseline") if tuned else []
    return pd.DataFrame(rows, columns=["group", "setting", "arm", "mean", "n_seeds", "candidates"]).rename(
        columns={"group": "method", "setting": "lr"})


def tuned_setting(arm) -> str:
    """What a row of the choice file (results/stats/chosen.csv) chose, from its arm id: 'beta' (a divergence's fixed
    beta), 'target' (its adaptive beta's target) or 'lr' (a tuned baseline's learning rate)."""
    run = runs.parse_arm(str(arm))
    return "target" if run.adaptive else "lr" if run.lr else "beta"


def adaptive_arms(arms) -> list[str]:
    """The arm ids among ``arms`` of ROCM with an adaptive beta (``rocm-<divergence>-t<target>``)."""
    return [a for a in dict.fromkeys(map(str, arms)) if getattr(runs.arm_or_none(a), "adaptive", False)]


def _chosen_targets(scores: pd.DataFrame, quality_metric: str, lower_is_better: bool) -> pd.DataFrame:
    """Per divergence with adaptive-beta arms, the row of the target with the best mean ``quality_metric`` over
    training seeds (ties: the smaller target): columns divergence, target, arm, mean, n_seeds, candidates; in
    :data:`rocm_rlhf.runs.DIVERGENCES` order."""
    adaptive = {a: runs.parse_arm(a) for a in adaptive_arms(scores["arm"].unique())}
    rows = _choose_within(scores, quality_metric, lower_is_better, adaptive, runs.DIVERGENCES,
                          lambda r: r.divergence, lambda r: r.target, "adaptive-beta") if adaptive else []
    return pd.DataFrame(rows, columns=["group", "setting", "arm", "mean", "n_seeds", "candidates"]).rename(
        columns={"group": "divergence", "setting": "target"})


def _chosen_sf(scores: pd.DataFrame, quality_metric: str, lower_is_better: bool) -> pd.DataFrame:
    """Per score-function variant of ROCM (:data:`rocm_rlhf.runs.SCORE_FUNCTION_METHODS`) with arms in ``scores``,
    the row of the beta with the best mean ``quality_metric`` over training seeds (ties: the smaller beta): columns
    method, divergence, beta, arm, mean, n_seeds, candidates."""
    sf = {a: r for a in scores["arm"].unique()
          if (r := runs.arm_or_none(a)) is not None and r.method in runs.SCORE_FUNCTION_METHODS}
    rows = _choose_within(scores, quality_metric, lower_is_better, sf, runs.SCORE_FUNCTION_METHODS,
                          lambda r: r.method, lambda r: r.beta, "score-function") if sf else []
    out = pd.DataFrame(rows, columns=["group", "setting", "arm", "mean", "n_seeds", "candidates"]).rename(
        columns={"group": "method", "setting": "beta"})
    out.insert(1, "divergence", [runs.parse_arm(a).divergence for a in out["arm"]])
    return out


def chosen_table(scores: pd.DataFrame, quality_metric: str, *, lower_is_better: bool = False) -> pd.DataFrame:
    """The choice of settings on the scores given (the validation prompts) as a table (results/stats/chosen.csv):
    per divergence the chosen arm of :func:`choose_arms`, then per divergence with adaptive-beta arms its chosen
    target (:func:`_chosen_targets`), then per score-function variant its chosen beta (:func:`_chosen_sf`), then per
    tuned baseline its chosen learning rate (:func:`_chosen_lrs`); columns
    :data:`rocm_rlhf.runs.CHOSEN_COLUMNS` then metric, mean (over training seeds, of the per-run means), n_seeds and
    candidates (the betas, targets or learning rates it was chosen from)."""
    chosen = _chosen(scores, quality_metric, lower_is_better)
    sub = scores[scores["metric"] == quality_metric]
    summ = seed_summary(sub[sub["arm"].isin(chosen.index)]).set_index("arm")
    reg = regularised(arm_table(scores))
    rocm = pd.DataFrame({
        "method": "rocm",
        "divergence": chosen["divergence"].to_numpy(),
        "beta": [runs.fmt_beta(b) for b in chosen["beta"]],
        "lr": "",
        "target": "",
        "arm": chosen.index.to_numpy(),
        "metric": quality_metric,
        "mean": summ.loc[chosen.index, "mean"].to_numpy(dtype=float),
        "n_seeds": summ.loc[chosen.index, "n_seeds"].to_numpy(),
        "candidates": [" ".join(runs.fmt_beta(b) for b in sorted(reg.loc[reg["divergence"] == d, "beta"]))
                       for d in chosen["divergence"]],
    })
    tg = _chosen_targets(scores, quality_metric, lower_is_better)
    adaptive = pd.DataFrame({"method": "rocm", "divergence": tg["divergence"], "beta": "", "lr": "",
                             "target": tg["target"], "arm": tg["arm"], "metric": quality_metric,
                             "mean": tg["mean"].astype(float), "n_seeds": tg["n_seeds"], "candidates": tg["candidates"]})
    sf = _chosen_sf(scores, quality_metric, lower_is_better)
    sf = pd.DataFrame({"method": sf["method"], "divergence": sf["divergence"], "beta": sf["beta"], "lr": "",
                       "target": "", "arm": sf["arm"], "metric": quality_metric, "mean": sf["mean"].astype(float),
                       "n_seeds": sf["n_seeds"], "candidates": sf["candidates"]})
    lrs = _chosen_lrs(scores, quality_metric, lower_is_better)
    base = pd.DataFrame({"method": lrs["method"], "divergence": runs.UNREGULARISED, "beta": "", "lr": lrs["lr"],
                         "target": "", "arm": lrs["arm"], "metric": quality_metric, "mean": lrs["mean"].astype(float),
                         "n_seeds": lrs["n_seeds"], "candidates": lrs["candidates"]})
    parts = [part for part in (rocm, adaptive, sf, base) if len(part)]
    return pd.concat(parts, ignore_index=True) if len(parts) > 1 else rocm


def comparison_arms(scores: pd.DataFrame) -> tuple[list[str], list[str]]:
    """(treatments, controls) of the comparisons: the controls are :func:`rocm_rlhf.runs.control_arms` (base, then
    each baseline present by name), the treatments every other arm, sorted."""
    controls = runs.control_arms(scores["arm"])
    return sorted(set(scores["arm"]) - set(controls)), controls


def is_arm_id(arm) -> bool:
    """Whether ``arm`` is an arm id of :mod:`rocm_rlhf.runs` (custom arm names in hand-made score tables are not)."""
    return runs.arm_or_none(arm) is not None


def row_label(arm, row) -> str:
    """The label of an arm of a table with columns method, divergence, beta: :func:`label_of` where ``arm`` is an
    arm id (a tuned baseline's learning rate is in its id only), else from those columns."""
    if is_arm_id(arm):
        return label_of(arm)
    return runs.arm_label(row["method"], row["divergence"], row["beta"])


def label_of(arm: str) -> str:
    """The label of an arm id ('base' -> 'Base', 'rocm-kl-b0.1' -> 'ROCM-KL (β=0.1)', 'rlcm' -> 'RLCM'); a key
    that is not an arm id is returned as it is."""
    run = runs.arm_or_none(arm)
    return arm if run is None else runs.arm_label(run.method, run.divergence, run.beta_value, run.lr, run.target)


def gallery_runs(chosen_betas: Mapping[str, float], seed: int, *, unregularised: bool) -> dict[str, str]:
    """The gallery's rows, ``{arm: run id}``: the base model, ROCM at beta = 0 (if it was run), then each divergence
    at its chosen beta (e.g. :func:`choose_beta`'s), the ROCM runs of training seed ``seed``."""
    rows = {runs.BASE: runs.BASE}
    chosen = [runs.rocm_run(runs.UNREGULARISED, 0, seed)] if unregularised else []
    chosen += [runs.rocm_run(div, beta, seed) for div, beta in chosen_betas.items()]
    rows.update((run.arm, run.id) for run in chosen)
    return rows

