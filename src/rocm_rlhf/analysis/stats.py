"""The statistics of the tables: seed summaries, hierarchical bootstrap CIs, prompt-level tests, one Holm family.

API: :func:`seed_summary`; :func:`prompt_means`, :func:`prompt_differences` (sample seeds averaged per prompt);
:func:`hierarchical_bootstrap` (training runs, then prompts); :func:`sign_flip_test` (the prompt is the unit) and
:func:`run_aware_test` (prompt and training-run variance); :func:`compare_arrays`, :func:`compare`,
:func:`compare_all` (Holm over the whole family) and :func:`comparison_family` (the one family behind
results/stats/comparisons.csv and Table 1's daggers); :func:`cohen_dz`, :func:`holm`. Significance: Holm over the
family of p = the sign-flip p, or the larger of it and the run-aware p when an arm has >= 2 training seeds. Input:
a score table (:mod:`.scores`). Why: docs/method.md, section 'Statistics'."""

from __future__ import annotations

from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd
from scipy import stats as _sps

from .scores import KEY_COLUMNS, UNIT, check_scores, name_list

N_FLIPS = 100_000
"""Default number of random sign vectors of :func:`sign_flip_test` when exact enumeration is too large."""

EXACT_MAX_PROMPTS = 32
"""Up to this many prompts :func:`sign_flip_test` enumerates all 2^n sign vectors (as two halves of 2^(n/2))."""

_BLOCK_ELEMENTS = 4_000_000
"""Bootstrap replicates x prompts (or flips x prompts) drawn per block: bounds memory; fixed, so that results depend
only on the data and the seed."""

_COMPARE_KW = ("n_boot", "n_flips", "ci", "rng_seed")

COMPARISON_COLUMNS = [
    "metric", "arm_a", "arm_b", "n_prompts", "n_seeds_a", "n_seeds_b", "seeds_paired", "mean_a", "mean_b",
    "mean_diff", "ci_low", "ci_high", "ci", "p_value", "p_holm", "significant", "p_flip", "flips_exact", "n_flips",
    "p_run", "df_run", "d_z", "n_zero_diff", "zero_frac_a", "zero_frac_b",
]  # fmt: skip
"""The columns of :func:`compare_all` (then the carried arm attributes with suffixes _a and _b)."""


# --------------------------------------------------------------------------------------------------------------
# helpers: one arm's runs x prompts matrix
# --------------------------------------------------------------------------------------------------------------


def _arm_attributes(scores: pd.DataFrame) -> pd.DataFrame:
    """Extra columns constant within every arm (NaN counted as a value), one row per arm, indexed by arm."""
    extra = [c for c in scores.columns if c not in KEY_COLUMNS]
    if not extra:
        return pd.DataFrame(index=pd.Index(sorted(scores["arm"].unique()), name="arm"))
    sub = scores[["arm", *extra]].drop_duplicates()
    keep = [c for c in extra if not sub.groupby("arm")[c].nunique(dropna=False).gt(1).any()]
    return scores[["arm", *keep]].drop_duplicates("arm").set_index("arm").sort_index()


class _Block:
    """One arm on one metric: ``x`` (DataFrame, training seeds x prompts, each cell the mean over the run's sample
    seeds of that prompt; rows sorted by seed, columns by prompt_id), its (prompt_id, sample_seed) units, the
    fraction of exact zeros among its image values and its number of images."""

    def __init__(self, sel: pd.DataFrame, metric: str, arm: str):
        seeds = np.sort(sel["seed"].unique())
        per_unit = sel.groupby(UNIT, sort=True).size()
        if (per_unit != len(seeds)).any():
            counts = sel.groupby("seed").size().to_dict()
            raise ValueError(
                f"arm {arm!r}, metric {metric!r}: its {len(seeds)} training seeds did not score the same (prompt_id, "
                f"sample_seed) units (images per seed: {counts}); rescore the incomplete runs or drop them"
            )
        self.units = per_unit.index
        self.x = sel.groupby(["seed", "prompt_id"], sort=True)["value"].mean().unstack("prompt_id")
        self.seeds = seeds.tolist()
        values = sel["value"].to_numpy(dtype=float)
        self.zero_frac = float(np.mean(values == 0.0))
        self.n_images = int(values.size)


