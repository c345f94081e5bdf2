"""ROCM for rewards given only as numbers as pipeline arms (beyond the paper): the run ids of ``rocm_sf`` and
``rocm_hybrid``, their beta grid chosen on validation like ROCM's, the surrogate ROCM climbs where ``train.reward`` has
no gradient, the config's refusals, the per-prompt baseline, the total-variation surrogate, and the comparison table
and figure."""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
import pytest
import torch

from rocm_rlhf import runs
from rocm_rlhf.analysis import arms
from rocm_rlhf.infra.config import ConfigError, load_config, validate_config
from rocm_rlhf.infra.scorer_catalogue import pathwise_reward
from rocm_rlhf.training.rocm_sf import leave_one_out_advantages

from conftest import REPO


@pytest.mark.parametrize("run_id", ["rocm_sf-kl-b10-s0", "rocm_hybrid-fisher-b3e-05-s2", "rocm_sf-none-b0-s1"])
def test_score_function_run_ids_round_trip(run_id):
    run = runs.parse_run(run_id)
    assert run.id == run_id and run.method in runs.SCORE_FUNCTION_METHODS and not run.adaptive
    assert re.fullmatch(runs.ROCM_RUN_PATTERN, run_id) and not re.fullmatch(runs.BASELINE_RUN_PATTERN, run_id)
    assert runs.parse_arm(run.arm) == runs.Run(run.method, run.divergence, run.beta, 0)
    assert run.generator == "lcm" and run.method not in runs.BASELINES


@pytest.mark.parametrize("bad, why", [("rocm_sf-kl-t0.01-s0", "run id"), ("rocm_sf-kl-b10.0-s0", "non-canonical"),
                                      ("rocm_hybrid-none-b1-s0", "beta 0"), ("rocm_sf-s0", "run id")])
def test_score_function_run_ids_that_are_not(bad, why):
    with pytest.raises(ValueError, match=why):
        runs.parse_run(bad)


def test_labels_and_row_order():
    assert arms.label_of("rocm_sf-kl-b10") == "ROCM-SF-KL (β=10)"
    assert arms.label_of("rocm_hybrid-kl-b1") == "ROCM-hybrid-KL (β=1)"
    scores = _scores({"rlcm": 0.3, "rocm_hybrid-kl-b1": 0.3, "rocm_sf-kl-b10": 0.3, "rocm-kl-b10": 0.3,
                      "rocm_sf-kl-b1": 0.3, "base": 0.1}, seeds=1)
    table = arms.arm_table(scores)
    assert list(table.index) == ["base", "rocm-kl-b10", "rocm_sf-kl-b1", "rocm_sf-kl-b10", "rocm_hybrid-kl-b1", "rlcm"]
    assert list(table["group"]) == ["base", "rocm", "score_function", "score_function", "score_function", "baseline"]
    # the variants are treatments: compared against the controls, never controls themselves
    treatments, controls = arms.comparison_arms(scores)
    assert controls == ["base", "rlcm"] and "rocm_sf-kl-b10" in treatments


def _config(**sf):
    return {"rocm": {"seeds": [0], "unregularised": True, "divergences": ["kl"], "betas": {"kl": [10.0]}},
            "score_function": {"methods": ["rocm_sf", "rocm_hybrid"], "divergence": "kl", "betas": [1.0, 10.0], **sf},
            "baselines": {"methods": ["rlcm"], "seeds": [0]}, "confirm": {"seeds": [1, 2]}}


