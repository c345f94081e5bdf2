"""A study's answers as results: attention checks, win rates per arm pair, a Bradley-Terry fit, rater agreement.

- Attention checks: a rater fails an ``identical`` check unless it answers tie, a ``broken`` one unless it picks the
  intact image. A rater whose share of failed checks exceeds ``max_failed`` is excluded, with all its answers; the
  failed checks and the excluded raters are counted in the results.
- Win rates: per pair of arms (the later arm of ``study.arms`` against the earlier), the share of the kept raters'
  answers that prefer arm A, a tie counting one half, with a percentile CI from a bootstrap that resamples raters and
  items (crossed: one draw of each per replicate, every answer weighted by how often its rater and its item were
  drawn; :func:`rocm_rlhf.analysis.stats.hierarchical_bootstrap` draws runs and prompts the same way).
- Bradley-Terry: ``P(i preferred to j) = sigmoid(theta_i - theta_j)``, fitted by Newton's method to all comparisons
  at once (a tie is half a win each way), with a small ridge ``RIDGE`` that keeps the fit finite when an arm wins or
  loses every comparison; strengths relative to the reference arm (the first of ``study.arms``), CI from the same
  bootstrap (the fit repeated per replicate, each answer weighted by how many times the replicate holds it, so that
  the ridge weighs the same against a replicate as against the data). Where the answers separate an arm from the
  reference (:func:`separated`: it beat a chain of arms ending at the reference and never lost back along one, or
  the other way round), its maximum-likelihood strength is infinite and the ridge's finite value only reflects the
  ridge: such an arm's strength (or replicate) counts as +-inf, so a CI limit is infinite when more than
  ``(1 - ci) / 2`` of the replicates are separated.
- Agreement: on the comparison items answered by at least two kept raters, the share of rater pairs that gave the
  same answer and Krippendorff's alpha (nominal: left, right, tie).

API: :func:`join_answers`, :func:`attention`, :func:`bradley_terry`, :func:`analyse` (everything, as tables and a
summary), :func:`study_text` (the Markdown and LaTeX table), :func:`fig_study` (the figure).
"""

from __future__ import annotations

import itertools
import os
from typing import NamedTuple

import numpy as np
import pandas as pd

from ..analysis.arms import label_of
from ..analysis.stats import _percentile_ci, _run_weights
from .design import BROKEN, CHOICES, IDENTICAL, PAIR

RIDGE = 0.01
"""The L2 penalty of the Bradley-Terry fit on the strengths (in comparisons' units: negligible beside a handful of
answers, enough to keep the fit finite under complete separation)."""


def join_answers(study: dict, answers: pd.DataFrame) -> pd.DataFrame:
    """Every answer with its item (kind, prompt, both sides' arms and runs, expected answer); an error naming an
    answer to an item the study does not have."""
    items = pd.DataFrame(study["items"])
    unknown = sorted(set(answers["item_id"]) - set(items["item_id"]))
    if unknown:
        raise ValueError(f"{len(unknown)} answer(s) to items this study does not have (e.g. {unknown[0]!r}): the "
                         "database belongs to another study")
    bad = sorted(set(answers["choice"]) - set(CHOICES))
    if bad:
        raise ValueError(f"answers with unknown choices {bad}; expected {', '.join(CHOICES)}")
    return answers.merge(items, on="item_id", how="left", validate="many_to_one")


def attention(joined: pd.DataFrame, max_failed: float) -> pd.DataFrame:
    """Per rater: answers, comparisons, attention checks answered and failed, the failed share and whether the rater
    is excluded (failed share > ``max_failed``; a rater who answered no check is kept)."""
    checks = joined[joined["kind"].isin([IDENTICAL, BROKEN])]
    failed = checks["choice"] != checks["expected"]
    out = pd.DataFrame({
        "n_answers": joined.groupby("rater_id").size(),
        "n_comparisons": joined[joined["kind"] == PAIR].groupby("rater_id").size(),
        "n_checks": checks.groupby("rater_id").size(),
        "n_failed": failed.groupby(checks["rater_id"]).sum(),
    }).fillna(0).astype(int)
    out["failed_share"] = np.where(out["n_checks"] > 0, out["n_failed"] / out["n_checks"].clip(lower=1), 0.0)
    out["excluded"] = out["failed_share"] > float(max_failed)
    out.index.name = "rater_id"
    return out.reset_index()