class _Blocks:
    """The :class:`_Block` of each (arm, metric) of a validated score table, built once on first use."""

    def __init__(self, scores: pd.DataFrame):
        self.scores = scores
        self._groups = {k: g for k, g in scores.groupby(["arm", "metric"], sort=False)}
        self._cache: dict[tuple[str, str], _Block] = {}

    def get(self, metric: str, arm: str) -> _Block:
        key = (arm, metric)
        if key not in self._cache:
            if key not in self._groups:
                s = self.scores
                if not (s["arm"] == arm).any():
                    raise ValueError(f"arm {arm!r} is not in the score table (arms: {sorted(s['arm'].unique())})")
                raise ValueError(
                    f"metric {metric!r} was not scored for arm {arm!r} "
                    f"(its metrics: {sorted(s.loc[s['arm'] == arm, 'metric'].unique())})"
                )
            self._cache[key] = _Block(self._groups[key], metric, arm)
        return self._cache[key]

    def pair(self, metric: str, arm_a: str, arm_b: str) -> tuple[_Block, _Block]:
        """Both arms' blocks; an error unless both scored the same (prompt_id, sample_seed) units."""
        a, b = self.get(metric, arm_a), self.get(metric, arm_b)
        only_a = a.units.difference(b.units)
        only_b = b.units.difference(a.units)
        if len(only_a) or len(only_b):
            raise ValueError(
                f"metric {metric!r}: arms {arm_a!r} and {arm_b!r} were not scored on the same (prompt_id, "
                f"sample_seed) units: {len(only_a)} only in {arm_a!r} (e.g. {list(only_a[:3])}), {len(only_b)} only in "
                f"{arm_b!r} (e.g. {list(only_b[:3])}); evaluate both arms on the same prompts and sample seeds"
            )
        return a, b


def prompt_means(scores: pd.DataFrame, metric: str, arm: str) -> pd.DataFrame:
    """One arm on one metric as a matrix: rows = training seeds (sorted), columns = prompt_id (sorted), each cell
    the mean of that run's images of that prompt (its sample seeds averaged). Raises if the arm or the metric is
    absent or if the arm's seeds did not all score the same (prompt_id, sample_seed) units."""
    scores = check_scores(scores, arm_attributes=False)
    return _Blocks(scores).get(metric, arm).x.copy()


def prompt_differences(scores: pd.DataFrame, metric: str, arm_a: str, arm_b: str) -> pd.Series:
    """Per prompt: arm_a's mean minus arm_b's, each averaged over its training seeds and the prompt's sample seeds.

    These are the units of :func:`sign_flip_test`. Float Series indexed by prompt_id (sorted), named
    ``"arm_a - arm_b"``. Raises ValueError, naming the arms, if an arm or the metric is absent, if the two arms did
    not score the same (prompt_id, sample_seed) units, or if an arm's training seeds scored different units.
    """
    scores = check_scores(scores, arm_attributes=False)
    a, b = _Blocks(scores).pair(metric, arm_a, arm_b)
    d = a.x.mean(axis=0) - b.x.mean(axis=0)
    d.name = f"{arm_a} - {arm_b}"
    d.index.name = "prompt_id"
    return d.astype(float)


# --------------------------------------------------------------------------------------------------------------
# hierarchical bootstrap
# --------------------------------------------------------------------------------------------------------------


def _as_matrix(x: Any, what: str) -> np.ndarray:
    m = np.asarray(x, dtype=float)
    if m.ndim == 1:
        m = m[None, :]
    if m.ndim != 2 or m.shape[0] < 1 or m.shape[1] < 1:
        raise ValueError(f"{what} must be a non-empty runs x prompts matrix, got shape {np.shape(x)}")
    if not np.all(np.isfinite(m)):
        raise ValueError(f"{what} contains NaN or infinite values")
    return m


def _run_weights(n: int, rng: np.random.Generator, b: int) -> np.ndarray:
    """(b, n) weights: per replicate, how often each of n runs was drawn (n draws with replacement) over n. One run:
    weight 1 and no draw, so that with one run per arm the bootstrap is exactly the one over prompts."""
    if n == 1:
        return np.ones((b, 1))
    idx = rng.integers(0, n, size=(b, n))
    counts = np.bincount((idx + n * np.arange(b)[:, None]).ravel(), minlength=b * n).reshape(b, n)
    return counts / n