def test_the_beta_grid_is_swept_chosen_and_confirmed_like_rocms():
    config = _config()
    assert runs.score_function_runs(config) == ["rocm_sf-kl-b1-s0", "rocm_sf-kl-b10-s0", "rocm_hybrid-kl-b1-s0",
                                                "rocm_hybrid-kl-b10-s0"]
    before = runs.eval_runs(config)
    assert set(runs.score_function_runs(config)) <= set(before)
    assert not any(r.startswith("rocm_") and r.endswith(("-s1", "-s2")) for r in before)  # wait for the choice
    chosen = dict(chosen_betas={"kl": "10"}, chosen_sf={"rocm_sf": "10", "rocm_hybrid": "1"})
    after = runs.eval_runs(config, **chosen)
    assert len(after) == len(set(after))
    assert {"rocm_sf-kl-b10-s1", "rocm_sf-kl-b10-s2", "rocm_hybrid-kl-b1-s1", "rocm_hybrid-kl-b1-s2"} <= set(after)
    reported = runs.reported_runs(config, **chosen)
    assert [r for r in reported if r.startswith("rocm_")] == [
        "rocm_sf-kl-b10-s0", "rocm_hybrid-kl-b1-s0", "rocm_sf-kl-b10-s1", "rocm_sf-kl-b10-s2", "rocm_hybrid-kl-b1-s1",
        "rocm_hybrid-kl-b1-s2"]  # the betas not chosen: validation only
    assert runs.score_function_runs(_config(methods=[])) == []
    assert runs.score_function_runs({"rocm": {"seeds": [0]}}) == []  # a config from before the block


def test_the_config_refuses_what_cannot_train():
    validate_config({"train": {"reward": "gold_fidelity", "surrogate": "proxy_pick"},
                     "score_function": {"methods": ["rocm_sf", "rocm_hybrid"]}})
    cases = [
        # a reward without gradients, ROCM configured and nothing for its gradient to climb
        ({"train": {"reward": "gold_fidelity"}}, "set train.surrogate"),
        ({"train": {"surrogate": "gold"}}, "train.surrogate': scorer 'gold' is not differentiable"),
        ({"train": {"surrogate": "no_such_scorer"}}, "train.surrogate': unknown scorer"),
        ({"score_function": {"methods": ["rocm_hybrid"]}}, "rocm_hybrid takes the pathwise gradient"),
        ({"score_function": {"methods": ["rocm_sf"], "images_per_prompt": 3}}, "multiple of 3"),
        ({"train": {"batch_size": 1}, "score_function": {"methods": ["rocm_sf"], "images_per_prompt": 1}},
         "at least 2"),
        ({"model": {"num_steps": 1}, "score_function": {"methods": ["rocm_sf"]}}, "no stochastic|there is none"),
        ({"score_function": {"methods": ["rocm_ppo"]}}, "rocm_ppo"),
        ({"score_function": {"divergence": "tv"}}, "tv"),
        ({"score_function": {"betas": [0.0]}}, "betas"),
        # compared at equal reward queries: the baselines' own budget must be ROCM's
        ({"baselines": {"reward_queries": 400}, "score_function": {"methods": ["rocm_sf"]}},
         "baselines.reward_queries': 400"),
        ({"rocm": {"divergences": ["js"]}, "score_function": {"methods": ["rocm_sf"], "divergence": "kl"}},
         "not in rocm.divergences"),
    ]
    for overrides, message in cases:
        with pytest.raises(ConfigError, match=message):
            validate_config(overrides)


def test_rocm_climbs_the_surrogate_only_where_the_reward_has_no_gradient():
    nondiff = load_config(REPO / "config/config.yaml", REPO / "config/nondiff.yaml")
    assert nondiff["train"]["reward"] == "gold_fidelity" and pathwise_reward(nondiff) == "proxy_pick"
    diff = validate_config({"train": {"reward": "proxy_pick", "surrogate": "proxy_aesthetic"}})
    assert pathwise_reward(diff) == "proxy_pick"  # a differentiable reward is climbed itself
    assert pathwise_reward(validate_config({})) == "proxy_pick"
    mixed = validate_config({"train": {"reward": {"proxy_pick": 1.0, "gold": 1.0}, "surrogate": "proxy_aesthetic"},
                             "figures": {"reward_metric": "proxy_pick"}})
    assert pathwise_reward(mixed) == "proxy_aesthetic"  # one term without gradients makes the sum one
    # the overlay's design: one divergence, no adaptive beta, the two variants, RLCM and DDPO
    assert runs.target_grid(nondiff) == {} and nondiff["baselines"]["methods"] == ["rlcm", "ddpo"]
    assert {runs.parse_run(r).method for r in runs.score_function_runs(nondiff)} == {"rocm_sf", "rocm_hybrid"}
    paper = load_config(REPO / "config/paper.yaml", REPO / "config/paper-nondiff.yaml")
    assert paper["train"]["reward"] == "jpeg_compressibility" and pathwise_reward(paper) == "total_variation"
    assert paper["train"]["batch_size"] % paper["score_function"]["images_per_prompt"] == 0


