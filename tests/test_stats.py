"""Tests of rocm_rlhf.analysis.stats: seed summaries, paired differences, bootstrap, Wilcoxon, effect sizes, Holm."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats as sps

from rocm_rlhf.analysis import stats

torch.set_num_threads(1)


def _table(values: dict, extra: dict | None = None) -> pd.DataFrame:
    """Long score table from {(arm, seed, prompt_id, sample_seed, metric): value}; run_id = arm/seed."""
    rows = []
    for (arm, seed, prompt, sseed, metric), v in values.items():
        row = dict(run_id=f"{arm}/s{seed}", arm=arm, seed=seed, prompt_id=prompt, sample_seed=sseed, metric=metric)
        row["value"] = v
        row.update((extra or {}).get(arm, {}))
        rows.append(row)
    return pd.DataFrame(rows)


def _synthetic(rng, n_prompts, n_sample_seeds, arms, metrics=("m",), sigma=np.sqrt(3) / 2):
    """arms: {arm: (n_seeds, {metric: shift})}. value = unit effect + shift + independent noise N(0, sigma^2)."""
    units = [(f"p{i:03d}", s) for i in range(n_prompts) for s in range(n_sample_seeds)]
    frames = []
    for metric in metrics:
        u = rng.normal(size=len(units)) * 2.0  # strong unit effect shared by all arms: pairing must remove it
        for arm, (n_seeds, shifts) in arms.items():
            for seed in range(n_seeds):
                frames.append(
                    pd.DataFrame(
                        {
                            "run_id": f"{arm}/s{seed}",
                            "arm": arm,
                            "seed": seed,
                            "prompt_id": [p for p, _ in units],
                            "sample_seed": [s for _, s in units],
                            "metric": metric,
                            "value": u + shifts.get(metric, 0.0) + sigma * rng.normal(size=len(units)),
                            "method": arm.split("-")[0],
                        }
                    )
                )
    return pd.concat(frames, ignore_index=True)


# ---------------------------------------------------------------------------------------------------- detection


def test_known_effect_is_detected_and_ci_contains_the_true_shift():
    rng = np.random.default_rng(11)
    # base: 1 seed, rocm: 3 seeds. With sigma^2 = 3/4 the difference rocm - base per unit has variance
    # sigma^2 / 3 + sigma^2 = 1, so a shift of 0.5 is 0.5 sd of the differences.
    # 100 prompts x 2 sample seeds = 200 units.
    scores = _synthetic(
        rng, 100, 2, {"base": (1, {}), "rocm": (3, {"m1": 0.5}), "rlcm": (2, {})}, metrics=("m1", "m2")
    )
    scores = scores.sample(frac=1.0, random_state=0)  # row order must not matter
    res = stats.compare_all(scores, ["rocm", "rlcm"], ["base"], n_boot=4000)
    assert list(res["metric"]) == ["m1", "m1", "m2", "m2"]
    row = res[(res.metric == "m1") & (res.arm_a == "rocm")].iloc[0]
    assert row.n_pairs == 200 and row.n_seeds_a == 3 and row.n_seeds_b == 1
    assert row.p_holm < 0.05 and bool(row.significant)
    assert 0 < row.ci_low < 0.5 < row.ci_high
    assert row.mean_diff == pytest.approx(row.mean_a - row.mean_b, abs=1e-12)
    assert 0.25 < row.d_z < 0.75 and row.rank_biserial > 0.1
    # family of m1 has 2 comparisons: the smallest p gets Bonferroni's factor 2
    fam = res[res.metric == "m1"]
    i = fam.p_value.idxmin()
    assert fam.loc[i, "p_holm"] == pytest.approx(min(1.0, 2 * fam.loc[i, "p_value"]))
    assert (res.p_holm >= res.p_value).all()
    # arm attributes carried with suffixes
    assert row.method_a == "rocm" and row.method_b == "base"


def test_null_rejection_rate_and_ci_coverage_are_nominal():
    rng = np.random.default_rng(2024)
    reps, rejections, covers = 200, 0, 0
    for _ in range(reps):
        scores = _synthetic(rng, 40, 2, {"base": (1, {}), "rocm": (2, {})})
        r = stats.compare(scores, "m", "rocm", "base", n_boot=1000, rng_seed=int(rng.integers(1 << 31)))
        rejections += r["p_value"] < 0.05
        covers += r["ci_low"] <= 0 <= r["ci_high"]
    assert 0.01 <= rejections / reps <= 0.10, rejections
    assert 0.89 <= covers / reps <= 0.99, covers


# ---------------------------------------------------------------------------------------------------- Holm


def test_holm_hand_worked_example():
    # p = [0.01, NaN, 0.04, 0.03, 0.005]; NaN is left out, so m = 4.
    # sorted: 0.005, 0.01, 0.03, 0.04 times (m - j + 1) = 4, 3, 2, 1 -> 0.020, 0.030, 0.060, 0.040
    # running max -> 0.020, 0.030, 0.060, 0.060 (the last is raised to keep the order)
    # back in input order: 0.01 -> 0.03, NaN -> NaN, 0.04 -> 0.06, 0.03 -> 0.06, 0.005 -> 0.02
    got = stats.holm([0.01, np.nan, 0.04, 0.03, 0.005])
    np.testing.assert_allclose(got, [0.03, np.nan, 0.06, 0.06, 0.02], rtol=1e-12)
    # capping: [0.6, 0.7] -> 2 * 0.6 = 1.2 -> 1; max(1, 1 * 0.7) = 1
    np.testing.assert_array_equal(stats.holm([0.6, 0.7]), [1.0, 1.0])
    # ties get equal values: [0.02, 0.02, 0.5] -> 0.06, max(0.06, 0.04) = 0.06, max(0.06, 0.5) = 0.5
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
        p = rng.uniform(0, 1, m) ** 3  # many small p-values
        adj = stats.holm(p)
        assert np.all(adj >= p - 1e-15) and np.all(adj <= 1)
        assert np.all(adj <= np.minimum(1, m * p) + 1e-15)  # never worse than Bonferroni
        o = np.argsort(p)
        assert np.all(np.diff(adj[o]) >= 0)  # monotone in p
        assert adj[o[0]] == pytest.approx(min(1.0, m * p[o[0]]))  # Bonferroni for the smallest p
        for alpha in (0.001, 0.01, 0.05, 0.1, 0.3):
            np.testing.assert_array_equal(adj <= alpha, _holm_rejects(p, alpha))


# ---------------------------------------------------------------------------------------------------- tables


def _hand_table():
    # arm A: seeds 1, 2; arm B: seed 0; units (p1, 0), (p1, 1), (p2, 0); metric "m" (and "n" for B only)
    v = {
        ("A", 1, "p1", 0, "m"): 1.0, ("A", 2, "p1", 0, "m"): 3.0,    # A mean on (p1,0): 2.0
        ("A", 1, "p1", 1, "m"): 4.0, ("A", 2, "p1", 1, "m"): 8.0,    # 6.0
        ("A", 1, "p2", 0, "m"): -1.0, ("A", 2, "p2", 0, "m"): 0.0,   # -0.5
        ("B", 0, "p1", 0, "m"): 0.5,
        ("B", 0, "p1", 1, "m"): 7.0,
        ("B", 0, "p2", 0, "m"): -2.5,
        ("B", 0, "p1", 0, "n"): 1.0,
    }  # fmt: skip
    return _table(v)


def test_paired_differences_averages_over_training_seeds():
    scores = _hand_table().iloc[::-1]  # reversed rows: result must not depend on order
    d = stats.paired_differences(scores, "m", "A", "B")
    # (p1,0): 2.0 - 0.5 = 1.5; (p1,1): 6.0 - 7.0 = -1.0; (p2,0): -0.5 - (-2.5) = 2.0
    expected = pd.Series(
        [1.5, -1.0, 2.0],
        index=pd.MultiIndex.from_tuples([("p1", 0), ("p1", 1), ("p2", 0)], names=["prompt_id", "sample_seed"]),
    )
    pd.testing.assert_series_equal(d, expected, check_names=False)
    assert d.name == "A - B"
    r = stats.compare(scores, "m", "A", "B", n_boot=200)
    assert r["mean_a"] == pytest.approx((2.0 + 6.0 - 0.5) / 3)
    assert r["mean_b"] == pytest.approx((0.5 + 7.0 - 2.5) / 3)
    assert r["mean_diff"] == pytest.approx(2.5 / 3)


def test_paired_differences_raises_on_mismatched_or_missing_input():
    scores = _hand_table()
    drop_b = scores[~((scores.arm == "B") & (scores.prompt_id == "p2"))]
    with pytest.raises(ValueError, match=r"'A' and 'B'.*1 only in 'A'.*0 only in 'B'"):
        stats.paired_differences(drop_b, "m", "A", "B")
    with pytest.raises(ValueError, match=r"arm 'C' is not in the score table"):
        stats.paired_differences(scores, "m", "A", "C")
    with pytest.raises(ValueError, match=r"metric 'n' was not scored for arm 'A'"):
        stats.paired_differences(scores, "n", "A", "B")
    one_seed_short = scores.drop(scores[(scores.arm == "A") & (scores.seed == 2) & (scores.prompt_id == "p2")].index)
    with pytest.raises(ValueError, match=r"arm 'A'.*training seeds did not score the same"):
        stats.paired_differences(one_seed_short, "m", "A", "B")


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
    bad = scores.copy()
    bad.loc[bad.arm == "B", "run_id"] = "A/s1"
    with pytest.raises(ValueError, match="several \\(arm, seed\\)"):
        stats.seed_summary(bad)
    with pytest.raises(ValueError, match="empty"):
        stats.seed_summary(scores.iloc[:0])


def test_seed_summary_on_hand_table():
    v = {}
    # arm A, metric m: seed 1 images [1, 3] (mean 2), seed 2 [4, 6] (5), seed 3 [7, 11] (9)
    for seed, (x, y) in {1: (1.0, 3.0), 2: (4.0, 6.0), 3: (7.0, 11.0)}.items():
        v[("A", seed, "p1", 0, "m")] = x
        v[("A", seed, "p2", 0, "m")] = y
    v[("base", 0, "p1", 0, "m")] = 2.0
    v[("base", 0, "p2", 0, "m")] = 4.0
    extra = {"A": {"method": "rocm", "beta": 0.1}, "base": {"method": "base", "beta": np.nan}}
    scores = _table(v, extra)
    scores["path"] = [f"img{i}.png" for i in range(len(scores))]  # varies within an arm: dropped
    out = stats.seed_summary(scores).set_index("arm")
    # A: mean (2 + 5 + 9) / 3 = 16/3; deviations -10/3, -1/3, 11/3; sum of squares 222/9; / (3 - 1) -> 111/9
    assert out.loc["A", "mean"] == pytest.approx(16 / 3)
    assert out.loc["A", "std"] == pytest.approx(np.sqrt(111 / 9))
    assert out.loc["A", "n_seeds"] == 3 and out.loc["A", "n_images"] == 6 and out.loc["A", "n_prompts"] == 2
    assert out.loc["base", "mean"] == pytest.approx(3.0) and np.isnan(out.loc["base", "std"])
    assert out.loc["base", "n_seeds"] == 1 and out.loc["base", "n_images"] == 2
    assert out.loc["A", "method"] == "rocm" and out.loc["A", "beta"] == 0.1 and np.isnan(out.loc["base", "beta"])
    assert "path" not in out.columns and "value" not in out.columns
    # consistent with compare's per-arm means
    r = stats.compare(scores, "m", "A", "base", n_boot=100)
    assert r["mean_a"] == pytest.approx(out.loc["A", "mean"]) and r["mean_b"] == pytest.approx(3.0)


# ---------------------------------------------------------------------------------------------------- effect sizes


def test_rank_biserial_and_dz_hand_worked():
    d = [1.0, -2.0, 3.0, 0.0, 4.0, -1.0]
    # rank-biserial: drop the zero -> |d| = 1, 2, 3, 4, 1; ranks 1.5, 3, 4, 5, 1.5 (the two 1s share ranks 1 and 2)
    # T+ = 1.5 + 4 + 5 = 10.5 (d = 1, 3, 4); T- = 3 + 1.5 = 4.5 (d = -2, -1); r = (10.5 - 4.5) / 15 = 0.4
    assert stats.rank_biserial(d) == pytest.approx(0.4)
    # d_z over all six: mean 5/6; sum of squares 31 - 6 * (5/6)^2 = 161/6; sd^2 = (161/6) / 5 = 161/30
    assert stats.cohen_dz(d) == pytest.approx((5 / 6) / np.sqrt(161 / 30))
    r = stats.paired_test(d, n_boot=200)
    assert r["wilcoxon_stat"] == pytest.approx(4.5)  # min(T+, T-)
    assert r["n_pairs"] == 6 and r["n_nonzero"] == 5
    # edge cases
    assert stats.rank_biserial([0.0, 0.0]) == 0.0 and stats.cohen_dz([0.0, 0.0]) == 0.0
    assert stats.rank_biserial([2.0, 1.0]) == 1.0 and stats.cohen_dz([1.0, 1.0]) == np.inf
    assert np.isnan(stats.cohen_dz([1.0]))


def test_rank_biserial_agrees_with_scipy_rank_sums():
    rng = np.random.default_rng(5)
    d = np.round(rng.normal(0.3, 1, 80), 1)  # rounded: ties and zeros
    nz = d[d != 0]
    t_plus = sps.wilcoxon(d, zero_method="wilcox", alternative="greater").statistic
    total = nz.size * (nz.size + 1) / 2
    assert stats.rank_biserial(d) == pytest.approx((2 * t_plus - total) / total)


# ------------------------------------------------------------------------------------------- bootstrap, Wilcoxon


def test_bootstrap_resamples_uniformly_with_replacement_and_is_seeded():
    b = stats.bootstrap_means([0.0, 1.0], n_boot=20000, rng_seed=3)
    # means of two draws from {0, 1}: 0, 0.5, 1 with probabilities 1/4, 1/2, 1/4
    vals, counts = np.unique(b, return_counts=True)
    np.testing.assert_array_equal(vals, [0.0, 0.5, 1.0])
    np.testing.assert_allclose(counts / b.size, [0.25, 0.5, 0.25], atol=0.015)
    d = np.random.default_rng(0).normal(size=3000)  # several index blocks
    b1 = stats.bootstrap_means(d, n_boot=5000, rng_seed=1)
    np.testing.assert_array_equal(b1, stats.bootstrap_means(d, n_boot=5000, rng_seed=1))
    assert not np.array_equal(b1, stats.bootstrap_means(d, n_boot=5000, rng_seed=2))
    assert b1.mean() == pytest.approx(d.mean(), abs=0.004)
    assert b1.std() == pytest.approx(d.std(ddof=0) / np.sqrt(d.size), rel=0.05)


def test_paired_test_exact_wilcoxon_and_all_zero_case():
    r = stats.paired_test([1.0, 2.0, 3.0, 4.0, 5.0], n_boot=500)
    # exact: all 5 signs positive has probability 2^-5; two-sided p = 2 / 32
    assert r["p_value"] == pytest.approx(2 / 32)
    assert r["rank_biserial"] == 1.0 and r["ci_low"] >= 1.0 and r["ci_high"] <= 5.0
    z = stats.paired_test(np.zeros(10), n_boot=500)
    assert z["p_value"] == 1.0 and z["ci_low"] == 0.0 and z["ci_high"] == 0.0
    assert z["d_z"] == 0.0 and z["rank_biserial"] == 0.0 and z["n_nonzero"] == 0
    with pytest.raises(ValueError, match="at least 2"):
        stats.paired_test([1.0])


def test_compare_all_families_and_skipped_pairs():
    rng = np.random.default_rng(1)
    scores = _synthetic(rng, 10, 1, {"a": (1, {}), "b": (1, {}), "c": (2, {})}, metrics=("x", "y"))
    res = stats.compare_all(scores, ["a", "b"], ["a", "b", "c"], n_boot=200)
    # a-a and b-b skipped; b-a is the mirror of a-b: skipped; left: a-b, a-c, b-c per metric
    assert list(zip(res.arm_a, res.arm_b)) == [("a", "b"), ("a", "c"), ("b", "c")] * 2
    for _, fam in res.groupby("metric"):
        np.testing.assert_allclose(fam.p_holm, stats.holm(fam.p_value.to_numpy()))
    assert (res.significant == (res.p_holm < 0.05)).all()
    one = stats.compare_all(scores, "a", "b", metrics="x", n_boot=200)
    assert len(one) == 1 and one.p_holm.iloc[0] == one.p_value.iloc[0]  # family of one: no adjustment
    with pytest.raises(ValueError, match="not in the score table"):
        stats.compare_all(scores, ["a"], ["zzz"])
    with pytest.raises(ValueError, match="unknown"):
        stats.compare_all(scores, ["a"], ["b"], alpha_typo=0.1)
    with pytest.raises(ValueError, match="no comparison left"):
        stats.compare_all(scores, ["a"], ["a"])


def test_identical_arms_give_p_one():
    rng = np.random.default_rng(4)
    scores = _synthetic(rng, 20, 1, {"a": (1, {})})
    copy = scores.assign(arm="a2", run_id="a2/s0")
    r = stats.compare(pd.concat([scores, copy]), "m", "a2", "a", n_boot=300)
    assert r["p_value"] == 1.0 and r["mean_diff"] == 0.0 and r["ci_low"] == r["ci_high"] == 0.0