def hierarchical_bootstrap(
    x: Any, y: Any = None, *, paired: bool = False, n_boot: int = 10_000, rng_seed: int = 0
) -> np.ndarray:
    """``n_boot`` bootstrap replicates of mean(x) or, with ``y``, of mean(x) - mean(y).

    ``x`` and ``y`` are runs x prompts matrices (:func:`prompt_means`; a 1-d array is one run), the same prompts in
    the same column order. Each replicate draws, per arm, the training runs with replacement (the same draw for both
    arms when ``paired``: x's and y's rows are the same training seeds in the same order), then the prompts with
    replacement, **one prompt draw shared by all runs and both arms** (every run scored the same prompts: prompts are
    crossed with runs, and the draw keeps the pairing by prompt); the replicate is the mean over the drawn prompts of
    (the drawn runs' mean of x) minus (of y). With one run per arm no run is drawn: it is the bootstrap over prompts.
    Blocks of replicates come from ``numpy.random.default_rng(rng_seed)`` in a fixed order and size, so the result
    depends only on the data and the seed.
    """
    x = _as_matrix(x, "x")
    n_p = x.shape[1]
    if y is not None:
        y = _as_matrix(y, "y")
        if y.shape[1] != n_p:
            raise ValueError(f"x and y must have the same prompts (columns): {n_p} vs {y.shape[1]}")
        if paired and y.shape[0] != x.shape[0]:
            raise ValueError(f"paired runs need the same number of runs in x and y: {x.shape[0]} vs {y.shape[0]}")
    if int(n_boot) < 1:
        raise ValueError(f"n_boot must be a positive integer, got {n_boot}")
    n_boot = int(n_boot)
    rng = np.random.default_rng(rng_seed)
    block = max(1, _BLOCK_ELEMENTS // n_p)
    diff = x - y if (y is not None and paired) else None
    out = np.empty(n_boot)
    for start in range(0, n_boot, block):  # blocks of replicates, not a loop over replicates
        b = min(n_boot, start + block) - start
        pidx = rng.integers(0, n_p, size=(b, n_p))
        if y is None:
            z = _run_weights(x.shape[0], rng, b) @ x
        elif paired:
            z = _run_weights(x.shape[0], rng, b) @ diff
        else:
            z = _run_weights(x.shape[0], rng, b) @ x - _run_weights(y.shape[0], rng, b) @ y
        out[start : start + b] = np.take_along_axis(z, pidx, axis=1).mean(axis=1)
    return out


def _percentile_ci(boot: np.ndarray, ci: float) -> tuple[float, float]:
    lo, hi = np.quantile(boot, [(1 - ci) / 2, (1 + ci) / 2])
    return float(lo), float(hi)


# --------------------------------------------------------------------------------------------------------------
# tests
# --------------------------------------------------------------------------------------------------------------


def _signed_sums(v: np.ndarray) -> np.ndarray:
    """All 2^len(v) sums sum_i s_i v_i with s_i = +-1."""
    s = np.zeros(1)
    for x in v:
        s = np.concatenate([s + x, s - x])
    return s


def sign_flip_test(
    differences: Sequence[float] | np.ndarray,
    *,
    n_flips: int = N_FLIPS,
    rng_seed: int = 0,
    exact_max: int = EXACT_MAX_PROMPTS,
) -> dict[str, Any]:
    """Two-sided sign-flip permutation test of mean(d) = 0 for per-prompt mean differences d (one per prompt).

    Under the null the sign of each prompt's difference is exchangeable; the statistic is |sum(d)|. With
    n <= ``exact_max`` prompts every one of the 2^n sign vectors is counted (two halves of 2^(n/2) partial sums,
    one sorted and searched), p = #{|T*| >= |T|} / 2^n, exact (the observed vector is among them). Otherwise
    ``n_flips`` random sign vectors from ``numpy.random.default_rng(rng_seed)`` (fair bits, in fixed blocks) and
    p = (1 + #{|T*| >= |T|}) / (1 + n_flips), never 0. ">=" allows a rounding tolerance of 1e-9 * sum|d|.

    Zeros: a prompt whose difference is exactly 0 contributes 0 under either sign, so it changes neither T nor any
    T*; it is kept (it only repeats every sign vector twice, which leaves the exact p unchanged). Unlike the
    Wilcoxon signed-rank test there are no ranks, so ties and zero differences need no rule. All d = 0: p = 1.

    Returns ``p_value``, ``exact`` (bool) and ``n_flips`` (the sign vectors counted: 2^n when exact).
    """
    d = np.asarray(differences, dtype=float).ravel()
    if d.size < 1:
        raise ValueError("a sign-flip test needs at least one prompt")
    if not np.all(np.isfinite(d)):
        raise ValueError("differences contain NaN or infinite values")
    n = d.size
    thr = abs(d.sum()) - 1e-9 * np.abs(d).sum()
    if n <= exact_max:
        if thr <= 0:
            return {"p_value": 1.0, "exact": True, "n_flips": 2**n}
        h = n // 2
        a = _signed_sums(d[:h])
        b = np.sort(_signed_sums(d[h:]))
        upper = b.size - np.searchsorted(b, thr - a, side="left")  # a + b >= thr
        lower = np.searchsorted(b, -thr - a, side="right")  # a + b <= -thr
        count = int(upper.sum()) + int(lower.sum())
        return {"p_value": float(count / 2.0**n), "exact": True, "n_flips": 2**n}
    if int(n_flips) < 1:
        raise ValueError(f"n_flips must be a positive integer, got {n_flips}")
    n_flips = int(n_flips)
    if thr <= 0:
        return {"p_value": 1.0, "exact": False, "n_flips": n_flips}
    rng = np.random.default_rng(rng_seed)
    block = max(1, _BLOCK_ELEMENTS // n)
    total, extreme = d.sum(), 0
    n_bytes = (n + 7) // 8
    for start in range(0, n_flips, block):
        b = min(n_flips, start + block) - start
        bits = np.unpackbits(rng.integers(0, 256, size=(b, n_bytes), dtype=np.uint8), axis=1, count=n)
        t = 2.0 * (bits @ d) - total  # sign +1 where the bit is 1, -1 where it is 0
        extreme += int(np.count_nonzero(np.abs(t) >= thr))
    return {"p_value": (1 + extreme) / (1 + n_flips), "exact": False, "n_flips": n_flips}


def run_aware_test(x_a: Any, x_b: Any, *, paired: bool = False) -> dict[str, float]:
    """A t test of mean(x_a) - mean(x_b) whose variance has a prompt part and a training-run part.

    ``x_a``, ``x_b``: runs x prompts matrices (:func:`prompt_means`), the same prompts. Prompts are crossed with runs
    (every run scores the same prompts), so neither a test over prompts (the runs at hand held fixed) nor one over the
    runs' means (the prompts at hand held fixed: an arm's runs share its prompt-by-arm effects) covers both. Here
    ``V = V_prompt + V_run`` with ``V_prompt = var(d) / n_prompts`` (d: the per-prompt differences, runs averaged)
    and ``V_run`` = var over seeds of the paired runs' mean differences / n (``paired``: both arms have the same
    seeds) or else the sum over the arms with >= 2 runs of var(run means) / n_runs; var with ddof=1. An arm with a
    single run adds no run term (right for the untrained base model; for a trained arm run once its seed variance is
    unknown and not counted). t = mean(d) / sqrt(V), two-sided, Welch-Satterthwaite degrees of freedom
    ``V^2 / sum(V_i^2 / df_i)``. The image noise enters both parts a little: slightly conservative.

    Returns ``p_value`` and ``df``; both NaN when no arm has two runs (then it would be a t test over prompts only).
    """
    xa, xb = _as_matrix(x_a, "x_a"), _as_matrix(x_b, "x_b")
    if xa.shape[1] != xb.shape[1]:
        raise ValueError(f"the arms must have the same prompts: {xa.shape[1]} vs {xb.shape[1]} columns")
    if paired and xa.shape[0] != xb.shape[0]:
        raise ValueError(f"paired runs need the same number of runs: {xa.shape[0]} vs {xb.shape[0]}")
    if max(xa.shape[0], xb.shape[0]) < 2 or xa.shape[1] < 2:
        return {"p_value": float("nan"), "df": float("nan")}
    d = xa.mean(axis=0) - xb.mean(axis=0)
    parts = [(d.var(ddof=1) / d.size, d.size - 1)]
    if paired:
        runs_d = xa.mean(axis=1) - xb.mean(axis=1)
        parts.append((runs_d.var(ddof=1) / runs_d.size, runs_d.size - 1))
    else:
        parts += [(x.mean(axis=1).var(ddof=1) / x.shape[0], x.shape[0] - 1) for x in (xa, xb) if x.shape[0] >= 2]
    v = sum(vi for vi, _ in parts)
    if v == 0:
        return {"p_value": 1.0 if d.mean() == 0 else 0.0, "df": float("nan")}
    df = v**2 / sum(vi**2 / k for vi, k in parts)
    t = d.mean() / np.sqrt(v)
    return {"p_value": float(2 * _sps.t.sf(abs(t), df)), "df": float(df)}


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


# --------------------------------------------------------------------------------------------------------------
# comparisons
# --------------------------------------------------------------------------------------------------------------


def compare_arrays(
    x_a: Any,
    x_b: Any,
    *,
    seeds_a: Sequence | None = None,
    seeds_b: Sequence | None = None,
    n_boot: int = 10_000,
    n_flips: int = N_FLIPS,
    ci: float = 0.95,
    rng_seed: int = 0,
) -> dict[str, Any]:
    """The comparison of arm a (treatment) with arm b (control) from their runs x prompts matrices.

    ``x_a``, ``x_b``: :func:`prompt_means` (rows: training seeds ``seeds_a`` / ``seeds_b`` in that order; columns:
    the same prompts). The runs are **paired** when both seed lists are given and equal (then the bootstrap draws one
    set of seeds for both, and the run-aware test uses the seeds' differences); otherwise unpaired (e.g. the base
    model's single run): each arm is averaged over its own seeds per prompt, and the pairing is by prompt. Returns:

    * ``mean_a``, ``mean_b``, ``mean_diff`` (= mean_a - mean_b): means over prompts of the seed-averaged prompt means;
    * ``ci_low``, ``ci_high``: percentile CI at level ``ci`` of :func:`hierarchical_bootstrap` (runs, then prompts);
    * ``p_flip``, ``flips_exact``, ``n_flips``: :func:`sign_flip_test` of the per-prompt differences (the runs at
      hand held fixed);
    * ``p_run``, ``df_run``: :func:`run_aware_test` (prompt and training-run variance), NaN when each arm has one run;
    * ``p_value``, **the p-value of significance** (Holm-adjusted in :func:`compare_all`): ``p_flip`` when each arm
      has one training run, else ``max(p_flip, p_run)``: significant only if the difference holds over prompts in the
      exact, distribution-free test *and* against the spread of the training runs (an intersection-union test: valid
      when either test is);
    * ``d_z``: :func:`cohen_dz` of the per-prompt differences; ``n_zero_diff``: prompts whose difference is exactly 0;
    * ``n_prompts``, ``n_seeds_a``, ``n_seeds_b``, ``seeds_paired``, ``ci``.
    """
    xa, xb = _as_matrix(x_a, "x_a"), _as_matrix(x_b, "x_b")
    if xa.shape[1] != xb.shape[1]:
        raise ValueError(f"the arms must have the same prompts: {xa.shape[1]} vs {xb.shape[1]} columns")
    if xa.shape[1] < 2:
        raise ValueError(f"a comparison needs at least 2 prompts, got {xa.shape[1]}")
    if not 0 < ci < 1:
        raise ValueError(f"ci must be in (0, 1), e.g. 0.95, got {ci}")
    if (seeds_a is not None and len(seeds_a) != xa.shape[0]) or (seeds_b is not None and len(seeds_b) != xb.shape[0]):
        raise ValueError("seeds_a / seeds_b must name one seed per row of x_a / x_b")
    paired = seeds_a is not None and seeds_b is not None and list(seeds_a) == list(seeds_b)
    d = xa.mean(axis=0) - xb.mean(axis=0)
    boot = hierarchical_bootstrap(xa, xb, paired=paired, n_boot=n_boot, rng_seed=rng_seed)
    lo, hi = _percentile_ci(boot, ci)
    flip = sign_flip_test(d, n_flips=n_flips, rng_seed=rng_seed)
    run = run_aware_test(xa, xb, paired=paired)
    p = flip["p_value"] if np.isnan(run["p_value"]) else max(flip["p_value"], run["p_value"])
    return {
        "n_prompts": int(d.size),
        "n_seeds_a": int(xa.shape[0]),
        "n_seeds_b": int(xb.shape[0]),
        "seeds_paired": bool(paired),
        "mean_a": float(xa.mean()),
        "mean_b": float(xb.mean()),
        "mean_diff": float(d.mean()),
        "ci_low": lo,
        "ci_high": hi,
        "ci": float(ci),
        "p_value": float(p),
        "p_flip": flip["p_value"],
        "flips_exact": flip["exact"],
        "n_flips": flip["n_flips"],
        "p_run": run["p_value"],
        "df_run": run["df"],
        "d_z": cohen_dz(d),
        "n_zero_diff": int(np.count_nonzero(d == 0.0)),
    }


def compare(scores: pd.DataFrame, metric: str, arm_a: str, arm_b: str, **kw: Any) -> dict[str, Any]:
    """One comparison, arm_a (treatment) against arm_b (control) on ``metric``: :func:`compare_arrays` on the two
    arms' :func:`prompt_means`, plus ``metric``, ``arm_a``, ``arm_b`` and ``zero_frac_a`` / ``zero_frac_b`` (the
    fraction of each arm's image values on this metric that are exactly 0). ``kw``: n_boot, n_flips, ci, rng_seed.
    No multiplicity correction: that is :func:`compare_all`'s."""
    scores = check_scores(scores, arm_attributes=False)
    _check_kw(kw)
    return _compare(_Blocks(scores), metric, arm_a, arm_b, **kw)


def _check_kw(kw: dict) -> None:
    unknown = sorted(set(kw) - set(_COMPARE_KW))
    if unknown:
        raise ValueError(f"the comparisons take only {list(_COMPARE_KW)}; unknown: {unknown}")


def _compare(blocks: _Blocks, metric: str, arm_a: str, arm_b: str, **kw: Any) -> dict[str, Any]:
    a, b = blocks.pair(metric, arm_a, arm_b)
    out: dict[str, Any] = {"metric": metric, "arm_a": arm_a, "arm_b": arm_b}
    out.update(compare_arrays(a.x.to_numpy(), b.x.to_numpy(), seeds_a=a.seeds, seeds_b=b.seeds, **kw))
    out["zero_frac_a"] = a.zero_frac
    out["zero_frac_b"] = b.zero_frac
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
    """Every treatment arm against every control arm for every metric, **one Holm family**: one row per comparison.

    * Pairs with treatment == control are skipped; a pair whose mirror image (control, treatment) was already
      compared is skipped too (the same test with the sign flipped; it would double-count in the family).
    * ``metrics=None`` means every metric in the table (sorted).
    * ``kw`` goes to :func:`compare_arrays` (n_boot, n_flips, ci, rng_seed); every comparison uses the same seed.
    * ``p_holm``: :func:`holm` of ``p_value`` over **all rows together** (every treatment x control x metric);
      ``significant = p_holm < alpha``.
    * Arm attributes (extra columns constant within each arm) are carried with suffixes ``_a`` and ``_b``.

    Columns: :data:`COMPARISON_COLUMNS`, then the carried attributes. Rows in the order metric, treatment, control.
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
    _check_kw(kw)
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    pairs: list[tuple[str, str]] = []
    for a in treat:
        for b in ctrl:
            if a != b and (b, a) not in pairs:
                pairs.append((a, b))
    if not pairs:
        raise ValueError(f"no comparison left: treatments {treat} and controls {ctrl} only pair arms with themselves")
    blocks = _Blocks(scores)
    out = pd.DataFrame([_compare(blocks, m, a, b, **kw) for m in mets for a, b in pairs])
    out["p_holm"] = holm(out["p_value"].to_numpy())
    out["significant"] = out["p_holm"] < alpha
    out = out[COMPARISON_COLUMNS]
    attrs = _arm_attributes(scores)
    if len(attrs.columns):
        out = out.merge(attrs.add_suffix("_a"), left_on="arm_a", right_index=True, how="left")
        out = out.merge(attrs.add_suffix("_b"), left_on="arm_b", right_index=True, how="left")
    return out.reset_index(drop=True)


def comparison_family(scores: pd.DataFrame, *, alpha: float = 0.05, **kw: Any) -> pd.DataFrame:
    """The comparisons of the paper: :func:`compare_all` of every arm against the controls of
    :func:`rocm_rlhf.analysis.arms.comparison_arms` (the base model, then each baseline present) on every metric of
    the table, one Holm family. ``results/stats/comparisons.csv`` is this table, and Table 1's daggers read it; ``kw``:
    n_boot, n_flips, ci, rng_seed."""
    from .arms import comparison_arms  # arms imports this module

    treatments, controls = comparison_arms(scores)
    return compare_all(scores, treatments, controls, None, alpha, **kw)


# --------------------------------------------------------------------------------------------------------------
# summaries across training seeds
# --------------------------------------------------------------------------------------------------------------


def t_interval(mean, std, n, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Student-t confidence interval of a mean over ``n`` seeds with sample std ``std`` (ddof = 1):
    mean ± t_{(1+level)/2, n-1} std / sqrt(n); NaN where n < 2. Elementwise over arrays."""
    mean, std, n = (np.asarray(v, dtype=float) for v in (mean, std, n))
    with np.errstate(invalid="ignore", divide="ignore"):
        half = _sps.t.ppf((1 + level) / 2, n - 1) * std / np.sqrt(n)
    half = np.where(n >= 2, half, np.nan)
    return mean - half, mean + half


def seed_summary(scores: pd.DataFrame, *, n_boot: int = 0, ci: float = 0.95, rng_seed: int = 0) -> pd.DataFrame:
    """Per (arm, metric): mean and spread across training seeds, and the fraction of exact zeros.

    For each training seed, the seed's score is the mean over all its images. Then across seeds:

    * ``mean``: the mean of the per-seed means (with every prompt scored on the same number of sample seeds, the
      mean over prompts of the seed-averaged prompt means, i.e. :func:`compare`'s ``mean_a``);
    * ``std``: their sample standard deviation, ddof=1 (NaN with a single seed, e.g. the base model);
    * ``n_seeds``, ``n_images`` (all images of the arm over all seeds, for that metric), ``n_prompts``;
    * ``zero_frac``: the fraction of the arm's image values that are exactly 0;
    * with ``n_boot`` > 0, ``ci_low`` and ``ci_high``: percentile CI at level ``ci`` of the arm's mean from
      :func:`hierarchical_bootstrap` (training runs, then prompts; over prompts only with one seed), widened with
      several seeds to cover the Student-t interval of the per-seed means (a percentile bootstrap over a handful of
      runs is too narrow: with 3 runs about half the t-interval's width).

    Arm attributes (extra columns constant within each arm, e.g. method, divergence, beta) are carried.
    Rows sorted by arm, then metric.
    """
    scores = check_scores(scores, arm_attributes=False)
    per_seed = scores.groupby(["arm", "metric", "seed"], sort=True)["value"].mean().rename("seed_mean").reset_index()
    agg = per_seed.groupby(["arm", "metric"], sort=True)["seed_mean"].agg(
        mean="mean", std=lambda s: s.std(ddof=1) if len(s) > 1 else np.nan, n_seeds="size"
    )
    counts = scores.assign(zero=scores["value"].astype(float) == 0.0).groupby(["arm", "metric"], sort=True).agg(
        n_images=("value", "size"), n_prompts=("prompt_id", "nunique"), zero_frac=("zero", "mean")
    )
    out = agg.join(counts).reset_index()
    out["n_seeds"] = out["n_seeds"].astype(int)
    out["zero_frac"] = out["zero_frac"].astype(float)
    if n_boot:
        if not 0 < ci < 1:
            raise ValueError(f"ci must be in (0, 1), e.g. 0.95, got {ci}")
        blocks = _Blocks(scores)
        cis = [
            _percentile_ci(hierarchical_bootstrap(blocks.get(m, a).x.to_numpy(), n_boot=n_boot, rng_seed=rng_seed), ci)
            for a, m in zip(out["arm"], out["metric"])
        ]
        lo = np.array([c[0] for c in cis], dtype=float)
        hi = np.array([c[1] for c in cis], dtype=float)
        # a percentile bootstrap over 2 to 5 runs is too narrow (3 runs: about half the t-interval); with several
        # seeds the interval also covers the Student-t interval of the per-seed means
        t_lo, t_hi = t_interval(out["mean"], out["std"], out["n_seeds"], ci)
        several = out["n_seeds"].to_numpy() >= 2
        lo[several] = np.minimum(lo[several], t_lo[several])
        hi[several] = np.maximum(hi[several], t_hi[several])
        out["ci_low"], out["ci_high"] = lo, hi
    attrs = _arm_attributes(scores)
    if len(attrs.columns):
        out = out.merge(attrs, left_on="arm", right_index=True, how="left")
    return out.reset_index(drop=True)
