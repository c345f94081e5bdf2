"""The vocabulary (rocm_rlhf.runs): run ids round-trip, beta has one text form, and the catalogue agrees with the
implementations it names (divergence registry, method classes, the config schema's choices)."""

import math
import re

import pytest

from rocm_rlhf import runs
from rocm_rlhf.infra.config import load_schema, validate_config


@pytest.mark.parametrize("run_id", ["base", "base-ddim", "rocm-none-b0-s0", "rocm-kl-b10-s3", "rocm-fisher-b0.03-s1",
                                    "rocm-js-b1e-05-s0", "rlcm-s0", "dpok-s12"])
def test_run_ids_round_trip(run_id):
    run = runs.parse_run(run_id)
    assert run.id == run_id
    assert re.fullmatch(runs.RUN_PATTERN, run_id)


@pytest.mark.parametrize("bad", ["rocm-kl-b10.0-s0", "rocm-kl-b0-s0", "rocm-none-b1-s0", "rocm-tv-b1-s0", "ppo-s0",
                                 "rlcm", "rocm-kl-b10", "Base", "base-ddim-s0", "base-s0"])
def test_non_run_ids_are_refused_with_the_accepted_forms(bad):
    with pytest.raises(ValueError, match="run id"):
        runs.parse_run(bad)


def test_beta_has_one_text_form_from_config_to_arm():
    config = {"rocm": {"seeds": [0, 1], "unregularised": True, "divergences": ["kl", "fisher"],
                       "betas": {"kl": [10.0, 1e-5], "fisher": [0.3]}}, "baselines": {"methods": ["rlcm"], "seeds": [0]}}
    assert runs.beta_grid(config) == {"kl": ["10", "1e-05"], "fisher": ["0.3"]}
    ids = runs.rocm_runs(config)
    assert ids[:4] == ["rocm-none-b0-s0", "rocm-kl-b10-s0", "rocm-kl-b1e-05-s0", "rocm-fisher-b0.3-s0"]
    assert len(ids) == 8
    assert runs.eval_runs(config) == ["base", *ids, "rlcm-s0"]
    run = runs.parse_run("rocm-kl-b1e-05-s1")
    assert run.arm == "rocm-kl-b1e-05" and run.beta == "1e-05" and run.beta_value == 1e-5
    assert runs.arm_label("rocm", "kl", run.beta_value) == "ROCM-KL (β=1e-05)"


def test_the_confirmatory_stage_adds_seeds_to_the_arms_table1_shows_and_only_those():
    config = {"rocm": {"seeds": [0], "unregularised": True, "divergences": ["kl", "js"],
                       "betas": {"kl": [1.0, 10.0], "js": [1.0]}},
              "baselines": {"methods": ["rlcm", "ddpo"], "seeds": [0]}, "confirm": {"seeds": [1, 2]}}
    # known before any result: the sweep at seed 0, beta = 0 and the baselines at every seed
    assert runs.rocm_runs(config) == ["rocm-none-b0-s0", "rocm-kl-b1-s0", "rocm-kl-b10-s0", "rocm-js-b1-s0",
                                      "rocm-none-b0-s1", "rocm-none-b0-s2"]
    assert runs.sweep_runs(config) == ["rocm-kl-b1-s0", "rocm-kl-b10-s0", "rocm-js-b1-s0"]
    assert runs.baseline_runs(config) == ["rlcm-s0", "rlcm-s1", "rlcm-s2", "ddpo-s0", "ddpo-s1", "ddpo-s2"]
    # known once beta is chosen: the chosen betas at the confirmatory seeds, nothing else of the sweep
    chosen = {"kl": "10", "js": "1"}
    assert runs.confirm_runs(config, chosen) == ["rocm-kl-b10-s1", "rocm-kl-b10-s2", "rocm-js-b1-s1", "rocm-js-b1-s2"]
    evaluated = runs.eval_runs(config, chosen)
    assert evaluated[:2] == ["base", "base-ddim"]  # a diffusion baseline is configured: its untrained start too
    assert "rocm-kl-b1-s1" not in evaluated and len(evaluated) == len(set(evaluated)) == 2 + 6 + 4 + 6
    # seeds already in a grid are not trained twice; no confirm block = one seed, as before
    config["confirm"]["seeds"] = [0, 1]
    assert runs.confirm_runs(config, chosen) == ["rocm-kl-b10-s1", "rocm-js-b1-s1"]
    assert runs.baseline_runs(config) == ["rlcm-s0", "rlcm-s1", "ddpo-s0", "ddpo-s1"]
    del config["confirm"]
    assert runs.confirm_runs(config, chosen) == [] and runs.rocm_runs(config)[-1] == "rocm-js-b1-s0"
    config["baselines"]["methods"] = ["rlcm"]
    assert runs.untrained_runs(config) == ["base"]  # no diffusion baseline: no base diffusion arm