def test_leave_one_out_baselines_within_each_prompts_images():
    returns = torch.tensor([1.0, 2.0, 3.0, 6.0, 10.0, 10.0, 10.0, 14.0])
    adv = leave_one_out_advantages(returns, images_per_prompt=4)
    # prompt 1: 1 - (2+3+6)/3, ...; prompt 2's level (10) drops out entirely
    expected = torch.tensor([1 - 11 / 3, 2 - 10 / 3, 3 - 3.0, 6 - 2.0, 10 - 34 / 3, 10 - 34 / 3, 10 - 34 / 3,
                             14 - 10.0])
    torch.testing.assert_close(adv, expected)
    shifted = leave_one_out_advantages(returns + torch.tensor([0.0] * 4 + [100.0] * 4), images_per_prompt=4)
    torch.testing.assert_close(shifted, adv)  # a per-prompt offset does not move the advantages
    batch = leave_one_out_advantages(returns)  # the whole batch as the group
    torch.testing.assert_close(batch, returns - (returns.sum() - returns) / 7)
    with pytest.raises(ValueError, match="groups of 3"):
        leave_one_out_advantages(returns, images_per_prompt=3)


def test_the_step_draws_each_prompt_once_per_group_of_images(tiny_lcm_dir):
    from rocm_rlhf.models import load_lcm_pipeline
    from rocm_rlhf.training.loop import Context, TrainSettings
    from rocm_rlhf.training.rocm import consistency_step_inputs

    pipe = load_lcm_pipeline(tiny_lcm_dir)
    params = [torch.nn.Parameter(torch.zeros(1))]
    ctx = Context(pipe=pipe, params=params, reward=None, prompts=[f"prompt {i}" for i in range(50)],
                  settings=TrainSettings(steps=1, batch_size=8, lr=0.0, seed=0, num_steps=2),
                  device=torch.device("cpu"), optimizer=torch.optim.SGD(params, lr=0.0))  # the trainer's own draws
    prompts, latents, noise, emb = consistency_step_inputs(ctx, 3, images_per_prompt=4)
    assert prompts == [ctx.batch_prompts(3, 2)[0]] * 4 + [ctx.batch_prompts(3, 2)[1]] * 4
    assert latents.shape[0] == 8 and not torch.equal(latents[0], latents[1])  # own latents per image
    assert torch.equal(emb[0], emb[3]) and emb.shape[0] == 8
    plain, *_ = consistency_step_inputs(ctx, 3)
    assert plain == ctx.batch_prompts(3)  # k = 1: the draw of every other method, unchanged
    with pytest.raises(ValueError, match="groups of 3"):
        consistency_step_inputs(ctx, 3, images_per_prompt=3)


def test_total_variation_is_a_differentiable_stand_in_for_jpeg_size():
    from scipy.stats import spearmanr

    from rocm_rlhf.rewards import load_scorer

    tv, jpeg = load_scorer("total_variation"), load_scorer("jpeg_compressibility")
    assert tv.differentiable and not jpeg.differentiable
    g = torch.Generator().manual_seed(0)
    noise = torch.rand(8, 3, 24, 40, generator=g)  # non-square
    images = torch.cat([torch.nn.functional.avg_pool2d(noise[i:i + 1], 2 * i + 1, 1, i) for i in range(8)])
    assert spearmanr(tv(images, [""] * 8).numpy(), jpeg(images, [""] * 8).numpy()).statistic > 0.9
    flat = torch.full((1, 3, 4, 5), 0.5)
    assert tv(flat, [""]).item() == 0.0
    x = images.clone().requires_grad_(True)
    tv(x, [""] * 8).sum().backward()
    assert x.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="total_variation"):
        tv(torch.rand(1, 1, 8, 8), [""])