def bradley_terry(wins: np.ndarray, ridge: float = RIDGE, iterations: int = 100) -> np.ndarray:
    """Bradley-Terry strengths from ``wins`` (..., K, K): ``wins[..., i, j]`` = (weighted) times arm i was preferred
    to arm j (a tie: one half each way). Maximises ``sum n_ij log sigmoid(theta_i - theta_j) - ridge/2 |theta|^2``
    by Newton's method, batched over the leading axes; the strengths sum to zero."""
    w = np.asarray(wins, dtype=float)
    if w.shape[-1] != w.shape[-2] or w.shape[-1] < 2:
        raise ValueError(f"wins must be (..., K, K) with K >= 2 arms, got {w.shape}")
    if not (ridge > 0):
        raise ValueError(f"ridge must be > 0 (it keeps the fit finite), got {ridge}")
    k = w.shape[-1]
    n = w + np.swapaxes(w, -1, -2)
    theta = np.zeros(w.shape[:-1])
    eye = np.eye(k)
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-(theta[..., :, None] - theta[..., None, :])))
        grad = (w - n * p).sum(-1) - ridge * theta
        c = n * p * (1 - p)
        hess = c - eye * (c.sum(-1)[..., None] + ridge)  # negative definite
        step = np.linalg.solve(hess, grad[..., None])[..., 0]
        step = np.clip(step, -2.0, 2.0)
        theta = theta - step
        if np.max(np.abs(step)) < 1e-10:
            break
    return theta - theta.mean(-1, keepdims=True)


def separated(wins: np.ndarray) -> np.ndarray:
    """(..., K, K) signs from ``wins`` (..., K, K) as in :func:`bradley_terry`: +1 where ``theta_i - theta_j`` is
    +inf at the maximum likelihood (i beat a chain of arms ending at j, ``wins > 0`` along it, and j never reaches
    back to i: the answers separate them), -1 for the reverse, 0 where both reach each other (finite) or neither does."""
    reach = np.asarray(wins, dtype=float) > 0
    k = reach.shape[-1]
    reach = reach | np.eye(k, dtype=bool)
    for m in range(k):  # transitive closure (Floyd-Warshall), batched
        reach = reach | (reach[..., :, m, None] & reach[..., None, m, :])
    back = np.swapaxes(reach, -1, -2)
    return (reach & ~back).astype(int) - (back & ~reach).astype(int)


def _percentile_ci_inf(boot: np.ndarray, ci: float) -> tuple[float, float]:
    """:func:`~rocm_rlhf.analysis.stats._percentile_ci` of replicates that may be +-inf: a limit that falls among
    infinite replicates is infinite."""
    big = 1e300
    lo, hi = _percentile_ci(np.clip(boot, -big, big), ci)
    return tuple(float(np.sign(v) * np.inf) if abs(v) > 1e299 else v for v in (lo, hi))


class StudyResults(NamedTuple):
    """What :func:`analyse` returns: the per-pair win rates, the Bradley-Terry strengths, the raters (with their
    attention checks), the kept comparisons (one row per answer) and a summary dict."""

    win_rates: pd.DataFrame
    strengths: pd.DataFrame
    raters: pd.DataFrame
    comparisons: pd.DataFrame
    summary: dict


def _agreement(pairs: pd.DataFrame) -> dict:
    """Pairwise agreement and Krippendorff's alpha (nominal) over the items answered by >= 2 raters."""
    code = {c: i for i, c in enumerate(CHOICES)}
    o = np.zeros((len(CHOICES), len(CHOICES)))
    agree = total = n_items = 0
    for _, g in pairs.groupby("item_id"):
        values = [code[c] for c in g["choice"]]
        m = len(values)
        if m < 2:
            continue
        n_items += 1
        for a, b in itertools.permutations(values, 2):
            o[a, b] += 1.0 / (m - 1)
        for a, b in itertools.combinations(values, 2):
            agree += a == b
            total += 1
    nc = o.sum(1)
    n = nc.sum()
    expected = (n * n - (nc * nc).sum()) / (n - 1) if n > 1 else 0.0
    alpha = 1.0 - (n - np.trace(o)) / expected if expected > 0 else float("nan")
    return {"items_rated_twice": n_items, "pairwise_agreement": agree / total if total else float("nan"),
            "krippendorff_alpha": float(alpha)}


