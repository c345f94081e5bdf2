"""The adaptive beta as a pipeline arm (beyond the paper): its run ids, its grid of targets chosen on the validation
prompts like beta, the choice file, the tuning table, and its comparison table and figure against the chosen fixed
beta."""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
import pytest

from rocm_rlhf import runs
from rocm_rlhf.analysis import arms
from rocm_rlhf.analysis.scores import SCORE_COLUMNS
from rocm_rlhf.infra.config import ConfigError, validate_config


@pytest.mark.parametrize("run_id", ["rocm-kl-t0.01-s0", "rocm-fisher-t3e-05-s2", "rocm-js-t1-s1"])
def test_adaptive_run_ids_round_trip(run_id):
    run = runs.parse_run(run_id)
    assert run.id == run_id and run.adaptive and run.beta == "" and math.isnan(run.beta_value)
    assert re.fullmatch(runs.ROCM_RUN_PATTERN, run_id) and runs.parse_arm(run.arm) == runs.Run(
        "rocm", run.divergence, "", 0, target=run.target)


@pytest.mark.parametrize("bad, why", [("rocm-none-t0.1-s0", "run id"), ("rocm-kl-t0-s0", "target"),
                                      ("rocm-kl-t0.010-s0", "non-canonical"), ("rocm-tv-t1-s0", "run id")])
def test_adaptive_run_ids_that_are_not(bad, why):
    with pytest.raises(ValueError, match=why):
        runs.parse_run(bad)


def test_labels_and_row_order_put_the_adaptive_arm_after_its_divergences_betas():
    assert arms.label_of("rocm-kl-t0.01") == "ROCM-KL (adaptive β, target 0.01)"
    scores = _scores({"rocm-kl-b10": 0.5, "rocm-kl-t0.01": 0.5, "rocm-kl-b1": 0.5, "rocm-js-b1": 0.5, "base": 0.1},
                     seeds=1)
    assert list(arms.arm_table(scores).index) == ["base", "rocm-kl-b1", "rocm-kl-b10", "rocm-kl-t0.01", "rocm-js-b1"]
    scores = _scores({"rocm-kl-t1e-05": 0.5, "rocm-kl-t0.03": 0.5, "rocm-kl-t0.003": 0.5}, seeds=1)
    assert list(arms.arm_table(scores).index) == ["rocm-kl-t1e-05", "rocm-kl-t0.003", "rocm-kl-t0.03"]  # by value


def _config(**rocm):
    return {"rocm": {"seeds": [0], "unregularised": True, "divergences": ["kl", "js"],
                     "betas": {"kl": [1.0, 10.0], "js": [1.0]}, **rocm},
            "baselines": {"methods": ["rlcm"], "seeds": [0]}, "confirm": {"seeds": [1, 2]}}


def test_the_target_grid_is_swept_chosen_and_confirmed_like_beta():
    config = _config(targets={"kl": [0.01, 0.003], "js": [], "fisher": [0.1]})  # js: none; fisher not run
    assert runs.target_grid(config) == {"kl": ["0.01", "0.003"]}
    assert runs.adaptive_runs(config) == ["rocm-kl-t0.01-s0", "rocm-kl-t0.003-s0"]
    before = runs.eval_runs(config)
    assert {"rocm-kl-t0.01-s0", "rocm-kl-t0.003-s0"} <= set(before)
    assert not any(r.startswith("rocm-kl-t") and r.endswith(("-s1", "-s2")) for r in before)  # wait for the choice
    chosen = dict(chosen_betas={"kl": "10", "js": "1"}, chosen_lrs={}, chosen_targets={"kl": "0.003"})
    assert runs.confirm_runs(config, chosen["chosen_betas"], chosen["chosen_targets"])[-2:] == [
        "rocm-kl-t0.003-s1", "rocm-kl-t0.003-s2"]
    after = runs.eval_runs(config, **chosen)
    assert len(after) == len(set(after)) and {"rocm-kl-t0.003-s1", "rocm-kl-t0.003-s2"} <= set(after)
    reported = runs.reported_runs(config, **chosen)
    # the target not chosen is a candidate only (validation); the chosen one is reported with its three seeds
    assert "rocm-kl-t0.01-s0" not in reported
    assert [r for r in reported if "-t" in r] == ["rocm-kl-t0.003-s0", "rocm-kl-t0.003-s1", "rocm-kl-t0.003-s2"]
    assert set(after) - set(reported) == {"rocm-kl-t0.01-s0"}
    assert runs.target_grid(_config()) == {} and runs.adaptive_runs(_config()) == []