def _scores(levels: dict[str, float], seeds: int = 3, split: str = "test", metrics=("gold_fidelity", "gold")):
    """Scores of each arm at ``levels[arm]`` on every metric (test_adaptive_arms' synthetic score table)."""
    from test_adaptive_arms import _scores as scores

    return scores(levels, seeds=seeds, split=split, metrics=metrics, leveled=metrics)


VAL = {"base": 0.2, "rocm-none-b0": 0.1, "rocm-kl-b1": 0.3, "rocm-kl-b10": 0.5, "rocm_sf-kl-b1": 0.2,
       "rocm_sf-kl-b10": 0.45, "rocm_hybrid-kl-b1": 0.5, "rocm_hybrid-kl-b10": 0.3, "rlcm-lr0.001": 0.3,
       "rlcm-lr0.01": 0.2}


def test_choose_settings_chooses_a_beta_per_variant_and_the_choice_file_reads_back(tmp_path):
    from rocm_rlhf.analysis.tables import tuning_table

    val = _scores(VAL, seeds=1, split="val", metrics=("gold",))
    chosen = arms.chosen_table(val, "gold")
    assert list(chosen["arm"]) == ["rocm-kl-b10", "rocm_sf-kl-b10", "rocm_hybrid-kl-b1", "rlcm-lr0.001"]
    row = chosen.set_index("arm").loc["rocm_sf-kl-b10"]
    assert (row["method"], row["divergence"], row["beta"], row["candidates"]) == ("rocm_sf", "kl", "10", "1 10")
    path = tmp_path / "chosen.csv"
    chosen.to_csv(path, index=False)
    assert runs.read_chosen(path) == {"kl": "10"}  # ROCM's own betas only
    assert runs.read_chosen_sf(path) == {"rocm_sf": "10", "rocm_hybrid": "1"}
    assert runs.read_chosen_lrs(path) == {"rlcm": "0.001"}
    back = pd.read_csv(path, dtype={"beta": str, "lr": str})
    long = tuning_table(val, back, ["gold"], tmp_path / "table_tuning")
    sf = long[long["method"] == "rocm_hybrid"]
    assert list(sf["setting"]) == ["1", "10"] and list(sf["chosen"]) == [True, False]
    md = (tmp_path / "table_tuning.md").read_text()
    assert "| ROCM-hybrid-KL | **β=1** |" in md and "| ROCM-SF-KL | β=1 |" in md and "score-function" in md


def _logs(levels: dict[str, float], seeds=3, steps=20) -> pd.DataFrame:
    """Training logs of the trained arms: 8 reward queries per step; ROCM's runs took 40 s, the others 30 s."""
    frames = []
    for arm in levels:
        run0 = runs.parse_arm(arm)
        if arm in runs.UNTRAINED:
            continue
        for seed in range(seeds):
            run = runs.Run(run0.method, run0.divergence, run0.beta, seed, run0.lr)
            step = np.arange(steps)
            wall = 40.0 if run.method == "rocm" else 30.0
            frames.append(pd.DataFrame({"run_id": run.id, **run.identity(), "step": step,
                                        "wall_s": wall * (step + 1) / steps, "device_hours": 0.0, "device": "cpu",
                                        "reward_queries": 8 * (step + 1), "reward_mean": 0.3,
                                        "divergence_mean": 0.01}))
    return pd.concat(frames, ignore_index=True)


