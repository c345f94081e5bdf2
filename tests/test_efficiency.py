"""Efficiency in held-out quality (rocm_rlhf.analysis.efficiency): the device-hours to reach a fraction of the best
held-out improvement, interpolated between probes, and the ratio to the reference arm with a CI over seeds."""

import math

import numpy as np
import pandas as pd
import pytest

from rocm_rlhf import runs
from rocm_rlhf.analysis import efficiency, tables


def _curve(run_id, hours, values, metric="gold"):
    run = runs.parse_run(run_id)
    steps = np.arange(len(hours)) * 10
    return pd.DataFrame({"run_id": run_id, **run.identity(), "device": "cpu", "step": steps,
                         "reward_queries": steps * 8, "device_hours": hours, "metric": metric, "mean": values,
                         "n_images": 32})


def test_hours_to_target_interpolates_between_probes():
    c = _curve("rocm-kl-b1-s0", [0.0, 1.0, 2.0], [0.0, 0.5, 1.0])
    assert efficiency.hours_to_target(c, 0.75) == pytest.approx(1.5)
    assert efficiency.hours_to_target(c, 0.5) == pytest.approx(1.0)
    assert efficiency.hours_to_target(c, 0.0) == 0.0  # already there at the start
    assert math.isnan(efficiency.hours_to_target(c, 1.01))  # never reached
    assert efficiency.hours_to_target(c.iloc[::-1], 0.75) == pytest.approx(1.5)  # any row order
    assert efficiency.hours_to_target(c, 0.75, "reward_queries") == pytest.approx(120)


@pytest.fixture()
def curves():
    frames = []
    for seed, speed in enumerate((1.0, 1.2, 0.8)):  # ROCM: 0.1 -> 0.5 over 0.02 / speed hours
        frames.append(_curve(f"rocm-kl-b1-s{seed}", np.array([0, 0.01, 0.02]) / speed, [0.1, 0.3, 0.5]))
        frames.append(_curve(f"rocm-none-b0-s{seed}", np.array([0, 0.01, 0.02]), [0.1, 0.2, 0.0]))  # hacks
        frames.append(_curve(f"ddpo-s{seed}", np.array([0, 0.05, 0.1]) * (1 + 0.1 * seed), [0.2, 0.25, 0.3]))
    return pd.concat(frames, ignore_index=True)


def test_efficiency_table_planted_speeds(curves):
    t = efficiency.efficiency_table(curves, ["gold"], "rocm-kl-b1", chosen_betas={"kl": 1.0}, n_boot=2000)
    assert list(dict.fromkeys(t["arm"])) == ["rocm-none-b0", "rocm-kl-b1", "ddpo"]  # the paper's row order
    row = t.set_index(["arm", "fraction"])
    # start: the untrained LCM's step-0 value (0.1, not DDPO's diffusion start 0.2); best: ROCM-KL's 0.5
    assert np.allclose(t["start"], 0.1) and np.allclose(t["best"], 0.5)
    assert row.loc[("rocm-kl-b1", 0.5), "target"] == pytest.approx(0.3)
    # ROCM-KL reaches 0.3 at its second probe: 0.01 / speed hours, mean over the three seeds
    kl_hours = np.array([0.01 / s for s in (1.0, 1.2, 0.8)])
    assert row.loc[("rocm-kl-b1", 0.5), "hours_mean"] == pytest.approx(kl_hours.mean())
    # DDPO reaches 0.3 only at its last probe, 0.1 x (1 + 0.1 seed) hours
    ddpo_hours = np.array([0.1 * (1 + 0.1 * s) for s in range(3)])
    assert row.loc[("ddpo", 0.5), "hours_mean"] == pytest.approx(ddpo_hours.mean())
    ratio = row.loc[("ddpo", 0.5)]
    assert ratio["ratio_ref"] == pytest.approx(kl_hours.mean() / ddpo_hours.mean())
    assert ratio["ratio_ci_low"] <= ratio["ratio_ref"] <= ratio["ratio_ci_high"] < 1  # ROCM-KL is faster
    assert row.loc[("rocm-kl-b1", 0.5), "ratio_ref"] == pytest.approx(1.0)
    assert math.isnan(row.loc[("rocm-kl-b1", 0.5), "ratio_ci_low"])  # the reference against itself: no interval
    # 90%: 0.46, which DDPO and the hacking beta = 0 never reach
    assert row.loc[("ddpo", 0.9), "n_reached"] == 0 and math.isnan(row.loc[("ddpo", 0.9), "hours_mean"])
    assert math.isnan(row.loc[("ddpo", 0.9), "ratio_ref"]) and row.loc[("rocm-none-b0", 0.9), "n_reached"] == 0
    assert row.loc[("rocm-kl-b1", 0.9), "n_reached"] == 3
    md, tex = tables.efficiency_text(t, "ROCM-KL (β=1)", "CPU core-hours")
    assert "| DDPO | " in md and "– (0/3)" in md and r"\begin{tabular}" in tex
    # DDPO starts at 0.2 (its diffusion start), above a 20% target of 0.18: reached at zero cost, said so
    low = efficiency.efficiency_table(curves, ["gold"], "rocm-kl-b1", chosen_betas={"kl": 1.0}, fractions=(0.2,),
                                      n_boot=200)
    assert low.set_index("arm").loc["ddpo", "hours_mean"] == 0
    assert "| DDPO | at start (3/3) |" in tables.efficiency_text(low, "ROCM-KL (β=1)", "CPU core-hours")[0]


