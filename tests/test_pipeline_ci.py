"""One real run of the whole pipeline on config/ci.yaml (sandbox build, training, evaluation, statistics, figures,
report), then checks of what it wrote. The run happens once per test session, in a temporary working directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from conftest import CONFIGS, REPO, SNAKEMAKE, assert_same_adapter, smk  # the session's ci run: conftest's ci_run fixture

pytestmark = pytest.mark.slow
def test_sandbox_quality(ci_run):
    q = json.loads((ci_run / "results/ci/models/sandbox/quality.json").read_text())
    judge = q["judge_on_fresh_renders"]
    assert min(judge["attribute_accuracy"].values()) > 0.99 and judge["realism"] > 0.9
    assert set(q["base_lcm"]) >= {"1_steps", "2_steps", "4_steps", "8_steps"}
    for name in ("proxy_pick", "proxy_aesthetic"):
        assert np.isfinite(q["proxies"][name]["mean_on_base_samples"])
    assert set(q["build_seconds"]) >= {"vae", "teacher", "lcm", "proxy_pick", "proxy_aesthetic"}


def test_saved_sandbox_pipeline_loads_offline_and_is_deterministic(ci_run):
    code = (
        "import torch, sys; from diffusers import LatentConsistencyModelPipeline as P;"
        "p = P.from_pretrained(sys.argv[1], safety_checker=None, feature_extractor=None,"
        " requires_safety_checker=False);"
        "f = lambda: p(['a red circle', 'a large blue square on the left'], num_inference_steps=4,"
        " guidance_scale=3.0, generator=torch.Generator().manual_seed(0), output_type='pt').images;"
        "a, b = f(), f(); assert a.shape == (2, 3, 32, 32), a.shape; assert torch.equal(a, b); print('ok')"
    )
    res = subprocess.run([sys.executable, "-c", code, str(ci_run / "results/ci/models/sandbox/lcm")],
                         capture_output=True, text=True, env=dict(os.environ, HF_HUB_OFFLINE="1"))
    assert res.returncode == 0 and "ok" in res.stdout, res.stderr[-3000:]


def baseline_choice(ci_run) -> tuple[list[str], list[str]]:
    """(the baselines' tuning runs, the chosen learning rates' runs at seeds 0 and 1) of the ci run: ci.yaml tunes
    each baseline over 1x and 2x its lr 0.003 at seed 0; the choice on validation is in results/ci/stats/chosen.csv."""
    from rocm_rlhf.runs import read_chosen_lrs

    chosen = read_chosen_lrs(ci_run / "results/ci/stats/chosen.csv")
    methods = ("rlcm", "ddpo", "d3po", "dpok")
    assert set(chosen) == set(methods) and set(chosen.values()) <= {"0.003", "0.006"}
    tuning = [f"{m}-lr{lr}-s0" for m in methods for lr in ("0.003", "0.006")]
    return tuning, [f"{m}-lr{chosen[m]}-s{s}" for m in methods for s in (0, 1)]


def adaptive_choice(ci_run) -> tuple[list[str], list[str]]:
    """(the adaptive beta's candidate runs, the chosen target's runs at seeds 0 and 1) of the ci run: ci.yaml sweeps
    KL's targets 0.01 and 0.1 at seed 0; the choice on validation is in results/ci/stats/chosen.csv."""
    from rocm_rlhf.runs import read_chosen_targets

    chosen = read_chosen_targets(ci_run / "results/ci/stats/chosen.csv")
    assert set(chosen) == {"kl"} and chosen["kl"] in {"0.01", "0.1"}
    return [f"rocm-kl-t{t}-s0" for t in ("0.01", "0.1")], [f"rocm-kl-t{chosen['kl']}-s{s}" for s in (0, 1)]


def sf_choice(ci_run) -> tuple[list[str], list[str]]:
    """(the score-function variants' candidate runs, their chosen betas' runs at seeds 0 and 1) of the ci run:
    ci.yaml sweeps rocm_sf and rocm_hybrid over KL betas 0.1 and 1 at seed 0."""
    from rocm_rlhf.runs import read_chosen_sf

    chosen = read_chosen_sf(ci_run / "results/ci/stats/chosen.csv")
    methods = ("rocm_sf", "rocm_hybrid")
    assert set(chosen) == set(methods) and set(chosen.values()) <= {"0.1", "1"}
    return ([f"{m}-kl-b{b}-s0" for m in methods for b in ("0.1", "1")],
            [f"{m}-kl-b{chosen[m]}-s{s}" for m in methods for s in (0, 1)])