def test_the_config_refuses_targets_of_unknown_divergences_and_a_start_outside_the_bounds():
    validate_config({"rocm": {"targets": {"kl": [0.01]}}})
    with pytest.raises(ConfigError, match="rocm.targets"):
        validate_config({"rocm": {"targets": {"kll": [0.01]}}})
    with pytest.raises(ConfigError, match="init_beta"):
        validate_config({"rocm": {"adaptive": {"init_beta": 10.0, "beta_max": 1.0}}})
    with pytest.raises(ConfigError):
        validate_config({"rocm": {"targets": {"kl": [0.0]}}})


def _scores(levels: dict[str, float], seeds: int = 3, n_prompts: int = 12, split: str = "test",
            metrics=("gold", "proxy_pick"), noise: float = 0.02, rng_seed: int = 0,
            leveled=("gold",)) -> pd.DataFrame:
    """Scores of each arm at ``levels[arm]`` on the ``leveled`` metrics (gold; the others, e.g. proxy_pick, 0.3
    everywhere) with prompt effects shared by the arms (so that paired differences are cleaner than the levels) and
    a little noise per image."""
    rng = np.random.default_rng(rng_seed)
    prompt_effect = rng.normal(0, 0.1, n_prompts)
    prefix = "val-" if split == "val" else ""
    rows = []
    for arm, level in levels.items():
        run0 = runs.parse_arm(arm)
        for seed in ([0] if arm in runs.UNTRAINED else range(seeds)):
            run = runs.Run(run0.method, run0.divergence, run0.beta, seed, run0.lr, run0.target)
            for p in range(n_prompts):
                for s in range(2):
                    for metric in metrics:
                        value = (level if metric in leveled else 0.3) + prompt_effect[p] + noise * rng.standard_normal()
                        rows.append({"run_id": run.id, **run.identity(), "prompt_id": f"{prefix}sbx-{p:04d}",
                                     "sample_seed": s, "prompt": f"prompt {p}", "metric": metric, "value": value})
    return pd.DataFrame(rows)[SCORE_COLUMNS]


VAL = {"base": 0.2, "rocm-kl-b1": 0.3, "rocm-kl-b10": 0.5, "rocm-kl-t0.003": 0.35, "rocm-kl-t0.01": 0.55,
       "rocm-kl-t0.03": 0.4, "rocm-js-b1": 0.4, "rlcm-lr0.001": 0.3, "rlcm-lr0.01": 0.2}


def test_choose_settings_chooses_a_target_per_divergence_and_the_choice_file_reads_back(tmp_path):
    chosen = arms.chosen_table(_scores(VAL, seeds=1, split="val"), "gold")
    assert list(chosen["arm"]) == ["rocm-kl-b10", "rocm-js-b1", "rocm-kl-t0.01", "rlcm-lr0.001"]
    row = chosen.set_index("arm").loc["rocm-kl-t0.01"]
    assert (row["method"], row["beta"], row["lr"], row["target"], row["candidates"]) == (
        "rocm", "", "", "0.01", "0.003 0.01 0.03")
    path = tmp_path / "chosen.csv"
    chosen.to_csv(path, index=False)
    assert runs.read_chosen(path) == {"kl": "10", "js": "1"}  # the fixed betas only
    assert runs.read_chosen_targets(path) == {"kl": "0.01"}
    assert runs.read_chosen_lrs(path) == {"rlcm": "0.001"}
    tie = dict(VAL, **{"rocm-kl-t0.03": VAL["rocm-kl-t0.01"]})  # the same scores: the smaller target is chosen
    tie_scores = _scores(tie, seeds=1, split="val")
    same = tie_scores["arm"] == "rocm-kl-t0.03"
    tie_scores.loc[same, "value"] = tie_scores.loc[tie_scores["arm"] == "rocm-kl-t0.01", "value"].to_numpy()
    assert arms.chosen_table(tie_scores, "gold").set_index("divergence").loc["kl"].iloc[-1]["target"] == "0.01"
    old = tmp_path / "old.csv"  # a choice file from before the adaptive beta: no target column
    old.write_text("method,divergence,beta,lr,arm\nrocm,kl,10,,rocm-kl-b10\n")
    assert runs.read_chosen(old) == {"kl": "10"} and runs.read_chosen_targets(old) == {}


