"""The preference study: its design from samples, the app's HTTP interface and database, simulated raters answering
through it, and the analysis recovering the simulated preference ordering (rocm_rlhf.study)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from rocm_rlhf.sandbox.captions import caption
from rocm_rlhf.sandbox.render import World, all_attributes
from rocm_rlhf.study.analysis import (RIDGE, analyse, attention, bradley_terry, fig_study, join_answers, separated,
                                     study_text)
from rocm_rlhf.study.app import create_app, serving
from rocm_rlhf.study.db import read_answers
from rocm_rlhf.study.design import build_study, load_study, needs_chosen, resolve_arms, runs_of_arms
from rocm_rlhf.study.simulate import GoldRater, _Client, sandbox_gold, simulate

NOISE = {"rocm-kl-b10": 0.01, "base": 0.05, "rocm-none-b0": 0.1}
"""Pixel noise per arm on true renders: the gold judge's realism falls with it, so the true order is kl > base > none."""
RUNS = {"base": ["base"], "rocm-none-b0": ["rocm-none-b0-s0"], "rocm-kl-b10": ["rocm-kl-b10-s0", "rocm-kl-b10-s1"]}
WORLD = World(image_size=32, jitter=1)


def _samples(tmp_path, n_prompts=6, n_seeds=2):
    attrs = all_attributes()[:: len(all_attributes()) // n_prompts][:n_prompts]
    clean = [WORLD.render(a).transpose(1, 2, 0) for a in attrs]
    out = {}
    for k, (arm, run_ids) in enumerate(RUNS.items()):
        for j, rid in enumerate(run_ids):
            rng = np.random.default_rng(10 * k + j)
            imgs = [np.clip(c + rng.normal(0, NOISE[arm], c.shape), 0, 1) for c in clean for _ in range(n_seeds)]
            path = tmp_path / "samples" / rid / "images.npz"
            path.parent.mkdir(parents=True)
            np.savez(path, images=(np.stack(imgs) * 255).round().astype(np.uint8),
                     prompt_id=np.repeat([f"eval-{i:03d}" for i in range(n_prompts)], n_seeds),
                     sample_seed=np.tile(np.arange(n_seeds), n_prompts),
                     prompt=np.repeat([caption(a, 0, ()) for a in attrs], n_seeds))
            out[rid] = path
    return out


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("study")
    build_study(_samples(tmp), RUNS, tmp / "design", pairs_per_arm_pair=10, attention_fraction=0.2, seed=3)
    return tmp / "design"


def test_study_pairs_units_of_two_arms_with_recorded_sides_and_checks(study_dir, tmp_path):
    study = load_study(study_dir)
    items = pd.DataFrame(study["items"])
    pairs = items[items["kind"] == "pair"]
    assert len(pairs) == 3 * 10 and (pairs["left_arm"] != pairs["right_arm"]).all()
    for (a, b), g in pairs.groupby(pairs[["left_arm", "right_arm"]].apply(lambda r: tuple(sorted(r)), axis=1)):
        assert g[["prompt_id", "sample_seed"]].drop_duplicates().shape[0] == 10  # distinct units per arm pair
        assert 0 < (g["left_arm"] == a).sum() < 10  # left/right drawn, both ways
    assert set(pairs["left_run"]) | set(pairs["right_run"]) == {r for rs in RUNS.values() for r in rs}
    checks = items[items["kind"] != "pair"]
    assert len(checks) == 6 and set(checks["kind"]) == {"identical", "broken"}
    ident = checks[checks["kind"] == "identical"]
    assert (ident["left_image"] == ident["right_image"]).all() and (ident["expected"] == "tie").all()
    broken = checks[checks["kind"] == "broken"]
    assert set(broken["expected"]) <= {"left", "right"} and (broken["left_image"] != broken["right_image"]).all()
    names = set(items["left_image"]) | set(items["right_image"])  # blind: names are content hashes
    assert not any(arm in n or "rocm" in n or "base" in n for n in names for arm in RUNS)
    assert sorted(items["item_id"]) == [f"q{i:04d}" for i in range(len(items))]
    # the same samples and seed give the same study; another seed another one
    again = build_study({r: study_dir.parent / "samples" / r / "images.npz" for rs in RUNS.values() for r in rs},
                        RUNS, tmp_path / "again", pairs_per_arm_pair=10, attention_fraction=0.2, seed=3)
    assert again.to_dict("records") == study["items"]
    other = build_study({r: study_dir.parent / "samples" / r / "images.npz" for rs in RUNS.values() for r in rs},
                        RUNS, tmp_path / "other", pairs_per_arm_pair=10, attention_fraction=0.2, seed=4)
    assert other.to_dict("records") != study["items"]


def test_study_design_errors_name_the_setting(study_dir, tmp_path):
    samples = {r: study_dir.parent / "samples" / r / "images.npz" for rs in RUNS.values() for r in rs}
    with pytest.raises(ValueError, match="pairs_per_arm_pair = 13 exceeds the 12"):
        build_study(samples, RUNS, tmp_path / "s", pairs_per_arm_pair=13, attention_fraction=0.1, seed=0)
    with pytest.raises(ValueError, match="needs the betas chosen"):
        resolve_arms(["base", "chosen"])
    with pytest.raises(ValueError, match="no beta was chosen for divergence 'js'"):
        resolve_arms(["base", "chosen-js"], {"kl": "10"})
    with pytest.raises(ValueError, match="study.arms: 'rocm-xx' is not an arm id"):
        resolve_arms(["base", "rocm-xx"])
    with pytest.raises(ValueError, match="at least two different arms"):
        resolve_arms(["base", "base"])
    assert resolve_arms(["base", "rocm-none-b0", "chosen", "rlcm"], {"kl": "10", "fisher": "3"}) == [
        "base", "rocm-none-b0", "rocm-kl-b10", "rocm-fisher-b3", "rlcm"]
    # a tuned baseline named alone is its chosen learning rate's arm
    assert resolve_arms(["base", "rlcm", "ddpo-lr0.03"], {}, {"rlcm": "0.003"}) == ["base", "rlcm-lr0.003", "ddpo-lr0.03"]
    assert needs_chosen(["base", "rlcm"], ["rlcm", "ddpo"]) and not needs_chosen(["base", "rlcm"])
    with pytest.raises(ValueError, match=r"arm\(s\) \['rlcm'\] that this config does not sample"):
        runs_of_arms(["base", "rlcm"], ["base", "rocm-kl-b10-s0"])
    assert runs_of_arms(["rocm-kl-b10"], ["rocm-kl-b10-s1", "base", "rocm-kl-b10-s0"]) == {
        "rocm-kl-b10": ["rocm-kl-b10-s0", "rocm-kl-b10-s1"]}
    with pytest.raises(FileNotFoundError, match="not a study folder"):
        load_study(tmp_path)


def test_app_records_answers_once_and_answers_bad_requests_with_4xx(study_dir, tmp_path):
    app = create_app(study_dir, tmp_path / "answers.sqlite")
    with serving(app) as url:
        anon = _Client(url)
        assert anon.request("GET", "/api/next")[0] == 401
        assert anon.request("POST", "/api/answer", {"item_id": "q0000", "choice": "left"})[0] == 401
        assert anon.request("POST", "/api/raters", {"rater_id": "has space"})[0] == 400
        assert anon.request("POST", "/api/raters", None)[0] == 400
        alice = _Client(url)
        code = alice.json("POST", "/api/raters", {"rater_id": "alice"})["code"]
        item = alice.json("GET", "/api/next")
        assert item["position"] == 1 and item["total"] == 36 and set(item) >= {"prompt", "left", "right"}
        assert "arm" not in json.dumps(item) and "rocm" not in json.dumps(item)  # the page never sees the arms
        assert alice.request("GET", item["left"])[0] == 200
        assert alice.request("GET", "/images/..%2Fstudy.json")[0] == 404
        assert alice.request("POST", "/api/answer", {"item_id": item["item_id"], "choice": "up"})[0] == 400
        assert alice.request("POST", "/api/answer", {"item_id": "q9999", "choice": "left"})[0] == 404
        assert alice.request("POST", "/api/answer", {"item_id": item["item_id"]})[0] == 400
        assert alice.request("POST", "/api/answer", {"item_id": "x" * 20000, "choice": "left"})[0] == 413
        ok = {"item_id": item["item_id"], "choice": "left"}
        assert alice.request("POST", "/api/answer", ok)[0] == 201
        assert alice.request("POST", "/api/answer", ok)[0] == 200  # a double submit: accepted once
        assert alice.request("POST", "/api/answer", {**ok, "choice": "right"})[0] == 409  # never overwritten
        assert alice.json("GET", "/api/next")["position"] == 2
        # another person cannot take alice's id, nor write as alice with another code
        mallory = _Client(url)
        assert mallory.request("POST", "/api/raters", {"rater_id": "alice"})[0] == 409
        assert mallory.request("POST", "/api/raters", {"rater_id": "alice", "code": "guess"})[0] == 409
        mallory.json("POST", "/api/raters", {"rater_id": "mallory"})
        assert mallory.request("POST", "/api/answer", {"item_id": item["item_id"], "choice": "right"})[0] == 201
        # alice resumes in another browser with her code, at the same place
        alice2 = _Client(url)
        alice2.json("POST", "/api/raters", {"rater_id": "alice", "code": code})
        assert alice2.json("GET", "/api/next")["position"] == 2
        assert b"Left is better" in alice2.request("GET", "/rate")[1]
    app.extensions["study_store"].close()
    answers = read_answers(tmp_path / "answers.sqlite", load_study(study_dir))
    assert answers.set_index("rater_id")["choice"].to_dict() == {"alice": "left", "mallory": "right"}
    assert answers["answered_at"].str.endswith("+00:00").all()  # UTC time of each answer
    times = answers.set_index("rater_id")["response_ms"]
    assert times["alice"] >= 0 and np.isnan(times["mallory"])  # mallory answered an item she was never shown


def test_answers_survive_a_restart_and_a_database_answers_one_study(study_dir, tmp_path):
    db = tmp_path / "answers.sqlite"
    app = create_app(study_dir, db)
    with serving(app) as url:
        c = _Client(url)
        c.json("POST", "/api/raters", {"rater_id": "r1"})
        first = c.json("GET", "/api/next")
        c.json("POST", "/api/answer", {"item_id": first["item_id"], "choice": "tie"})
        second = c.json("GET", "/api/next")
    del app  # the app is gone (as after a crash); a new one on the same file continues where the rater was
    with serving(create_app(study_dir, db)) as url:
        c.base = url
        again = c.json("GET", "/api/next")
        assert again["item_id"] == second["item_id"] and again["position"] == 2
    other = tmp_path / "other"
    build_study({r: study_dir.parent / "samples" / r / "images.npz" for rs in RUNS.values() for r in rs}, RUNS,
                other, pairs_per_arm_pair=2, attention_fraction=0.0, seed=1)
    with pytest.raises(ValueError, match="holds the answers of another study"):
        create_app(other, db)


def test_simulated_raters_through_the_app_recover_the_preference_order(study_dir, tmp_path):
    """Three gold raters and a careless one answer every item over HTTP; the careless one fails the attention
    checks and is excluded; the Bradley-Terry fit and the win rates recover the true order kl > base > none."""
    app = create_app(study_dir, tmp_path / "sim.sqlite", durable=False)
    with serving(app) as url:
        done = simulate(url, sandbox_gold(WORLD, None), raters=3, careless=1, temperature=0.5, tie_margin=0.1,
                        seed=0)
    assert done == {"sim-gold-0": 36, "sim-gold-1": 36, "sim-gold-2": 36, "sim-careless-0": 36}
    study = load_study(study_dir)
    res = analyse(study, read_answers(tmp_path / "sim.sqlite", study), max_failed=0.25, n_boot=500, rng_seed=0)
    raters = res.raters.set_index("rater_id")
    assert raters.loc["sim-careless-0", "excluded"] and raters.loc["sim-careless-0", "n_failed"] >= 3
    assert not raters.loc[["sim-gold-0", "sim-gold-1", "sim-gold-2"], "excluded"].any()
    assert res.summary["raters_excluded"] == 1 and res.summary["comparisons_excluded"] == 30
    assert res.summary["checks_failed"] == int(raters["n_failed"].sum()) >= 3
    order = list(res.strengths.sort_values("strength", ascending=False)["arm"])
    assert order == ["rocm-kl-b10", "base", "rocm-none-b0"]
    wr = res.win_rates.set_index(["arm_a", "arm_b"])
    assert wr.loc[("rocm-kl-b10", "rocm-none-b0"), "ci_low"] > 0.5  # the clearest pair is significant
    assert wr.loc[("rocm-none-b0", "base"), "win_rate_a"] < 0.5
    assert (wr["n_answers"] == 30).all() and (wr["n_raters"] == 3).all()
    assert res.summary["krippendorff_alpha"] > 0.2 and res.summary["items_rated_twice"] == 30
    md, tex, long = study_text(res, "simulated")
    assert "ROCM-KL (β=10)" in md and "1 excluded" in md and tex.count("\\toprule") == 2
    assert set(long["part"]) == {"bradley_terry", "win_rate"}
    saved = fig_study(res, tmp_path / "fig_study")
    assert saved.png.stat().st_size > 5000 and saved.pdf.exists()


def test_bradley_terry_recovers_known_strengths_and_stays_finite_under_separation():
    rng = np.random.default_rng(0)
    theta = np.array([0.0, 1.0, -0.5, 2.0])
    wins = np.zeros((4, 4))
    for i in range(4):
        for j in range(4):
            if i != j:
                wins[i, j] = rng.binomial(2000, 1 / (1 + np.exp(-(theta[i] - theta[j]))))
    fit = bradley_terry(wins)
    assert np.allclose(fit - fit[0], theta, atol=0.1)
    sep = bradley_terry(np.array([[0.0, 5.0], [0.0, 0.0]]))  # arm 0 won every comparison
    assert np.all(np.isfinite(sep)) and sep[0] - sep[1] > 3
    batch = bradley_terry(np.stack([wins, wins.T]))  # batched, and the mirror image flips the order
    assert np.allclose(batch[0], fit) and np.allclose(batch[1], -fit, atol=1e-6)


def _near_separated_answers(study, tie_items):
    """Three raters answer every comparison: rocm-none-b0 loses every one, except one rater's tie on ``tie_items``
    of its pairs; kl and base split theirs (kl ahead)."""
    rng = np.random.default_rng(1)
    rows, seen = [], 0
    for it in study["items"]:
        if it["kind"] != "pair":
            continue
        none_side = "left" if it["left_arm"] == "rocm-none-b0" else "right" if it["right_arm"] == "rocm-none-b0" else ""
        for r in ("r0", "r1", "r2"):
            if none_side:
                choice = "tie" if (r == "r0" and seen < tie_items) else ("right" if none_side == "left" else "left")
            else:
                kl_side = "left" if it["left_arm"] == "rocm-kl-b10" else "right"
                choice = rng.choice([kl_side, "left" if kl_side == "right" else "right", "tie"], p=[0.5, 0.3, 0.2])
            rows.append((r, it["item_id"], str(choice)))
        seen += bool(none_side)
    return pd.DataFrame(rows, columns=["rater_id", "item_id", "choice"]).assign(answered_at="", response_ms=0)


def test_bradley_terry_ci_holds_its_estimate_under_near_separation(study_dir):
    """An arm that loses every comparison but one tie: the fit converges (gradient 0), the bootstrap replicates
    are fitted on the data's scale (the ridge weighs the same), so the estimate lies inside its CI; with no tie the
    answers separate the arm and its strength is -inf."""
    study = load_study(study_dir)
    res = analyse(study, _near_separated_answers(study, tie_items=1), max_failed=0.25, n_boot=400, rng_seed=0)
    st = res.strengths.set_index("arm")
    none = st.loc["rocm-none-b0"]
    assert np.isfinite(none["strength"]) and none["strength"] < -4
    assert (st["ci_low"] <= st["strength"]).all() and (st["strength"] <= st["ci_high"]).all(), st
    k = list(study["arms"])
    wins = np.zeros((len(k), len(k)))
    for r in res.comparisons.itertuples():
        a, b = k.index(r.arm_a), k.index(r.arm_b)
        wins[a, b] += r.score_a
        wins[b, a] += 1 - r.score_a
    theta = bradley_terry(wins)
    p = 1 / (1 + np.exp(-(theta[:, None] - theta[None, :])))
    grad = (wins - (wins + wins.T) * p).sum(1) - RIDGE * theta
    assert np.abs(grad).max() < 1e-8
    assert np.allclose(theta - theta[k.index("base")], st.loc[k, "strength"])
    assert separated(wins)[k.index("rocm-none-b0"), k.index("base")] == 0
    sep = analyse(study, _near_separated_answers(study, tie_items=0), max_failed=0.25, n_boot=50).strengths
    row = sep.set_index("arm").loc["rocm-none-b0"]
    assert row["strength"] == row["ci_low"] == row["ci_high"] == -np.inf
    md, _, _ = study_text(analyse(study, _near_separated_answers(study, 0), max_failed=0.25, n_boot=50), "simulated")
    assert "−∞ [−∞, −∞]" in md and "maximum-likelihood strength is infinite" in md


def test_attention_and_agreement_count_what_they_say(study_dir):
    study = load_study(study_dir)
    items = pd.DataFrame(study["items"])
    checks = items[items["kind"] != "pair"]
    pairs = items[items["kind"] == "pair"]
    rows = []
    for rater in ("a", "b"):  # both answer every check right and agree on every pair: alpha 1
        rows += [(rater, i, e) for i, e in zip(checks["item_id"], checks["expected"])]
        rows += [(rater, i, "left" if k % 3 else "tie") for k, i in enumerate(pairs["item_id"])]
    rows += [("c", i, "right" if e == "tie" else "tie") for i, e in zip(checks["item_id"], checks["expected"])]
    answers = pd.DataFrame(rows, columns=["rater_id", "item_id", "choice"]).assign(answered_at="", response_ms=0)
    att = attention(join_answers(study, answers), 0.25).set_index("rater_id")
    assert att.loc["c", "n_failed"] == 6 and att.loc["c", "excluded"] and att.loc["c", "n_comparisons"] == 0
    assert att.loc["a", "n_failed"] == 0 and not att.loc["a", "excluded"]
    res = analyse(study, answers, max_failed=0.25, n_boot=50)
    assert res.summary["krippendorff_alpha"] == pytest.approx(1.0) and res.summary["pairwise_agreement"] == 1.0
    with pytest.raises(ValueError, match="none of the 1 rater"):
        analyse(study, answers[answers["rater_id"] == "c"], max_failed=0.25, n_boot=10)
    with pytest.raises(ValueError, match="items this study does not have"):
        join_answers(study, answers.assign(item_id="zzz"))


def test_gold_rater_ties_identical_images_and_prefers_the_true_render():
    attrs = all_attributes()[7]
    clean = WORLD.render(attrs).transpose(1, 2, 0)
    noisy = np.clip(clean + np.random.default_rng(0).normal(0, 0.15, clean.shape), 0, 1)
    rater = GoldRater(sandbox_gold(WORLD, None), temperature=0.5, tie_margin=0.1, seed=0)
    prompt = caption(attrs, 0, ())
    assert rater.choose(prompt, clean, clean) == "tie"
    picks = [rater.choose(prompt, clean, noisy) for _ in range(20)]
    assert picks.count("left") >= 18
