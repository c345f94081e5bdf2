"""Tests of rocm_rlhf.analysis.stats: prompt means, the hierarchical bootstrap, the sign-flip and run-aware tests,
one Holm family, seed summaries, zeros; and on simulated clustered data, the error rates of the old test (image pairs
as independent units) against the new one."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from rocm_rlhf.analysis import stats, tables


def _table(values: dict, extra: dict | None = None) -> pd.DataFrame:
    """Long score table from {(arm, seed, prompt_id, sample_seed, metric): value}; run_id = arm/seed."""
    rows = []
    for (arm, seed, prompt, sseed, metric), v in values.items():
        row = dict(run_id=f"{arm}/s{seed}", arm=arm, seed=seed, prompt_id=prompt, sample_seed=sseed, metric=metric)
        row["value"] = v
        row.update((extra or {}).get(arm, {}))
        rows.append(row)
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------------ simulation


def simulate(rng, reps, *, n_prompts=24, n_sample=4, n_a=3, n_b=1, sd_interaction=1.0, sd_image=1.2, sd_run=0.1,
             sd_run_b=None, effect=0.0):
    """``reps`` datasets at once: arrays (reps, runs, prompts, sample seeds) of arm a and arm b.

    value = prompt effect (sd 2, shared by the arms: pairing removes it) + arm-by-prompt effect (sd_interaction: the
    prompt clustering of the differences) + run effect (sd_run per training run; sd_run_b for b, e.g. 0 for an
    untrained base model) + image noise (sd_image) + ``effect`` on arm a. The true arm difference is ``effect``.
    """
    sd_run_b = sd_run if sd_run_b is None else sd_run_b
    prompt = 2.0 * rng.normal(size=(reps, 1, n_prompts, 1))

    def arm(n_runs, sd_r, shift):
        inter = sd_interaction * rng.normal(size=(reps, 1, n_prompts, 1))
        run = sd_r * rng.normal(size=(reps, n_runs, 1, 1))
        return prompt + inter + run + sd_image * rng.normal(size=(reps, n_runs, n_prompts, n_sample)) + shift

    return arm(n_a, sd_run, effect), arm(n_b, sd_run_b, 0.0)


def old_rejects(a, b, alpha=0.05):
    """The old test, written out: training seeds averaged, then every (prompt, sample seed) image pair an independent
    unit; two-sided Wilcoxon signed-rank test (scipy's default zero rule). One boolean per dataset."""
    d = (a.mean(axis=1) - b.mean(axis=1)).reshape(a.shape[0], -1)
    return sps.wilcoxon(d, axis=1).pvalue < alpha


def old_ci_misses_zero(a, b, n_boot=400, seed=0):
    """The old percentile bootstrap CI of the mean over image pairs, vectorised over datasets: does it exclude 0?"""
    d = (a.mean(axis=1) - b.mean(axis=1)).reshape(a.shape[0], -1)
    idx = np.random.default_rng(seed).integers(0, d.shape[1], size=(n_boot, d.shape[1]))
    boot = d[:, idx].mean(axis=2)  # reps x n_boot
    lo, hi = np.quantile(boot, [0.025, 0.975], axis=1)
    return (lo > 0) | (hi < 0)


def new_results(a, b, paired=False, n_boot=200):
    """compare_arrays on every dataset (sample seeds averaged per prompt, as prompt_means does)."""
    out = []
    for i in range(a.shape[0]):
        xa, xb = a[i].mean(axis=-1), b[i].mean(axis=-1)
        seeds = dict(seeds_a=list(range(len(xa))), seeds_b=list(range(len(xb)))) if paired else {}
        out.append(stats.compare_arrays(xa, xb, n_boot=n_boot, n_flips=2000, rng_seed=i, **seeds))
    return pd.DataFrame(out)


def to_scores(a, b, arm_a="rocm", arm_b="base"):
    """One simulated dataset (runs x prompts x sample seeds per arm) as a score table."""
    frames = []
    for arm, x in ((arm_a, a), (arm_b, b)):
        r, p, s = np.meshgrid(np.arange(x.shape[0]), np.arange(x.shape[1]), np.arange(x.shape[2]), indexing="ij")
        frames.append(pd.DataFrame({"run_id": [f"{arm}/s{i}" for i in r.ravel()], "arm": arm, "seed": r.ravel(),
                                    "prompt_id": [f"p{i:03d}" for i in p.ravel()], "sample_seed": s.ravel(),
                                    "metric": "m", "value": x.ravel()}))
    return pd.concat(frames, ignore_index=True)


def test_clustered_null_old_test_rejects_far_too_often_new_test_near_nominal():
    # 24 prompts x 4 sample seeds; arm a 3 training runs with run effects (sd 0.1), arm b one untrained run (the
    # base model); the intra-prompt correlation of the image differences is about 0.5. No true difference.
    rng = np.random.default_rng(20240601)
    a, b = simulate(rng, 200, sd_run_b=0.0)
    old = old_rejects(a, b).mean()
    old_boot = old_ci_misses_zero(a, b).mean()
    new = new_results(a, b)
    rate, rate_flip = (new.p_value < 0.05).mean(), (new.p_flip < 0.05).mean()
    ci_miss = ((new.ci_low > 0) | (new.ci_high < 0)).mean()
    # measured with these seeds: old Wilcoxon 0.225, old bootstrap CI misses 0 in 0.25; new 0.06 (the sign flip
    # alone: 0.06), the hierarchical CI misses 0 in 0.07
    assert old > 0.15 and old_boot > 0.15, (old, old_boot)
    assert rate <= 0.075 and rate_flip <= 0.08, (rate, rate_flip)
    assert ci_miss <= 0.10, ci_miss


def test_clustered_null_with_seed_variance_on_both_sides():
    # 3 vs 3 training runs (paired by seed), run effects sd 0.3: the run is a unit of variation of its own
    rng = np.random.default_rng(7)
    a, b = simulate(rng, 200, n_b=3, sd_run=0.3)
    old = old_rejects(a, b).mean()
    new = new_results(a, b, paired=True)
    rate = (new.p_value < 0.05).mean()
    assert new.seeds_paired.all() and new.p_run.notna().all()
    # measured: old 0.405, new 0.055 (the sign flip alone, which holds the runs fixed: 0.155)
    assert old > 0.25 and rate <= 0.075, (old, rate)


def test_run_effects_are_held_fixed_by_the_sign_flip_and_counted_by_the_run_aware_test():
    # large run effects (sd 1) and little else: the prompt-level test treats the runs at hand as fixed and so rejects
    # when they happen to differ; the run-aware test (and hence p_value) keeps its level
    rng = np.random.default_rng(3)
    a, b = simulate(rng, 200, n_b=3, sd_run=1.0)
    new = new_results(a, b)
    assert (new.p_flip < 0.05).mean() > 0.3  # measured 0.41
    assert (new.p_run < 0.05).mean() <= 0.08 and (new.p_value < 0.05).mean() <= 0.08  # measured 0.05, 0.05
    # the hierarchical CI resamples 3 runs per arm: it counts the run variance, but too little with so few runs
    ci_miss = ((new.ci_low > 0) | (new.ci_high < 0)).mean()  # measured 0.16
    assert ci_miss < (new.p_flip < 0.05).mean()


def test_power_with_a_real_effect():
    rng = np.random.default_rng(11)
    a, b = simulate(rng, 200, sd_run_b=0.0, effect=1.0)  # about 3 standard errors of the per-prompt mean
    new = new_results(a, b)
    assert (new.p_value < 0.05).mean() >= 0.75  # measured 0.835 (the old test: 0.955, at 0.225 false positives)
    assert ((new.ci_low > 0) & (new.mean_diff > 0)).mean() >= 0.75
    # and the 95% CI covers the true effect most of the time
    assert ((new.ci_low <= 1.0) & (1.0 <= new.ci_high)).mean() >= 0.85


def test_compare_on_a_score_table_is_compare_arrays_on_its_prompt_means():
    rng = np.random.default_rng(5)
    a, b = simulate(rng, 1, n_a=3, n_b=1, n_prompts=10)
    scores = to_scores(a[0], b[0]).sample(frac=1.0, random_state=0)  # row order must not matter
    r = stats.compare(scores, "m", "rocm", "base", n_boot=300, n_flips=500)
    ref = stats.compare_arrays(a[0].mean(-1), b[0].mean(-1), seeds_a=[0, 1, 2], seeds_b=[0], n_boot=300, n_flips=500)
    for k, v in ref.items():
        assert r[k] == pytest.approx(v, rel=1e-12, abs=1e-15), k
    x = stats.prompt_means(scores, "m", "rocm")
    assert x.shape == (3, 10) and list(x.index) == [0, 1, 2]
    np.testing.assert_allclose(x.to_numpy(), a[0].mean(-1))
    d = stats.prompt_differences(scores, "m", "rocm", "base")
    np.testing.assert_allclose(d.to_numpy(), a[0].mean(axis=(0, 2)) - b[0].mean(axis=(0, 2)))
    assert r["n_prompts"] == 10 and r["n_seeds_a"] == 3 and r["n_seeds_b"] == 1 and not r["seeds_paired"]
    assert r["mean_diff"] == pytest.approx(d.mean()) and r["d_z"] == pytest.approx(d.mean() / d.std(ddof=1))


# ------------------------------------------------------------------------------------------------ sign flip


def _brute_force_p(d):
    t = abs(sum(d))
    return np.mean([abs(np.dot(s, d)) >= t - 1e-9 for s in itertools.product([1.0, -1.0], repeat=len(d))])


def test_sign_flip_exact_enumeration_is_the_brute_force_count():
    rng = np.random.default_rng(0)
    for n in (1, 2, 3, 7, 10):
        d = np.round(rng.normal(0.4, 1, n), 1)  # rounded: ties and zeros
        r = stats.sign_flip_test(d)
        assert r["exact"] and r["n_flips"] == 2**n
        assert r["p_value"] == pytest.approx(_brute_force_p(d), abs=1e-12), d
    # all positive: only the observed signs and their mirror are as extreme
    assert stats.sign_flip_test(np.arange(1.0, 13.0))["p_value"] == pytest.approx(2 / 4096)


def test_sign_flip_random_flips_agree_with_exact_enumeration_for_small_n():
    rng = np.random.default_rng(1)
    for n in (6, 12):
        d = rng.normal(0.5, 1, n)
        exact = stats.sign_flip_test(d)["p_value"]
        rnd = stats.sign_flip_test(d, exact_max=0, n_flips=20_000, rng_seed=3)
        assert not rnd["exact"] and rnd["n_flips"] == 20_000
        assert rnd["p_value"] == pytest.approx(exact, abs=4 * np.sqrt(exact * (1 - exact) / 20_000) + 1e-4)
        k = rnd["p_value"] * (1 + 20_000) - 1  # p = (1 + #extreme) / (1 + n_flips)
        assert k == pytest.approx(round(k), abs=1e-6)
        assert stats.sign_flip_test(d, exact_max=0, n_flips=500, rng_seed=3) == stats.sign_flip_test(
            d, exact_max=0, n_flips=500, rng_seed=3
        )
    # never 0 with random flips; p = 1 when every difference is 0
    big = np.full(40, 1.0)
    assert stats.sign_flip_test(big, n_flips=999)["p_value"] == pytest.approx(1 / 1000)
    assert stats.sign_flip_test(np.zeros(40), n_flips=99)["p_value"] == 1.0
    assert stats.sign_flip_test(np.zeros(5))["p_value"] == 1.0


def test_zero_differences_change_nothing_in_the_sign_flip_test():
    d = np.array([0.3, -0.1, 0.5, 0.2, 0.4, -0.2, 0.6])
    with_zeros = np.concatenate([d, np.zeros(5)])
    assert stats.sign_flip_test(with_zeros)["p_value"] == pytest.approx(stats.sign_flip_test(d)["p_value"], abs=1e-15)


# --------------------------------------------------------------------------------------------- bootstrap


def test_hierarchical_bootstrap_with_one_run_per_arm_is_the_bootstrap_over_prompts():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(1, 9)), rng.normal(size=(1, 9))
    got = stats.hierarchical_bootstrap(x, y, n_boot=500, rng_seed=4)
    d = (x - y)[0]
    idx = np.random.default_rng(4).integers(0, 9, size=(500, 9))  # one block: the plain prompt bootstrap
    np.testing.assert_allclose(got, d[idx].mean(axis=1))
    np.testing.assert_array_equal(got, stats.hierarchical_bootstrap(x, y, paired=True, n_boot=500, rng_seed=4))