def test_runs_and_scores(ci_run):
    # the sweep (betas and adaptive-beta targets) and the baselines' tuning runs at seed 0, then (confirm.seeds [1])
    # beta = 0, the chosen KL beta, the chosen target and each baseline's chosen learning rate at seed 1
    tuning, chosen = baseline_choice(ci_run)
    targets, chosen_target = adaptive_choice(ci_run)
    sf, chosen_sf = sf_choice(ci_run)
    reported = ["rocm-none-b0-s0", "rocm-kl-b0.1-s0", "rocm-none-b0-s1", "rocm-kl-b0.1-s1", *chosen_target,
                *chosen_sf, *chosen]
    runs = list(dict.fromkeys(reported + tuning + targets + sf))
    for run in runs:
        log = pd.read_csv(ci_run / f"results/ci/runs/{run}/log.csv")
        assert log["reward_queries"].iloc[-1] == 16, run  # every method gets ROCM's budget: 4 steps x 4 images
        assert log["reward_mean"].notna().all()
        meta = json.loads((ci_run / f"results/ci/runs/{run}/run.json").read_text())
        assert meta["run_id"] == run and meta["config"]["train"]["steps"] == 4
        assert (ci_run / f"results/ci/runs/{run}/adapter/pytorch_lora_weights.safetensors").exists()
        if "-lr" in run:  # a baseline trains at the learning rate of its id
            method, lr = run.split("-s")[0].split("-lr")
            assert meta["config"]["baselines"][method]["lr"] == float(lr), run
        if run.startswith("rocm_"):  # a score-function variant: the reward ROCM climbs, the hybrid's surrogate too
            assert meta["reward"] == "proxy_pick" and meta["beta"] == float(run.split("-b")[1].split("-s")[0]), run
            assert ("surrogate_mean" in log) == run.startswith("rocm_hybrid"), run
            assert meta.get("surrogate", "") == ("proxy_aesthetic" if run.startswith("rocm_hybrid") else ""), run
        if "-t" in run:  # an adaptive beta: its target from its id, its controller from rocm.adaptive, beta logged
            assert meta["target"] == float(run.split("-t")[1].split("-s")[0]) and meta["adaptive"]["gain"] == 0.1
            assert log["adaptive_beta"].iloc[0] == 1.0 and (log["adaptive_beta"] > 0).all(), run
    scores = pd.read_csv(ci_run / "results/ci/scores/all.csv")
    assert set(scores["run_id"]) == {"base", "base-ddim", *reported}  # the tuning runs not chosen: validation only
    assert (ci_run / "results/ci/runs/rocm-kl-b0.1-s1/curve.csv").exists()  # every run has its held-out probe
    metrics = {"proxy_pick", "proxy_aesthetic", "gold", "gold_fidelity", "gold_realism", "diversity"}
    assert set(scores["metric"]) == metrics
    # 4 eval prompts x 2 sample seeds per run and metric, the same units in every run (paired)
    units = scores.groupby("run_id").apply(lambda d: frozenset(zip(d.prompt_id, d.sample_seed)), include_groups=False)
    assert units.nunique() == 1 and len(units.iloc[0]) == 8
    assert scores.loc[scores.metric != "diversity", "value"].notna().all()
    # the validation scores: the same runs and metrics on 4 validation prompts x 2 sample seeds, other prompts
    val = pd.read_csv(ci_run / "results/ci/scores/val.csv")
    assert set(val["run_id"]) == {"base", "base-ddim", *runs} and set(val["metric"]) == metrics
    val_units = val.groupby("run_id").apply(lambda d: frozenset(zip(d.prompt_id, d.sample_seed)), include_groups=False)
    assert val_units.nunique() == 1 and len(val_units.iloc[0]) == 8 and not val_units.iloc[0] & units.iloc[0]
    assert val["prompt_id"].str.startswith("val-").all() and not set(val["prompt"]) & set(scores["prompt"])


def test_validation_prompts_are_apart_from_train_and_eval(ci_run):
    from rocm_rlhf.prompts import read_prompts

    p = {name: read_prompts(ci_run / f"results/ci/prompts/{name}.csv") for name in ("train", "eval", "val")}
    assert len(p["val"]) == 4 and p["val"]["heldout"].sum() == 2  # drawn as eval: half from the held-out pairs
    for a, b in (("train", "eval"), ("train", "val"), ("eval", "val")):
        assert not set(p[a]["prompt"]) & set(p[b]["prompt"]) and not set(p[a]["prompt_id"]) & set(p[b]["prompt_id"])