def test_the_tuning_table_lists_the_targets_as_their_own_rows(tmp_path):
    from rocm_rlhf.analysis.tables import tuning_table

    val = _scores(VAL, seeds=1, split="val")
    arms.chosen_table(val, "gold").to_csv(tmp_path / "chosen.csv", index=False)
    back = pd.read_csv(tmp_path / "chosen.csv", dtype={"beta": str, "lr": str})
    long = tuning_table(val, back, ["gold"], tmp_path / "table_tuning")
    adaptive = long[long["tuned"] == "target"]
    assert list(adaptive["setting"]) == ["0.003", "0.01", "0.03"] and list(adaptive["chosen"]) == [False, True, False]
    md = (tmp_path / "table_tuning.md").read_text()
    assert "| ROCM-KL, adaptive β | target=0.003 |" in md and "**target=0.01**" in md and "| ROCM-KL | β=1 |" in md


def _logs(test_levels: dict[str, float], seeds=3, steps=50) -> pd.DataFrame:
    """Training logs of the given ROCM arms: the adaptive runs hold their target from step 10 at a beta near 5; the
    fixed runs' divergence falls to 0.02; every run took 40 s (the adaptive ones 42 s)."""
    frames = []
    for arm in test_levels:
        run0 = runs.parse_arm(arm)
        if run0.method != "rocm":
            continue
        for seed in range(seeds):
            run = runs.Run(run0.method, run0.divergence, run0.beta, seed, target=run0.target)
            step = np.arange(steps)
            if run.adaptive:
                div = np.where(step < 10, 0.1, float(run.target))
                beta = np.minimum(1.0 * 1.2 ** step, 5.0 + seed)
                wall = 42.0
            else:
                div, beta, wall = np.full(steps, 0.02), np.full(steps, np.nan), 40.0
            frames.append(pd.DataFrame({"run_id": run.id, **run.identity(), "step": step,
                                        "wall_s": wall * (step + 1) / steps, "device_hours": 0.0, "device": "cpu",
                                        "reward_queries": 8 * (step + 1), "reward_mean": 0.3,
                                        "divergence_mean": div, "adaptive_beta": beta}))
    return pd.concat(frames, ignore_index=True)


def test_the_adaptive_table_compares_the_chosen_target_with_the_chosen_beta_paired_over_seeds(tmp_path):
    from rocm_rlhf.analysis.adaptive import adaptive_legend, adaptive_table, adaptive_text, chosen_pairs
    from rocm_rlhf.analysis.stats import holm

    val = _scores(VAL, seeds=1, split="val")
    chosen = arms.chosen_table(val, "gold")
    chosen.to_csv(tmp_path / "chosen.csv", index=False)
    chosen = pd.read_csv(tmp_path / "chosen.csv")
    # test: the adaptive arm 0.1 above the fixed beta on gold, equal on proxy_pick
    test_levels = {"base": 0.2, "rocm-kl-b10": 0.4, "rocm-kl-t0.01": 0.5, "rocm-js-b1": 0.4, "rlcm-lr0.001": 0.3}
    table = adaptive_table(_scores(test_levels), chosen, _logs(test_levels), ["gold", "proxy_pick"], n_boot=400)
    assert list(table["divergence"]) == ["kl", "kl"]  # js has no target: nothing to compare
    gold, proxy = table.iloc[0], table.iloc[1]
    assert (gold["fixed_arm"], gold["adaptive_arm"]) == ("rocm-kl-b10", "rocm-kl-t0.01")
    assert gold["mean_diff"] == pytest.approx(0.1, abs=0.01) and gold["ci_low"] > 0.05 and gold["significant"]
    assert abs(proxy["mean_diff"]) < 0.02 and not proxy["significant"]
    assert gold["seeds_paired"] and gold["n_seeds"] == gold["n_seeds_fixed"] == 3  # both arms at seeds 0, 1, 2
    assert list(table["p_holm"]) == pytest.approx(list(holm(table["p_value"])))  # this table's own family
    # the choice as the stage holds it in memory ('' where a row has no target) pairs the same arms
    assert chosen_pairs(arms.chosen_table(val, "gold")) == chosen_pairs(chosen) == [("kl", "rocm-kl-b10",
                                                                                        "rocm-kl-t0.01")]
    # the controller: held its target over the last steps, ended at its beta (5, 6, 7 over the seeds)
    assert gold["held_divergence"] == pytest.approx(0.01) and gold["fixed_divergence"] == pytest.approx(0.02)
    assert (gold["end_beta"], gold["end_beta_min"], gold["end_beta_max"]) == pytest.approx((6.0, 5.0, 7.0))
    assert (gold["seconds_adaptive"], gold["seconds_fixed"]) == pytest.approx((42.0, 40.0))
    assert (gold["candidates_fixed"], gold["candidates_adaptive"]) == (2, 3)
    md, tex = adaptive_text(table)
    assert "| KL | β=10 | target 0.01 |" in md and "+0.099 [+0.087, +0.111]†" in md and "†" in md and "\\toprule" in tex
    assert "3 training seeds" in adaptive_legend(table)