def test_efficiency_table_one_seed_has_no_ratio_ci_and_errors_name_the_problem(curves):
    one = curves[curves["seed"] == 0]
    t = efficiency.efficiency_table(one, ["gold"], "rocm-kl-b1", chosen_betas={"kl": 1.0}, n_boot=200)
    assert t["ratio_ci_low"].isna().all() and t["ratio_ref"].notna().any()
    with pytest.raises(ValueError, match="reference arm"):
        efficiency.efficiency_table(curves, ["gold"], "rlcm", chosen_betas={"kl": 1.0})
    with pytest.raises(ValueError, match="proxy_pick"):
        efficiency.efficiency_table(curves, ["proxy_pick"], "rocm-kl-b1", chosen_betas={"kl": 1.0})
    with pytest.raises(ValueError, match="step-0"):
        efficiency.efficiency_table(curves[curves["step"] > 0], ["gold"], "rocm-kl-b1", chosen_betas={"kl": 1.0})


def test_learning_table_start_end_and_the_change_over_seeds(curves):
    t = efficiency.learning_table(curves, ["gold"], chosen_betas={"kl": 1.0}).set_index("arm")
    assert t.loc["rocm-kl-b1", "start"] == pytest.approx(0.1) and t.loc["rocm-kl-b1", "end"] == pytest.approx(0.5)
    assert t.loc["rocm-kl-b1", "n_improved"] == 3 and t.loc["rocm-none-b0", "n_improved"] == 0  # ends at 0.0
    assert t.loc["rocm-none-b0", "change"] == pytest.approx(-0.1)
    # DDPO: 0.2 -> 0.3 in every seed: no spread, so the interval is the point
    assert t.loc["ddpo", "change"] == pytest.approx(0.1)
    assert t.loc["ddpo", "change_ci_low"] == pytest.approx(0.1) and t.loc["ddpo", "change_ci_high"] == pytest.approx(0.1)
    one = efficiency.learning_table(curves[curves["seed"] == 0], ["gold"], chosen_betas={"kl": 1.0})
    assert one["change_ci_low"].isna().all() and (one["n_runs"] == 1).all()
    md, tex = tables.learning_text(efficiency.learning_table(curves, ["gold"], chosen_betas={"kl": 1.0}))
    assert "| DDPO | 0.200 → 0.300 | +0.100 [+0.100, +0.100] (3/3) |" in md and r"$\to$" in tex