def test_samples_of_every_run_share_their_units(ci_run):
    """The base model and a trained run sample the same (prompt, sample seed) units in the same order (the noise per
    unit is fixed by rocm_rlhf.evaluation.unit_seed; see tests/test_evaluation.py)."""
    for split in ("val", "test"):
        a = np.load(ci_run / f"results/ci/samples/{split}/base/images.npz")
        b = np.load(ci_run / f"results/ci/samples/{split}/rocm-kl-b0.1-s0/images.npz")
        assert list(a["prompt_id"]) == list(b["prompt_id"]) and list(a["sample_seed"]) == list(b["sample_seed"])


def test_tables_figures_and_report(ci_run):
    figs = ci_run / "paper_figures" / "ci"
    for stem in ("fig_beta_sweep", "fig_efficiency", "fig_training_curves", "fig_divergence_gallery"):
        assert (figs / f"{stem}.pdf").stat().st_size > 1000 and (figs / f"{stem}.png").stat().st_size > 1000
    # the choice's candidates: KL's one beta, its two adaptive-beta targets, two betas per score-function variant,
    # two lrs per baseline
    tuning = pd.read_csv(figs / "table_tuning.csv")
    assert len(tuning) == 1 + 2 + 2 * 2 + 4 * 2 and tuning["chosen"].sum() == 8
    t1 = pd.read_csv(figs / "table1.csv")
    _, chosen = baseline_choice(ci_run)
    baselines = {run.rsplit("-s", 1)[0] for run in chosen}  # each baseline at its chosen learning rate
    adaptive = adaptive_choice(ci_run)[1][0].rsplit("-s", 1)[0]  # KL's chosen target
    sf = {run.rsplit("-s", 1)[0] for run in sf_choice(ci_run)[1]}  # each score-function variant at its chosen beta
    assert set(t1["arm"]) == {"base", "base-ddim", "rocm-none-b0", "rocm-kl-b0.1", adaptive, *sf, *baselines}
    # beyond the paper: the score-function variants against ROCM on the surrogate and the baselines, and their figure
    st = pd.read_csv(figs / "table_score_function.csv")
    assert set(st["treatment"]) == sf and set(st["reference"]) == {"rocm-kl-b0.1", *baselines}
    assert len(st) == len(sf) * (1 + len(baselines)) * 2 and (st["queries_treatment"] == 16).all()
    assert (figs / "fig_score_function.png").stat().st_size > 1000
    # beyond the paper: the adaptive beta against the fixed one, and the controller's figure
    ab = pd.read_csv(figs / "table_adaptive_beta.csv")
    assert list(ab["divergence"]) == ["kl", "kl"] and set(ab["adaptive_arm"]) == {adaptive}
    assert set(ab["fixed_arm"]) == {"rocm-kl-b0.1"} and (ab["n_seeds"] == 2).all()
    assert (figs / "fig_adaptive_beta.png").stat().st_size > 1000
    assert "chosen per divergence on the mean gold of the validation prompts" in (figs / "table1.md").read_text()
    assert (figs / "table1.tex").read_text().count("\\toprule") == 1
    published = {"scores_test.csv": "results/ci/scores/all.csv", "scores_val.csv": "results/ci/scores/val.csv",
                 "comparisons.csv": "results/ci/stats/comparisons.csv", "seed_summary.csv": "results/ci/stats/seed_summary.csv",
                 "sandbox_quality.json": "results/ci/models/sandbox/quality.json"}
    for name, source in published.items():  # the small result files committed next to the figures
        assert (figs / "data" / name).read_bytes() == (ci_run / source).read_bytes(), name
    # the preference study: built from the test samples, answered by the simulated raters through the app
    items = pd.read_csv(ci_run / "results/ci/study/design/items.csv")
    rlcm = next(run.rsplit("-s", 1)[0] for run in chosen if run.startswith("rlcm"))  # its chosen learning rate
    arms = {"base", "rocm-none-b0", "rocm-kl-b0.1", rlcm}  # study.arms: base, beta = 0, the chosen beta, RLCM
    pairs = items[items["kind"] == "pair"]
    assert set(pairs["left_arm"]) | set(pairs["right_arm"]) == arms and len(pairs) == 6 * 5
    summary = json.loads((ci_run / "results/ci/study/summary.json").read_text())
    assert summary["excluded"] == ["sim-careless-0"] and summary["raters_kept"] == 3
    study = pd.read_csv(figs / "table_study.csv")
    assert set(study.loc[study["part"] == "bradley_terry", "arm"]) == arms
    assert (figs / "fig_study.png").stat().st_size > 1000 and "Bradley-Terry" in (figs / "table_study.md").read_text()
    published["study_answers.csv"] = "results/ci/study/answers.csv"
    for name in ("study_answers.csv",):
        assert (figs / "data" / name).read_bytes() == (ci_run / published[name]).read_bytes(), name
    comp = pd.read_csv(ci_run / "results/ci/stats/comparisons.csv")
    assert {"p_value", "p_holm", "ci_low", "ci_high"} <= set(comp.columns)
    smk(ci_run, "--report", str(ci_run / "report.html"))
    assert (ci_run / "report.html").stat().st_size > 10_000