def test_read_chosen_gives_canonical_betas_and_names_a_wrong_file(tmp_path):
    good = tmp_path / "chosen.csv"
    good.write_text("method,divergence,beta,lr,arm,metric,mean\nrocm,kl,10.0,,rocm-kl-b10,gold,0.2\n"
                    "rocm,fisher,0.30,,rocm-fisher-b0.3,gold,0.1\nddpo,none,,3e-4,ddpo-lr0.0003,gold,0.1\n")
    assert runs.read_chosen(good) == {"kl": "10", "fisher": "0.3"}
    assert runs.read_chosen_lrs(good) == {"ddpo": "0.0003"}
    bad = tmp_path / "scores.csv"
    bad.write_text("arm,metric,value\nbase,gold,0.1\n")
    for read in (runs.read_chosen, runs.read_chosen_lrs):
        with pytest.raises(ValueError, match="choose_settings"):
            read(bad)


def test_tuned_baselines_carry_their_learning_rate_in_run_and_arm_ids():
    run = runs.parse_run("ddpo-lr0.0003-s2")
    assert (run.method, run.lr, run.seed, run.arm, run.id) == ("ddpo", "0.0003", 2, "ddpo-lr0.0003", "ddpo-lr0.0003-s2")
    assert runs.parse_run("ddpo-s2").lr == "" and runs.parse_arm("ddpo-lr0.03").lr == "0.03"
    assert runs.arm_label("ddpo", lr="0.0003") == "DDPO (lr=0.0003)"
    with pytest.raises(ValueError, match="non-canonical"):
        runs.parse_run("ddpo-lr3e-4-s0")
    with pytest.raises(ValueError, match="learning rate"):
        runs.parse_run("ddpo-lr0-s0")
    # controls: the base model and every baseline arm, tuned or not; the base diffusion model is a treatment
    assert runs.control_arms(["rocm-kl-b1", "ddpo-lr0.0003", "base-ddim", "rlcm", "base"]) == ["base", "ddpo-lr0.0003", "rlcm"]


def test_the_tuning_grid_chosen_learning_rates_and_the_reported_runs():
    config = {"rocm": {"seeds": [0], "divergences": ["kl"], "betas": {"kl": [1.0]}, "unregularised": True},
              "baselines": {"methods": ["rlcm", "ddpo"], "seeds": [0], "lr_factors": [0.1, 1, 10],
                            "rlcm": {"lr": 0.003}, "ddpo": {"lr": 3e-4}},
              "confirm": {"seeds": [1, 2]}}
    assert runs.lr_grid(config) == {"rlcm": ["0.0003", "0.003", "0.03"], "ddpo": ["3e-05", "0.0003", "0.003"]}
    tuning = ["rlcm-lr0.0003-s0", "rlcm-lr0.003-s0", "rlcm-lr0.03-s0",
              "ddpo-lr3e-05-s0", "ddpo-lr0.0003-s0", "ddpo-lr0.003-s0"]
    assert runs.tuning_runs(config) == tuning
    assert runs.baseline_runs(config) == tuning  # the confirmatory seeds wait for the choice
    chosen = {"rlcm": "0.03", "ddpo": "3e-05"}
    assert runs.baseline_runs(config, chosen) == tuning + ["rlcm-lr0.03-s1", "rlcm-lr0.03-s2",
                                                          "ddpo-lr3e-05-s1", "ddpo-lr3e-05-s2"]
    reported = runs.reported_runs(config, {}, chosen)
    assert [r for r in reported if r.startswith(("rlcm", "ddpo"))] == [
        "rlcm-lr0.03-s0", "ddpo-lr3e-05-s0", "rlcm-lr0.03-s1", "rlcm-lr0.03-s2", "ddpo-lr3e-05-s1", "ddpo-lr3e-05-s2"]
    assert set(runs.eval_runs(config, {}, chosen)) - set(reported) == set(tuning) - {"rlcm-lr0.03-s0", "ddpo-lr3e-05-s0"}
    config["baselines"]["lr_factors"] = [1.0]  # no tuning: the ids carry no learning rate, every seed planned at once
    assert runs.lr_grid(config) == {} and runs.tuning_runs(config) == []
    assert runs.baseline_runs(config) == ["rlcm-s0", "rlcm-s1", "rlcm-s2", "ddpo-s0", "ddpo-s1", "ddpo-s2"]