TRAINS_ON = {"rocm": "proxy_pick (gradient)", "rocm_sf": "gold_fidelity (numbers)",
             "rocm_hybrid": "proxy_pick (gradient) + gold_fidelity (numbers)", "rlcm": "gold_fidelity (numbers)",
             "ddpo": "gold_fidelity (numbers)"}


def test_the_table_compares_each_variant_with_rocm_on_the_surrogate_and_the_baselines(tmp_path):
    from rocm_rlhf.analysis.score_function import (comparison_arms, score_function_legend, score_function_table,
                                                   score_function_text)
    from rocm_rlhf.analysis.stats import holm

    val = _scores(VAL, seeds=1, split="val", metrics=("gold",))
    arms.chosen_table(val, "gold").to_csv(tmp_path / "chosen.csv", index=False)
    chosen = pd.read_csv(tmp_path / "chosen.csv")
    test = {"base": 0.2, "rocm-none-b0": 0.1, "rocm-kl-b10": 0.4, "rocm_sf-kl-b10": 0.4, "rocm_hybrid-kl-b1": 0.5,
            "rlcm-lr0.001": 0.3}
    scores = _scores(test)
    assert comparison_arms(chosen, scores["arm"].unique()) == (["rocm_sf-kl-b10", "rocm_hybrid-kl-b1"],
                                                               ["rocm-kl-b10", "rlcm-lr0.001"])
    use = {"rocm": "instead", "rocm_hybrid": "also"}  # ROCM climbed the surrogate, the hybrid called both
    table = score_function_table(scores, chosen, _logs(test), ["gold_fidelity", "gold"], TRAINS_ON, use, n_boot=400)
    assert len(table) == 2 * 2 * 2 and list(table["p_holm"]) == pytest.approx(list(holm(table["p_value"])))
    hy = table.set_index(["treatment", "reference", "metric"])
    row = hy.loc[("rocm_hybrid-kl-b1", "rlcm-lr0.001", "gold")]
    assert row["mean_diff"] == pytest.approx(0.2, abs=0.01) and row["significant"] and row["seeds_paired"]
    same = hy.loc[("rocm_sf-kl-b10", "rocm-kl-b10", "gold")]
    assert abs(same["mean_diff"]) < 0.02 and not same["significant"]
    assert (row["queries_treatment"], row["seconds_treatment"], row["seconds_reference"]) == (160, 30, 30)
    assert (row["surrogate_calls_treatment"], row["surrogate_calls_reference"]) == (160, 0)
    rocm = hy.loc[("rocm_sf-kl-b10", "rocm-kl-b10", "gold")]
    assert (rocm["seconds_reference"], rocm["queries_reference"], rocm["surrogate_calls_reference"]) == (40, 0, 160)
    assert (rocm["queries_treatment"], rocm["surrogate_calls_treatment"]) == (160, 0)  # rocm_sf: the reward alone
    md, tex = score_function_text(table)
    assert "| ROCM-hybrid-KL (β=1) | proxy_pick (gradient) + gold_fidelity (numbers) | 160 | 160 | 30 | 3 |" in md
    assert "| ROCM-KL (β=10) | proxy_pick (gradient) | 0 | 160 | 40 | 3 |" in md
    assert re.search(r"\| ROCM-hybrid-KL \(β=1\) \| RLCM \(lr=0.001\) \| \+0\.(199|200|201) \[.*\]†", md) and "\\toprule" in tex
    assert "8 comparisons" in score_function_legend(table)
    with pytest.raises(ValueError, match="surrogate_use"):
        score_function_table(scores, chosen, _logs(test), ["gold"], TRAINS_ON, {"rocm": "sometimes"}, n_boot=50)
    with pytest.raises(ValueError, match="trains_on"):
        score_function_table(scores, chosen, _logs(test), ["gold"], {"rocm": "x"}, n_boot=50)
    no_sf = chosen[~chosen["method"].isin(runs.SCORE_FUNCTION_METHODS)]
    with pytest.raises(ValueError, match="score_function.methods"):
        score_function_table(scores, no_sf, _logs(test), ["gold"], TRAINS_ON, n_boot=50)