def test_target_rule_reruns_only_its_figure(ci_run):
    (ci_run / "paper_figures" / "ci" / "fig_beta_sweep.png").unlink()
    res = smk(ci_run, "fig_beta_sweep", "-n", "--quiet", "rules")
    rows = {tuple(line.split()) for line in res.stdout.splitlines()}
    assert ("fig_beta_sweep", "1") in rows and ("total", "1") in rows, res.stdout
    smk(ci_run, "fig_beta_sweep", "--cores", "1")
    assert (ci_run / "paper_figures" / "ci" / "fig_beta_sweep.png").exists()
    res = smk(ci_run, "-n", "--quiet", "rules")
    assert "Nothing to be done" in res.stdout + res.stderr


def test_a_changed_value_reruns_the_jobs_that_read_it(ci_run, tmp_path):
    """Every rule passes the digest of the config values its stage reads as a param (rocm_rlhf.infra.config.config_digest),
    so Snakemake's params trigger reruns exactly those jobs and what depends on them; operational keys rerun nothing."""
    import re

    def planned(overlay: str) -> dict[str, int]:
        f = tmp_path / "overlay.yaml"
        f.write_text(overlay)
        res = subprocess.run([*SNAKEMAKE, "-n", "--quiet", "rules", "--directory", str(ci_run), *CONFIGS, str(f)],
                             capture_output=True, text=True, env=dict(os.environ, HF_HUB_OFFLINE="1"))
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
        rows = (re.match(r"^(\w+)\s+(\d+)$", line.strip()) for line in res.stdout.splitlines())
        return {m.group(1): int(m.group(2)) for m in rows if m and m.group(1) != "total"}

    operational = ("device: cpu\nfork_server: false\ntrain: {threads: 2, checkpoint_every: 1, log_every: 2}\n"
                   "evaluation: {batch_size: 7}\n")
    assert planned(operational) == {}
    lr = planned("train: {lr: 0.004}\n")  # every training run, then their samples, scores and reports
    # the sweep (betas, targets, the score-function variants' betas) and beta = 0 at both seeds, the baselines'
    # tuning runs (they read the train block too); the chosen settings' seed 1 waits for the choice to be remade; the
    # untrained arms do not rerun
    assert lr["train_rocm"] == 5 + 4 and lr["train_baseline"] == 8 and lr["sample_eval"] == 17
    assert lr["choose_settings"] == 1
    assert not any(rule.startswith(("sandbox_", "prepare_")) for rule in lr) and "sample_eval" in lr
    ddpo = planned("baselines: {ddpo: {clip_range: 0.001}}\n")  # one method's block: that method's runs alone
    assert ddpo["train_baseline"] == 2 and "train_rocm" not in ddpo  # its two tuning runs (seed 1 after the choice)
    proxies = planned("sandbox: {proxies: {lr: 0.003}}\n")  # the proxies and what they score, not the generators
    assert proxies["sandbox_proxy"] == 2 and not {"sandbox_vae", "sandbox_teacher", "sandbox_lcm"} & set(proxies)
    figures = planned("figures: {gallery_prompts: 3}\n")  # the statistics, tables and figures only
    assert "fig_divergence_gallery" in figures and set(figures) <= {
        "stats", "table1", "table_tuning", "table_divergence_beta", "table_efficiency", "fig_beta_sweep",
        "fig_efficiency", "fig_training_curves", "fig_divergence_gallery", "table_adaptive_beta", "fig_adaptive_beta",
        "table_score_function", "fig_score_function", "publish_results", "all"}, figures  # + published copies


