"""The vocabulary (rocm_rlhf.runs): run ids round-trip, beta has one text form, and the catalogue agrees with the
implementations it names (divergence registry, method classes, the config schema's choices)."""

import math
import re

import pytest

from rocm_rlhf import runs
from rocm_rlhf.infra.config import load_schema, validate_config


@pytest.mark.parametrize("run_id", ["base", "rocm-none-b0-s0", "rocm-kl-b10-s3", "rocm-fisher-b0.03-s1",
                                    "rocm-js-b1e-05-s0", "rlcm-s0", "dpok-s12"])
def test_run_ids_round_trip(run_id):
    run = runs.parse_run(run_id)
    assert run.id == run_id
    assert re.fullmatch(runs.RUN_PATTERN, run_id)


@pytest.mark.parametrize("bad", ["rocm-kl-b10.0-s0", "rocm-kl-b0-s0", "rocm-none-b1-s0", "rocm-tv-b1-s0", "ppo-s0",
                                 "rlcm", "rocm-kl-b10", "Base"])
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
    for m in runs.METHODS.values():
        cls = m.load_class()
        assert cls.__name__.lower() == m.name
        assert m.generator in ("lcm", "diffusion")
    assert runs.generator("base") == "lcm" and runs.generator("dpok") == "diffusion"


def test_the_schema_takes_its_choices_from_the_catalogue():
    schema = load_schema()
    rocm = schema["properties"]["rocm"]["properties"]["divergences"]
    base = schema["properties"]["baselines"]["properties"]["methods"]
    assert rocm["items"]["enum"] == list(runs.DIVERGENCES) == rocm["default"]
    assert base["items"]["enum"] == list(runs.BASELINES) == base["default"]
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