def test_the_adaptive_table_needs_a_chosen_target():
    from rocm_rlhf.analysis.adaptive import adaptive_table

    levels = {"base": 0.2, "rocm-kl-b10": 0.4}
    chosen = pd.DataFrame([{"method": "rocm", "divergence": "kl", "beta": 10, "lr": np.nan, "target": np.nan,
                            "arm": "rocm-kl-b10", "candidates": "1 10"}])
    with pytest.raises(ValueError, match="rocm.targets"):
        adaptive_table(_scores(levels), chosen, _logs(levels), ["gold"])


def test_fig_adaptive_beta_draws_every_target_with_the_fixed_beta_and_the_targets(tmp_path):
    from rocm_rlhf.analysis.figures import fig_adaptive_beta

    levels = {"rocm-kl-b10": 0, "rocm-kl-t0.003": 0, "rocm-kl-t0.01": 0, "rocm-js-t0.01": 0}
    logs = _logs(levels)
    logs = logs[~((logs["arm"] == "rocm-kl-t0.003") & (logs["seed"] > 0))]  # a candidate: one seed
    saved = fig_adaptive_beta(logs, tmp_path / "fig", chosen_betas={"kl": 10.0}, chosen_targets={"kl": "0.01"})
    assert saved.pdf.is_file() and saved.png.is_file()
    axes = np.array(saved.figure.axes).reshape(2, -1)
    assert axes.shape == (2, 2)  # KL and JS; the fixed-beta run is not an adaptive one
    legend = [t.get_text() for t in axes[0, 0].get_legend().get_texts()]
    assert legend == ["target 0.003", "target 0.01 (chosen)", "fixed β=10 (chosen)"]
    assert all(ax.get_yscale() == "log" for ax in axes.ravel())
    kl_targets = sorted(line.get_ydata()[0] for line in axes[1, 0].get_lines() if len(line.get_ydata()) == 2)
    assert kl_targets == pytest.approx([0.003, 0.01])  # the horizontal target lines
    with pytest.raises(ValueError, match="adaptive-beta runs"):
        fig_adaptive_beta(logs[logs["arm"] == "rocm-kl-b10"], tmp_path / "none")


def test_the_adaptive_overlay_is_the_design_its_committed_results_came_from():
    """The default run has no adaptive arm (it would take it past 20 minutes); config/adaptive.yaml adds the target
    grid for every divergence of the default and trains for 100 steps, the design of the committed
    paper_figures/adaptive/ (the default's outputs before it went to 40 steps). Each config's steps, batch and
    checkpoint period are checked against the held-out probe its committed curves.csv holds (probed at step 0 and at
    every checkpoint, ``steps * batch_size`` reward queries at the end), and the overlay's targets against the
    candidates of its committed choice."""
    from pathlib import Path

    from rocm_rlhf.infra.config import load_config, output_dirs

    repo = Path(__file__).resolve().parents[1]
    default = load_config(repo / "config" / "config.yaml")
    assert runs.target_grid(default) == {}
    overlay = load_config(repo / "config" / "config.yaml", repo / "config" / "adaptive.yaml")
    assert output_dirs(overlay)["figures"] == "paper_figures/adaptive"
    assert set(runs.target_grid(overlay)) == set(default["rocm"]["divergences"])
    chosen = pd.read_csv(repo / "paper_figures" / "adaptive" / "data" / "chosen.csv")
    targets = chosen[(chosen["method"] == "rocm") & chosen["beta"].isna()].set_index("divergence")["candidates"]
    assert {d: str(c).split() for d, c in targets.items()} == runs.target_grid(overlay)
    for overlay_file in (None, "adaptive.yaml", "nondiff.yaml"):
        cfg = load_config(repo / "config" / "config.yaml",
                          *([repo / "config" / overlay_file] if overlay_file else []))
        t = cfg["train"]
        curves = pd.read_csv(repo / output_dirs(cfg)["figures"] / "data" / "curves.csv")
        rocm = curves[curves["method"] == "rocm"]
        assert sorted(rocm["step"].unique()) == list(range(0, t["steps"] + 1, t["checkpoint_every"])), overlay_file
        assert rocm["reward_queries"].max() == t["steps"] * t["batch_size"], overlay_file
    replication = load_config(repo / "config" / "config.yaml", repo / "config" / "replication.yaml")
    assert replication["train"]["steps"] == overlay["train"]["steps"]  # it replicates the 100-step design