def test_fig_score_function_draws_the_compared_arms_against_reward_queries(tmp_path):
    from rocm_rlhf.analysis.figures import fig_score_function

    rows = []
    for arm, slope in {"rocm-kl-b10": 0.1, "rocm_sf-kl-b10": 0.2, "rlcm": 0.0}.items():
        run0 = runs.parse_arm(arm)
        for seed in range(3):
            run = runs.Run(run0.method, run0.divergence, run0.beta, seed)
            for step in (0, 10, 20):
                for metric in ("gold_fidelity", "gold"):
                    rows.append({"run_id": run.id, **run.identity(), "device": "cpu", "step": step,
                                 "reward_queries": 8 * step, "device_hours": step / 3600, "wall_s": step,
                                 "metric": metric, "mean": 0.3 + slope * step / 20 + 0.01 * seed, "n_images": 32})
    curves = pd.DataFrame(rows)
    saved = fig_score_function(curves, tmp_path / "fig", ["gold_fidelity", "gold"],
                               ["rocm_sf-kl-b10", "rocm-kl-b10", "rlcm"], surrogate_arms=["rocm-kl-b10"])
    assert saved.png.is_file() and len(saved.figure.axes) == 2
    labels = [t.get_text() for t in saved.figure.legends[0].get_texts()]
    # the paper's row order; ROCM climbed the surrogate, so its x counts surrogate calls
    assert labels == ["ROCM-KL (β=10) (x: surrogate calls)", "ROCM-SF-KL (β=10)", "RLCM"]
    sf_line = next(line for line in saved.figure.axes[0].get_lines() if line.get_label() == "ROCM-SF-KL (β=10)")
    assert sf_line.get_marker() == "d" and sf_line.get_color() == "#0072B2"  # KL's colour, its own marker
    assert any(line.get_linestyle() == ":" for line in saved.figure.axes[0].get_lines())  # the untrained LCM
    with pytest.raises(ValueError, match="lack the arm"):
        fig_score_function(curves, tmp_path / "x", ["gold"], ["rocm_hybrid-kl-b1"])


def test_a_hybrid_run_with_groups_of_images_through_the_trainer(tmp_path, tiny_lcm_dir):
    from rocm_rlhf.models import load_lcm_pipeline, pipeline_class
    from rocm_rlhf.rewards import load_scorer
    from rocm_rlhf.training.lora import add_lora
    from rocm_rlhf.training.loop import Trainer, TrainSettings
    from rocm_rlhf.training.rocm_sf import ROCMHybrid

    pipe = load_lcm_pipeline(tiny_lcm_dir)
    params = add_lora(pipe.unet, 16, 32, ["to_q", "to_k", "to_v", "to_out.0"], seed=0)  # the shipped rank and alpha
    config = {"rocm": {"reduction": "mean", "final_step": True}, "score_function": {"images_per_prompt": 2}}
    method = ROCMHybrid.from_config(config, divergence="kl", beta=0.1, surrogate="total_variation")
    assert method.images_per_prompt == 2 and isinstance(method.surrogate, str)
    s = TrainSettings(steps=2, batch_size=4, lr=0.01, seed=0, checkpoint_every=2, num_steps=3, guidance_scale=3.0)
    Trainer(method, pipe, params, load_scorer("jpeg_compressibility"), [f"p{i}" for i in range(9)], s,
            tmp_path / "run", torch.device("cpu"), run_info={"run_id": "hy"}, pipeline_cls=pipeline_class("lcm")).run()
    log = pd.read_csv(tmp_path / "run" / "log.csv")
    assert len(log) == 2 and log["surrogate_mean"].lt(0).all() and log["reward_queries"].iloc[-1] == 8
    assert math.isfinite(log["residual_std"].iloc[-1])
    with pytest.raises(ValueError, match="train.surrogate"):
        ROCMHybrid.from_config(config, divergence="kl", beta=0.1)
    with pytest.raises(ValueError, match="not differentiable"):
        ROCMHybrid.from_config(config, divergence="kl", beta=0.1, surrogate="jpeg_compressibility")