def test_the_base_diffusion_arm_is_untrained_and_samples_with_ddpos_sampler():
    run = runs.parse_run("base-ddim")
    assert run.generator == "diffusion" and run.arm == "base-ddim" and run.id == "base-ddim"
    assert runs.arm_label("base-ddim") == "Base diffusion (DDIM)"
    assert runs.DIFFUSION_SAMPLER_OF in runs.BASELINES and runs.generator(runs.DIFFUSION_SAMPLER_OF) == "diffusion"
    assert runs.parse_arm("base-ddim") == run and "base-ddim" not in runs.control_arms(["base", "base-ddim", "ddpo"])


def test_identity_is_the_score_tables_arm_attributes():
    base = runs.parse_run("base").identity()
    assert base["arm"] == "base" and base["method"] == "base" and base["divergence"] == "none"
    assert math.isnan(base["beta"]) and base["seed"] == 0
    assert runs.parse_run("rocm-none-b0-s2").identity() == {"arm": "rocm-none-b0", "method": "rocm",
                                                            "divergence": "none", "beta": 0.0, "seed": 2}
    ddpo = runs.parse_run("ddpo-s4").identity()
    assert ddpo["arm"] == "ddpo" and math.isnan(ddpo["beta"]) and ddpo["seed"] == 4


def test_catalogue_matches_the_implementations():
    from rocm_rlhf.divergences import available

    assert set(runs.DIVERGENCES) <= set(available())
    classes = {"rocm_sf": "rocmscorefunction", "rocm_hybrid": "rocmhybrid"}
    for m in runs.METHODS.values():
        cls = m.load_class()
        assert cls.__name__.lower() == classes.get(m.name, m.name)
        assert m.generator in ("lcm", "diffusion")
        assert m.role == ("baseline" if m.name in runs.BASELINES else "treatment")
    assert runs.SCORE_FUNCTION_METHODS == ("rocm_sf", "rocm_hybrid") and "rocm_sf" not in runs.BASELINES
    assert runs.generator("base") == "lcm" and runs.generator("dpok") == "diffusion"


def test_the_schema_takes_its_choices_from_the_catalogue():
    schema = load_schema()
    rocm = schema["properties"]["rocm"]["properties"]["divergences"]
    base = schema["properties"]["baselines"]["properties"]["methods"]
    assert rocm["items"]["enum"] == list(runs.DIVERGENCES) == rocm["default"]
    assert base["items"]["enum"] == list(runs.BASELINES) == base["default"]
    sf = schema["properties"]["score_function"]["properties"]
    assert sf["methods"]["items"]["enum"] == list(runs.SCORE_FUNCTION_METHODS) and sf["methods"]["default"] == []
    assert sf["divergence"]["enum"] == list(runs.DIVERGENCES)
    config = validate_config({})
    assert config["rocm"]["divergences"] == list(runs.DIVERGENCES)
    with pytest.raises(Exception, match="tv"):
        validate_config({"rocm": {"divergences": ["tv"]}})


def test_control_arms_are_base_then_the_baselines_present():
    assert runs.control_arms(["rocm-kl-b1", "rlcm", "base", "ddpo"]) == ["base", "ddpo", "rlcm"]


def test_arm_ids_parse_back():
    assert runs.parse_arm("rocm-kl-b10").arm == "rocm-kl-b10"
    assert runs.parse_arm("base").method == "base" and runs.parse_arm("dpok").method == "dpok"
    with pytest.raises(ValueError, match="not an arm id"):
        runs.parse_arm("rocm-kl-b10-s0")