def test_hierarchical_bootstrap_resamples_runs_then_prompts():
    # runs differ by a constant, prompts not at all: every replicate is the mean of a resample of the 2 runs
    x = np.array([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    b = stats.hierarchical_bootstrap(x, n_boot=20_000, rng_seed=0)
    vals, counts = np.unique(b, return_counts=True)
    np.testing.assert_array_equal(vals, [0.0, 0.5, 1.0])
    np.testing.assert_allclose(counts / b.size, [0.25, 0.5, 0.25], atol=0.015)
    # paired by seed: a run effect shared by the same seed of both arms cancels; unpaired it does not
    y = x + np.array([[0.1, -0.1, 0.0]])
    assert np.ptp(stats.hierarchical_bootstrap(x, y, paired=True, n_boot=2000)) <= 0.2 + 1e-12
    assert np.ptp(stats.hierarchical_bootstrap(x, y, paired=False, n_boot=2000)) > 1.5
    # one prompt draw is shared by all runs: a prompt effect common to the runs keeps its full variance
    p = np.tile(np.arange(30.0), (3, 1))
    b1 = stats.hierarchical_bootstrap(p[:1], n_boot=4000, rng_seed=1)
    b3 = stats.hierarchical_bootstrap(p, n_boot=4000, rng_seed=1)
    assert b3.std() == pytest.approx(b1.std(), rel=0.1)
    with pytest.raises(ValueError, match="same number of runs"):
        stats.hierarchical_bootstrap(x, y[:1], paired=True)


# ------------------------------------------------------------------------------------------ run-aware test


def test_run_aware_test_hand_worked():
    # a: runs [1, 2] and [3, 4]; b one run [0, 0]: d = [2, 3]; V_prompt = var([2, 3]) / 2 = 0.25 (df 1);
    # a's run means 1.5, 3.5: var 2, V_run = 2 / 2 = 1 (df 1); V = 1.25; t = 2.5 / sqrt(1.25);
    # df = 1.25^2 / (0.25^2 + 1^2) = 1.5625 / 1.0625
    r = stats.run_aware_test([[1.0, 2.0], [3.0, 4.0]], [[0.0, 0.0]])
    assert r["df"] == pytest.approx(1.5625 / 1.0625)
    assert r["p_value"] == pytest.approx(2 * sps.t.sf(2.5 / np.sqrt(1.25), 1.5625 / 1.0625))
    # one run per arm: no run variance to estimate
    assert np.isnan(stats.run_aware_test([[1.0, 2.0]], [[0.0, 0.5]])["p_value"])
    # paired: the run term is the variance of the seeds' differences
    a, b = np.array([[1.0, 2.0], [3.0, 4.0]]), np.array([[0.0, 1.0], [2.0, 3.0]])
    assert stats.run_aware_test(a, b, paired=True)["p_value"] == 0.0  # every difference is exactly 1


# ------------------------------------------------------------------------------------------------ Holm


def test_holm_hand_worked_example():
    # p = [0.01, NaN, 0.04, 0.03, 0.005]; NaN is left out, so m = 4.
    # sorted: 0.005, 0.01, 0.03, 0.04 times (m - j + 1) = 4, 3, 2, 1 -> 0.020, 0.030, 0.060, 0.040
    # running max -> 0.020, 0.030, 0.060, 0.060 (the last is raised to keep the order)
    got = stats.holm([0.01, np.nan, 0.04, 0.03, 0.005])
    np.testing.assert_allclose(got, [0.03, np.nan, 0.06, 0.06, 0.02], rtol=1e-12)
    np.testing.assert_array_equal(stats.holm([0.6, 0.7]), [1.0, 1.0])
    np.testing.assert_allclose(stats.holm([0.02, 0.02, 0.5]), [0.06, 0.06, 0.5])
    assert stats.holm([]).shape == (0,)
    assert np.isnan(stats.holm([np.nan])).all()
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        stats.holm([0.1, 1.5])


def _holm_rejects(p, alpha):
    """Holm's step-down procedure written out: reject while p_(j) <= alpha / (m - j + 1)."""
    order = np.argsort(p)
    m = len(p)
    reject = np.zeros(m, bool)
    for j, i in enumerate(order):
        if p[i] <= alpha / (m - j):
            reject[i] = True
        else:
            break
    return reject


def test_holm_properties_and_agreement_with_the_step_down_procedure():
    rng = np.random.default_rng(0)
    for _ in range(50):
        m = int(rng.integers(1, 15))
        p = rng.uniform(0, 1, m) ** 3
        adj = stats.holm(p)
        assert np.all(adj >= p - 1e-15) and np.all(adj <= 1)
        assert np.all(adj <= np.minimum(1, m * p) + 1e-15)
        o = np.argsort(p)
        assert np.all(np.diff(adj[o]) >= 0)
        assert adj[o[0]] == pytest.approx(min(1.0, m * p[o[0]]))
        for alpha in (0.001, 0.01, 0.05, 0.1, 0.3):
            np.testing.assert_array_equal(adj <= alpha, _holm_rejects(p, alpha))


def _family_scores(rng, n_prompts=14, metrics=("m1", "m2", "m3")):
    """base (1 run), two ROCM arms and one baseline (2 runs each), 2 sample seeds; on m1 rocm-kl is better by 1."""
    arms = (("base", 1, "base", "none", np.nan), ("rocm-kl-b0.1", 2, "rocm", "kl", 0.1),
            ("rocm-none-b0", 2, "rocm", "none", 0.0), ("rlcm", 2, "rlcm", "none", np.nan))
    frames = []
    for k, metric in enumerate(metrics):
        prompt = 2.0 * rng.normal(size=(1, n_prompts, 1))  # shared by the arms
        for arm, n_runs, method, div, beta in arms:
            eff = 1.0 if (k == 0 and arm == "rocm-kl-b0.1") else 0.0
            x = (prompt + 0.3 * rng.normal(size=(1, n_prompts, 1)) + 0.05 * rng.normal(size=(n_runs, 1, 1))
                 + 0.3 * rng.normal(size=(n_runs, n_prompts, 2)) + eff)
            t = to_scores(x, x[:1], arm_a=arm, arm_b="_").query("arm == @arm")
            t = t.assign(metric=metric, method=method, divergence=div, beta=beta)
            t["run_id"] = [arm if arm == "base" else f"{arm}-s{s}" for s in t["seed"]]
            frames.append(t)
    return pd.concat(frames, ignore_index=True)


def test_holm_is_over_the_whole_family():
    rng = np.random.default_rng(8)
    scores = _family_scores(rng)
    kw = dict(n_boot=200, n_flips=500)
    full = stats.compare_all(scores, ["rocm-kl-b0.1", "rocm-none-b0"], ["base", "rlcm"], **kw)
    assert len(full) == 2 * 2 * 3
    np.testing.assert_allclose(full.p_holm, stats.holm(full.p_value.to_numpy()))  # one family, not one per metric
    assert (full.significant == (full.p_holm < 0.05)).all()
    # a smaller family (one metric) adjusts less: more comparisons -> larger (or equal) adjusted p
    one = stats.compare_all(scores, ["rocm-kl-b0.1", "rocm-none-b0"], ["base", "rlcm"], metrics="m1", **kw)
    key = ["metric", "arm_a", "arm_b"]
    both = one.merge(full, on=key, suffixes=("_one", "_full"))
    np.testing.assert_allclose(both.p_value_one, both.p_value_full)  # the p-values themselves do not depend on it
    assert (both.p_holm_full >= both.p_holm_one - 1e-15).all()
    i = both.p_value_one.idxmin()
    assert both.loc[i, "p_holm_one"] == pytest.approx(min(1, 4 * both.loc[i, "p_value_one"]))
    assert both.loc[i, "p_holm_full"] == pytest.approx(min(1, 12 * both.loc[i, "p_value_one"]))
    # primary p: the larger of the sign-flip and the run-aware p (each arm here has >= 2 runs or is the base)
    np.testing.assert_allclose(full.p_value, np.fmax(full.p_flip, full.p_run))
    assert (full.p_run.notna()).all()
    with pytest.raises(ValueError, match="unknown"):
        stats.compare_all(scores, ["rocm-kl-b0.1"], ["base"], alpha_typo=0.1)
    with pytest.raises(ValueError, match="no comparison left"):
        stats.compare_all(scores, ["base"], ["base"])


def test_comparison_family_and_table1_daggers_are_the_same_result(tmp_path):
    rng = np.random.default_rng(8)
    scores = _family_scores(rng, n_prompts=16)
    kw = dict(n_boot=300, n_flips=1000, rng_seed=5)
    comp = stats.comparison_family(scores, **kw)  # what the stats stage writes to comparisons.csv
    assert set(comp.arm_b) == {"base", "rlcm"} and set(comp.arm_a) == {"rocm-kl-b0.1", "rocm-none-b0"}
    assert comp.metric.nunique() == 3 and len(comp) == 12
    assert comp.loc[(comp.metric == "m1") & (comp.arm_a == "rocm-kl-b0.1"), "significant"].all()  # planted effect
    comp.to_csv(tmp_path / "comparisons.csv", index=False)
    back = pd.read_csv(tmp_path / "comparisons.csv")
    for given in (None, back):  # computed by table1 itself, or read from comparisons.csv
        long = tables.table1(scores, ["m2", "m3"], "m1", ["base", "rlcm"], tmp_path / "t1", comparisons=given, **kw)
        shown = long[~long.arm.isin(["base", "rlcm"])]
        assert len(shown) == 6
        for _, row in shown.iterrows():
            c = comp[(comp.arm_a == row.arm) & (comp.metric == row.metric)].set_index("arm_b")
            expected = bool((c.significant & (c.mean_diff > 0)).all())
            assert row.better_than_controls == expected, (row.arm, row.metric)
            for ctrl in ("base", "rlcm"):
                assert row[f"p_holm_vs_{ctrl}"] == pytest.approx(c.loc[ctrl, "p_holm"], rel=1e-12)
    assert long.set_index(["arm", "metric"]).loc[("rocm-kl-b0.1", "m1"), "better_than_controls"]
    assert "all 12 comparisons" in (tmp_path / "t1.md").read_text()
    with pytest.raises(ValueError, match="not in the comparisons"):
        tables.table1(scores, ["m2"], "m1", ["base"], tmp_path / "t2", comparisons=comp[comp.metric != "m2"])


# ------------------------------------------------------------------------------------- zeros, summaries, input


def _hand_table():
    # arm A: seeds 1, 2; arm B: seed 0; units (p1, 0), (p1, 1), (p2, 0), (p2, 1); metric "m" (and "n" for B only)
    v = {
        ("A", 1, "p1", 0, "m"): 1.0, ("A", 2, "p1", 0, "m"): 3.0,
        ("A", 1, "p1", 1, "m"): 4.0, ("A", 2, "p1", 1, "m"): 8.0,    # A on p1: (1 + 3 + 4 + 8) / 4 = 4
        ("A", 1, "p2", 0, "m"): 0.0, ("A", 2, "p2", 0, "m"): 0.0,
        ("A", 1, "p2", 1, "m"): -1.0, ("A", 2, "p2", 1, "m"): 0.0,   # A on p2: -0.25
        ("B", 0, "p1", 0, "m"): 0.5, ("B", 0, "p1", 1, "m"): 7.5,    # B on p1: 4
        ("B", 0, "p2", 0, "m"): 0.0, ("B", 0, "p2", 1, "m"): -2.5,   # B on p2: -1.25
        ("B", 0, "p1", 0, "n"): 1.0,
    }  # fmt: skip
    return _table(v)


def test_prompt_differences_zero_fractions_and_hand_values():
    scores = _hand_table().iloc[::-1]
    d = stats.prompt_differences(scores, "m", "A", "B")
    pd.testing.assert_series_equal(d, pd.Series([0.0, 1.0], index=pd.Index(["p1", "p2"], name="prompt_id"),
                                                name="A - B"))
    x = stats.prompt_means(scores, "m", "A")
    np.testing.assert_allclose(x.to_numpy(), [[2.5, -0.5], [5.5, 0.0]])  # seeds 1, 2 x prompts p1, p2
    r = stats.compare(scores, "m", "A", "B", n_boot=200, n_flips=100)
    assert r["mean_a"] == pytest.approx((4.0 - 0.25) / 2) and r["mean_b"] == pytest.approx((4.0 - 1.25) / 2)
    assert r["mean_diff"] == pytest.approx(0.5) and r["n_zero_diff"] == 1
    assert r["zero_frac_a"] == pytest.approx(3 / 8) and r["zero_frac_b"] == pytest.approx(1 / 4)
    # exact sign flip over 2 prompts, d = [0, 1]: |T*| = 1 for all 4 sign vectors: p = 1
    assert r["p_flip"] == 1.0 and r["flips_exact"] and r["n_flips"] == 4
    summ = stats.seed_summary(scores).set_index(["arm", "metric"])
    assert summ.loc[("A", "m"), "zero_frac"] == pytest.approx(3 / 8)
    assert summ.loc[("B", "n"), "zero_frac"] == 0.0


def test_prompt_differences_raise_on_mismatched_or_missing_input():
    scores = _hand_table()
    drop_b = scores[~((scores.arm == "B") & (scores.prompt_id == "p2") & (scores.sample_seed == 1))]
    with pytest.raises(ValueError, match=r"'A' and 'B'.*1 only in 'A'.*0 only in 'B'"):
        stats.prompt_differences(drop_b, "m", "A", "B")
    with pytest.raises(ValueError, match=r"arm 'C' is not in the score table"):
        stats.prompt_differences(scores, "m", "A", "C")
    with pytest.raises(ValueError, match=r"metric 'n' was not scored for arm 'A'"):
        stats.prompt_differences(scores, "n", "A", "B")
    short = scores.drop(scores[(scores.arm == "A") & (scores.seed == 2) & (scores.prompt_id == "p2")].index)
    with pytest.raises(ValueError, match=r"arm 'A'.*training seeds did not score the same"):
        stats.prompt_differences(short, "m", "A", "B")


def test_input_validation_errors():
    scores = _hand_table()
    with pytest.raises(ValueError, match="lacks column"):
        stats.seed_summary(scores.drop(columns="sample_seed"))
    bad = scores.copy()
    bad.loc[0, "value"] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        stats.seed_summary(bad)
    with pytest.raises(ValueError, match="share \\(arm, seed"):
        stats.seed_summary(pd.concat([scores, scores.iloc[:1]]))
    with pytest.raises(ValueError, match="empty"):
        stats.seed_summary(scores.iloc[:0])
    with pytest.raises(ValueError, match="at least 2 prompts"):
        stats.compare_arrays([[1.0]], [[0.0]])


def test_seed_summary_on_hand_table():
    v = {}
    # arm A, metric m: seed 1 images [1, 3] (mean 2), seed 2 [4, 6] (5), seed 3 [7, 11] (9)
    for seed, (x, y) in {1: (1.0, 3.0), 2: (4.0, 6.0), 3: (7.0, 11.0)}.items():
        v[("A", seed, "p1", 0, "m")] = x
        v[("A", seed, "p2", 0, "m")] = y
    v[("base", 0, "p1", 0, "m")] = 2.0
    v[("base", 0, "p2", 0, "m")] = 0.0
    extra = {"A": {"method": "rocm", "beta": 0.1}, "base": {"method": "base", "beta": np.nan}}
    scores = _table(v, extra)
    scores["path"] = [f"img{i}.png" for i in range(len(scores))]  # varies within an arm: dropped
    out = stats.seed_summary(scores).set_index("arm")
    # A: mean (2 + 5 + 9) / 3 = 16/3; deviations -10/3, -1/3, 11/3; sum of squares 222/9; / (3 - 1) -> 111/9
    assert out.loc["A", "mean"] == pytest.approx(16 / 3)
    assert out.loc["A", "std"] == pytest.approx(np.sqrt(111 / 9))
    assert out.loc["A", "n_seeds"] == 3 and out.loc["A", "n_images"] == 6 and out.loc["A", "n_prompts"] == 2
    assert out.loc["base", "mean"] == pytest.approx(1.0) and np.isnan(out.loc["base", "std"])
    assert out.loc["base", "zero_frac"] == 0.5 and out.loc["A", "zero_frac"] == 0.0
    assert out.loc["A", "method"] == "rocm" and out.loc["A", "beta"] == 0.1 and np.isnan(out.loc["base", "beta"])
    assert "path" not in out.columns and "ci_low" not in out.columns
    # with n_boot: hierarchical CI of the arm mean. A's 3 runs x 2 prompts: every bootstrap replicate lies within
    # the range of the run-by-prompt means [1, 11], narrower than the t-interval of the 3 seed means, which the CI
    # then takes (16/3 +- t_{0.975, 2} sqrt(111/9) / sqrt(3) = 16/3 +- 8.72)
    ci = stats.seed_summary(scores, n_boot=2000).set_index("arm")
    half = 4.302652729911275 * np.sqrt(111 / 9) / np.sqrt(3)
    assert ci.loc["A", "ci_low"] == pytest.approx(16 / 3 - half) and ci.loc["A", "ci_high"] == pytest.approx(16 / 3 + half)
    assert ci.loc["base", "ci_low"] == 0.0 and ci.loc["base", "ci_high"] == 2.0  # one run: the prompt bootstrap
    r = stats.compare(scores, "m", "A", "base", n_boot=100, n_flips=100)
    assert r["mean_a"] == pytest.approx(out.loc["A", "mean"]) and r["mean_b"] == pytest.approx(1.0)


def test_cohen_dz_hand_worked():
    d = [1.0, -2.0, 3.0, 0.0, 4.0, -1.0]
    # mean 5/6; sum of squares 31 - 6 * (5/6)^2 = 161/6; sd^2 = (161/6) / 5 = 161/30
    assert stats.cohen_dz(d) == pytest.approx((5 / 6) / np.sqrt(161 / 30))
    assert stats.cohen_dz([0.0, 0.0]) == 0.0 and stats.cohen_dz([1.0, 1.0]) == np.inf
    assert np.isnan(stats.cohen_dz([1.0]))


def test_identical_arms_give_p_one_and_a_zero_ci():
    rng = np.random.default_rng(4)
    a, _ = simulate(rng, 1, n_a=2, n_prompts=8)
    scores = to_scores(a[0], a[0][:1])
    copy = scores[scores.arm == "rocm"].assign(arm="rocm2", run_id=lambda t: t.run_id.str.replace("rocm", "rocm2"))
    r = stats.compare(pd.concat([scores, copy]), "m", "rocm2", "rocm", n_boot=300, n_flips=100)
    assert r["seeds_paired"] and r["p_value"] == 1.0 and r["p_flip"] == 1.0 and r["p_run"] == 1.0
    assert r["mean_diff"] == 0.0 and r["ci_low"] == r["ci_high"] == 0.0 and r["n_zero_diff"] == 8