def test_jobs_in_the_fork_server_compute_what_their_own_processes_compute(ci_run, tmp_path):
    """The ci run's jobs ran in the fork server (rocm_rlhf.infra.forkserver); rerun a ROCM run, a DDPO run and their
    sampling and scoring with ``fork_server: false`` (each job its own process, as before the server) in a copy of
    the run: the same adapter weights, training log, images and scores, bit for bit."""
    import shutil

    logs = ci_run / "logs/ci"
    assert "preloaded" in (logs / "fork_server.log").read_text()
    for log in ("train/rocm-kl-b0.1-s0.log", "sample_eval/base.log", "evaluate/base.log"):
        assert "forked by the fork server" in (logs / log).read_text(), log
    wd = tmp_path / "wd"
    shutil.copytree(ci_run, wd, symlinks=True)  # copy2: the mtimes too, so nothing else looks outdated
    runs = ["rocm-kl-b0.1-s0", baseline_choice(ci_run)[0][2]]  # ROCM-KL and DDPO at its first learning rate
    targets = []
    for run in runs:
        shutil.rmtree(wd / f"results/ci/runs/{run}")
        for split in ("val", "test"):
            shutil.rmtree(wd / f"results/ci/samples/{split}/{run}")
            (wd / f"results/ci/scores/{split}/{run}.csv").unlink()
            targets.append(f"results/ci/scores/{split}/{run}.csv")
    res = subprocess.run([*SNAKEMAKE, *targets, "--cores", "2", "--directory", str(wd), *CONFIGS, "--config",
                          "fork_server=False"], capture_output=True, text=True,
                         env=dict(os.environ, HF_HUB_OFFLINE="1", PYTHONHASHSEED="0"))
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    started = [line for line in (wd / "logs/ci/train/rocm-kl-b0.1-s0.log").read_text().splitlines() if "started" in line]
    assert "forked by" not in started[-1]  # the rerun: its own process
    for run in runs:
        assert_same_adapter(ci_run / f"results/ci/runs/{run}", wd / f"results/ci/runs/{run}")
        logs_a, logs_b = (pd.read_csv(d / f"results/ci/runs/{run}/log.csv") for d in (ci_run, wd))
        numeric = [c for c in logs_a if c not in ("wall_s", "device_hours")]  # all but the timings
        pd.testing.assert_frame_equal(logs_a[numeric], logs_b[numeric], check_exact=True)
        for split in ("val", "test"):
            ia, ib = (np.load(d / f"results/ci/samples/{split}/{run}/images.npz") for d in (ci_run, wd))
            assert ia.files == ib.files and all(np.array_equal(ia[f], ib[f]) for f in ia.files), (run, split)
            assert ((ci_run / f"results/ci/scores/{split}/{run}.csv").read_bytes()
                    == (wd / f"results/ci/scores/{split}/{run}.csv").read_bytes()), (run, split)


def test_rocm_steps_raise_reward_on_the_sandbox(ci_run, tmp_path):
    """A few ROCM steps on the sandbox LCM raise the proxy reward on the training prompts (fixed prompts, noise)."""
    import torch

    from rocm_rlhf.infra.config import load_config
    from rocm_rlhf.models import load_lcm_pipeline
    from rocm_rlhf.prompts import read_prompts
    from rocm_rlhf.rewards import load_scorer
    from rocm_rlhf.samplers.common import decode_latents, encode_prompts
    from rocm_rlhf.samplers.consistency import consistency_sample, draw_noise
    from rocm_rlhf.training.run import train_run

    lcm = ci_run / "results/ci/models/sandbox/lcm"
    reward_dir = ci_run / "results/ci/models/sandbox/rewards/proxy_pick"
    prompts = read_prompts(ci_run / "results/ci/prompts/train.csv")["prompt"].tolist()
    cfg = load_config(REPO / "config/config.yaml", REPO / "config/ci.yaml",
                      overrides={"device": "cpu", "train": {"steps": 8, "lr": 0.01, "batch_size": 8}})
    train_run(cfg, method="rocm", run_id="t", seed=0, run_dir=tmp_path / "t", model_id=str(lcm),
              reward_name="proxy_pick", reward_kwargs={"model_id": str(reward_dir)}, prompts=prompts,
              divergence="kl", beta=0.0)
    scorer = load_scorer("proxy_pick", model_id=str(reward_dir))

    def mean_reward(pipe):
        emb = encode_prompts(pipe.tokenizer, pipe.text_encoder, prompts)
        lat = torch.randn(len(prompts), 4, 8, 8, generator=torch.Generator().manual_seed(5))
        noise = draw_noise(lat.shape, 4, torch.Generator().manual_seed(6))
        with torch.no_grad():
            traj = consistency_sample(pipe.unet, pipe.scheduler, emb, num_steps=4, guidance_scale=3.0,
                                      latents=lat, noise=noise)
            return scorer(decode_latents(pipe.vae, traj.final), prompts).mean().item()

    before = mean_reward(load_lcm_pipeline(lcm))
    tuned = load_lcm_pipeline(lcm)
    tuned.load_lora_weights(str(tmp_path / "t" / "adapter"))
    after = mean_reward(tuned)
    assert after > before + 0.01, (before, after)