def test_ill_typed_scores_get_one_clear_error_naming_the_scorer():
    from rocm_rlhf.rewards import FunctionScorer, checked_scores
    from rocm_rlhf.training.loop import CountingScorer

    images = torch.rand(3, 3, 8, 12)

    def numbers(images, prompts):
        """clicks: how many people liked each image"""
        return [1, 0, 2]

    numbers.differentiable = False
    clicks = FunctionScorer(numbers)
    out = CountingScorer(clicks)(images, ["a", "b", "c"])  # numbers without gradients are fine
    assert out.dtype == torch.float32 and out.tolist() == [1.0, 0.0, 2.0]
    diff = FunctionScorer(lambda images, prompts: [0.0] * 3)
    cases = [
        (diff, [0.0] * 3, TypeError, "differentiable scorer must return a torch tensor"),
        (clicks, "high", TypeError, "returned str"),
        (clicks, torch.zeros(3, 1), ValueError, r"shape \(3, 1\) for 3 images"),
        (clicks, [1.0, 2.0], ValueError, r"shape \(2,\) for 3 images"),
        (clicks, [[1.0], [2.0, 3.0]], TypeError, "not 3 numbers"),
        (clicks, torch.zeros(3, dtype=torch.complex64), TypeError, "complex64"),
        (clicks, torch.tensor([1.0, float("inf"), 0.0]), ValueError, "1 non-finite"),
    ]
    for scorer, scores, error, message in cases:
        with pytest.raises(error, match=message) as info:
            checked_scores(scores, images, scorer)
        assert "clicks" in str(info.value) or scorer is diff
    assert checked_scores(torch.tensor([1, 2, 3]), images, clicks).dtype == torch.float32  # integers: counts
    nan = CountingScorer(FunctionScorer(lambda images, prompts: torch.full((3,), float("nan"))))
    assert nan(images, ["a"] * 3).isnan().all() and nan.nonfinite == 3  # counted; the loss check stops the run
    assert "returned 3 non-finite score(s)" in nan.nonfinite_cause()


def test_plain_numbers_reach_the_probe_the_evaluation_and_a_weighted_sum():
    """A scorer without gradients that returns a list works wherever a scorer is called, not only in training."""
    from rocm_rlhf.evaluation import score_images
    from rocm_rlhf.rewards import FunctionScorer, WeightedSum

    def count(images, prompts):
        return [float(i) for i in range(images.shape[0])]

    count.differentiable = False
    scorer = FunctionScorer(count)
    images = torch.rand(5, 3, 8, 6)
    units = pd.DataFrame({"prompt_id": [f"p{i}" for i in range(5)], "sample_seed": 0, "prompt": ["x"] * 5})
    scores = score_images(images, units, {"count": scorer}, batch_size=3)
    assert scores.loc[scores["metric"] == "count", "value"].tolist() == [0.0, 1.0, 2.0, 0.0, 1.0]  # per batch of 3
    total = WeightedSum({"count": scorer, "tv": FunctionScorer(lambda im, p: im.mean((1, 2, 3)))},
                        {"count": 2.0, "tv": 1.0})
    assert torch.allclose(total(images, ["x"] * 5), 2 * torch.arange(5.0) + images.mean((1, 2, 3)))
    from rocm_rlhf.training.probe import HeldOutProbe

    probe = HeldOutProbe.__new__(HeldOutProbe)  # only score(): its units, scorers and batch size
    probe.units, probe.scorers, probe.batch_size = units, {"count": scorer}, 2
    assert probe.score(images, "cpu") == {"count": pytest.approx((0 + 1 + 0 + 1 + 0) / 5)}