def analyse(study: dict, answers: pd.DataFrame, *, max_failed: float, n_boot: int, ci: float = 0.95,
            rng_seed: int = 0) -> StudyResults:
    """Attention checks, win rates with CIs per arm pair, Bradley-Terry strengths with CIs, rater agreement (see the
    module's description); an error if no rater is left after the attention checks."""
    arms = list(study["arms"])
    joined = join_answers(study, answers)
    raters = attention(joined, max_failed)
    kept = set(raters.loc[~raters["excluded"], "rater_id"])
    if not kept:
        raise ValueError(f"none of the {len(raters)} rater(s) is left: each failed more than study.attention."
                         f"max_failed = {max_failed} of its attention checks (see their answers in the database)")
    pairs = joined[(joined["kind"] == PAIR) & joined["rater_id"].isin(kept)].reset_index(drop=True)
    if pairs.empty:
        raise ValueError("the kept raters answered no comparison yet: collect more answers")
    pos = {a: i for i, a in enumerate(arms)}
    left, right = pairs["left_arm"].map(pos).to_numpy(), pairs["right_arm"].map(pos).to_numpy()
    a_idx, b_idx = np.maximum(left, right), np.minimum(left, right)  # A: the later arm of study.arms
    a_is_left = left > right
    score_a = np.where(pairs["choice"] == "tie", 0.5,
                       np.where((pairs["choice"] == "left") == a_is_left, 1.0, 0.0))
    comparisons = pairs.assign(arm_a=[arms[i] for i in a_idx], arm_b=[arms[i] for i in b_idx], score_a=score_a)

    k = len(arms)
    pair_list = [(a, b) for a in range(k) for b in range(a)]
    pair_of = {p: j for j, p in enumerate(pair_list)}
    col = np.array([pair_of[(a, b)] for a, b in zip(a_idx, b_idx)])
    onehot = np.zeros((len(pairs), len(pair_list)))
    onehot[np.arange(len(pairs)), col] = 1.0
    # wins: answer -> the (K x K) cells it adds to (A over B by score_a, B over A by 1 - score_a)
    to_wins = np.zeros((len(pairs), k * k))
    to_wins[np.arange(len(pairs)), a_idx * k + b_idx] = score_a
    to_wins[np.arange(len(pairs)), b_idx * k + a_idx] += 1.0 - score_a

    rater_codes, rater_idx = np.unique(pairs["rater_id"], return_inverse=True)
    item_codes, item_idx = np.unique(pairs["item_id"], return_inverse=True)

    def stats(weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(win rate per arm pair, strengths relative to arms[0]) for answer weights (B, n_answers)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            rate = (weights * score_a) @ onehot / (weights @ onehot)
        wins = (weights @ to_wins).reshape(-1, k, k)
        theta = bradley_terry(wins)
        rel = theta - theta[:, :1]
        sep = separated(wins)[:, :, 0]  # each arm against the reference
        return rate, np.where(sep > 0, np.inf, np.where(sep < 0, -np.inf, rel))

    rate, theta = stats(np.ones((1, len(pairs))))
    rng = np.random.default_rng(rng_seed)
    boot_rate, boot_theta = [], []
    block = max(1, 2_000_000 // max(1, len(pairs)))
    for start in range(0, int(n_boot), block):
        b = min(int(n_boot), start + block) - start
        # how many times each answer is in the replicate (its rater's draws x its item's draws), not a share: the
        # ridge is in answers' units, and weights summing to 1 instead of len(pairs) would make it len(pairs) times
        # stronger in the replicates than in the estimate (pulling their strengths towards 0)
        w = (_run_weights(len(rater_codes), rng, b)[:, rater_idx] * len(rater_codes)
             * _run_weights(len(item_codes), rng, b)[:, item_idx] * len(item_codes))
        r, t = stats(w)
        boot_rate.append(r)
        boot_theta.append(t)
    boot_rate, boot_theta = np.concatenate(boot_rate), np.concatenate(boot_theta)

    rows = []
    for j, (a, b) in enumerate(pair_list):
        sel = comparisons[col == j]
        finite = boot_rate[:, j][np.isfinite(boot_rate[:, j])]
        lo, hi = _percentile_ci(finite, ci) if len(finite) and len(sel) else (np.nan, np.nan)
        rows.append({"arm_a": arms[a], "arm_b": arms[b], "label_a": label_of(arms[a]), "label_b": label_of(arms[b]),
                     "n_answers": len(sel), "n_items": sel["item_id"].nunique(), "n_raters": sel["rater_id"].nunique(),
                     "wins_a": int((sel["score_a"] == 1).sum()), "wins_b": int((sel["score_a"] == 0).sum()),
                     "ties": int((sel["score_a"] == 0.5).sum()), "win_rate_a": float(rate[0, j]),
                     "ci_low": lo, "ci_high": hi, "ci": ci})
    win_rates = pd.DataFrame(rows)
    counts = pd.concat([comparisons["arm_a"], comparisons["arm_b"]]).value_counts()
    strengths = pd.DataFrame({
        "arm": arms, "label": [label_of(a) for a in arms], "strength": theta[0],
        "ci_low": [_percentile_ci_inf(boot_theta[:, i], ci)[0] if i else 0.0 for i in range(k)],
        "ci_high": [_percentile_ci_inf(boot_theta[:, i], ci)[1] if i else 0.0 for i in range(k)],
        "separated_share": (~np.isfinite(boot_theta)).mean(0),
        "p_beats_reference": 1.0 / (1.0 + np.exp(-theta[0])), "n_answers": [int(counts.get(a, 0)) for a in arms],
        "reference": arms[0], "ci": ci})
    strengths["rank"] = strengths["strength"].rank(ascending=False, method="min").astype(int)
    excluded = raters[raters["excluded"]]
    summary = {
        "raters": int(len(raters)), "raters_kept": int(len(kept)), "raters_excluded": int(len(excluded)),
        "excluded": sorted(excluded["rater_id"]), "max_failed": float(max_failed),
        "checks_answered": int(raters["n_checks"].sum()), "checks_failed": int(raters["n_failed"].sum()),
        "checks_failed_by_kept": int(raters.loc[~raters["excluded"], "n_failed"].sum()),
        "answers": int(len(joined)), "comparisons_analysed": int(len(pairs)),
        "comparisons_excluded": int(((joined["kind"] == PAIR) & ~joined["rater_id"].isin(kept)).sum()),
        "n_boot": int(n_boot), "ci": ci, "reference": arms[0], "ridge": RIDGE, **_agreement(pairs)}
    return StudyResults(win_rates, strengths, raters, comparisons, summary)


def _ci_text(mean: float, lo: float, hi: float, decimals: int) -> str:
    if np.isnan(mean):
        return "–"
    def num(v: float) -> str:
        return f"{v:.{decimals}f}" if np.isfinite(v) else ("∞" if v > 0 else "−∞")
    return f"{num(mean)} [{num(lo)}, {num(hi)}]"


def study_text(res: StudyResults, source: str) -> tuple[str, str, pd.DataFrame]:
    """(Markdown, LaTeX, long CSV table) of the study's results: the Bradley-Terry strengths, then the win rates."""
    from ..analysis.render import latex, markdown, md_escape, tex_escape

    s = res.summary
    pct = int(round(100 * s["ci"]))
    ref = label_of(s["reference"])
    bt_head = ["Arm", f"BT strength vs {ref} [{pct}% CI]", f"P(preferred to {ref})", "Rank", "Answers"]
    bt_rows = [[r.label, _ci_text(r.strength, r.ci_low, r.ci_high, 2), f"{r.p_beats_reference:.2f}", str(r.rank),
                str(r.n_answers)] for r in res.strengths.itertuples()]
    wr_head = ["A", "B", f"Win rate of A [{pct}% CI]", "A / B / tie", "Answers (items, raters)"]
    wr_rows = [[r.label_a, r.label_b, _ci_text(r.win_rate_a, r.ci_low, r.ci_high, 2),
                f"{r.wins_a} / {r.wins_b} / {r.ties}", f"{r.n_answers} ({r.n_items}, {r.n_raters})"]
               for r in res.win_rates.itertuples()]
    legend = (f"Pairwise preference study ({source} answers): {s['raters_kept']} of {s['raters']} raters kept, "
              f"{s['raters_excluded']} excluded for failing more than {s['max_failed']:.0%} of their attention checks "
              f"({s['checks_failed']} of {s['checks_answered']} checks failed in all, {s['checks_failed_by_kept']} by "
              f"kept raters); {s['comparisons_analysed']} comparisons analysed, {s['comparisons_excluded']} excluded. "
              f"Win rate: share of answers preferring A, a tie counting 1/2. Bradley-Terry strengths on the log-odds "
              f"scale relative to {ref}, fitted to all comparisons (ridge {s['ridge']}). CIs: percentile bootstrap "
              f"over raters and items ({s['n_boot']} resamples); ±∞: the answers (or more than "
              f"{(1 - s['ci']) / 2:.1%} of the resamples) separate the arm from {ref} (it never lost, or never won or "
              f"tied, along any chain of comparisons to {ref}), so its maximum-likelihood strength is infinite. "
              f"Agreement on the {s['items_rated_twice']} items "
              f"rated by two or more raters: {s['pairwise_agreement']:.2f} of rater pairs agree, Krippendorff's "
              f"alpha {s['krippendorff_alpha']:.2f}.")
    md = ("**Bradley-Terry fit**\n\n" + markdown(bt_head, [[md_escape(c) for c in r] for r in bt_rows], "lcccc")
          + "\n**Win rates per arm pair**\n\n" + markdown(wr_head, [[md_escape(c) for c in r] for r in wr_rows],
                                                            "llccc")
          + "\n" + legend + "\n")
    tex = (latex([tex_escape(h) for h in bt_head], [[tex_escape(c) for c in r] for r in bt_rows], "lcccc") + "\n"
           + latex([tex_escape(h) for h in wr_head], [[tex_escape(c) for c in r] for r in wr_rows], "llccc")
           + "% " + legend + "\n")
    long = pd.concat([res.strengths.assign(part="bradley_terry"), res.win_rates.assign(part="win_rate")],
                     ignore_index=True)
    return md, tex, long


def fig_study(res: StudyResults, out_stem: str | os.PathLike):
    """Bradley-Terry strengths with CIs (left) and the win rate of every arm pair with its CI (right)."""
    import matplotlib
    from matplotlib.figure import Figure

    from .. import runs
    from ..analysis.figures import STYLE, TEXT_WIDTH, save_figure
    from ..analysis.style import arm_style

    st = res.strengths.iloc[::-1]
    wr = res.win_rates.iloc[::-1]
    pct = int(round(100 * res.summary["ci"]))
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(TEXT_WIDTH, max(2.2, 0.9 + 0.22 * max(len(st), len(wr)))), layout="constrained")
        ax_bt, ax_wr = fig.subplots(1, 2, width_ratios=[1, 1.3])
        vals = st[["strength", "ci_low", "ci_high"]].to_numpy()
        edge = np.abs(vals[np.isfinite(vals)]).max(initial=1.0) + 1.0  # +-inf drawn at the plot's edge
        for y, r in enumerate(st.itertuples()):
            run = runs.parse_arm(r.arm)
            sty = arm_style(run.method, run.divergence, run.beta_value)
            x, lo, hi = np.clip([r.strength, r.ci_low, r.ci_high], -edge, edge)
            ax_bt.errorbar([x], [y], xerr=[[max(0.0, x - lo)], [max(0.0, hi - x)]],
                           capsize=2, **{**sty, "linestyle": "none"})
        ax_bt.axvline(0, color="#999999", linewidth=0.8, linestyle=":")
        ax_bt.set_yticks(range(len(st)), list(st["label"]))
        ax_bt.set_xlabel(f"Bradley-Terry strength vs {label_of(res.summary['reference'])}\n(log-odds, {pct}% CI)")
        ax_wr.errorbar(wr["win_rate_a"], range(len(wr)),
                       xerr=[(wr["win_rate_a"] - wr["ci_low"]).clip(lower=0), (wr["ci_high"] - wr["win_rate_a"]).clip(lower=0)],
                       color="#333333", marker="o", capsize=2, linestyle="none")
        ax_wr.axvline(0.5, color="#999999", linewidth=0.8, linestyle=":")
        ax_wr.set_xlim(0, 1)
        ax_wr.set_yticks(range(len(wr)), [f"{a} vs {b}" for a, b in zip(wr["label_a"], wr["label_b"])])
        ax_wr.set_xlabel(f"win rate of A over B (tie = 1/2, {pct}% CI)")
        return save_figure(fig, out_stem)
