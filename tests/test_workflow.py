"""The workflow as a whole: dry runs count the jobs per rule, lint is clean (the rules' conda files: test_envs.py)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from conftest import REPO, smk

SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def dry_run(*args: str, cwd=REPO) -> dict[str, int]:
    res = subprocess.run([*SNAKEMAKE, "-n", "--quiet", "rules", "--cores", "2", *args], cwd=cwd,
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    counts = {}
    for line in res.stdout.splitlines():
        m = re.match(r"^(\w+)\s+(\d+)$", line.strip())
        if m and m.group(1) != "total":
            counts[m.group(1)] = int(m.group(2))
    return counts


@pytest.mark.parametrize("overlay", [None, "adaptive.yaml"])
def test_dry_run_default_config(tmp_path, overlay):
    """The jobs known before any result; the chosen settings' confirmatory runs are planned after choose_settings.
    The default sweeps no adaptive beta; config/adaptive.yaml (the default until it went to 40 steps) adds it."""
    configs = [str(REPO / "config/config.yaml")] + ([str(REPO / "config" / overlay)] if overlay else [])
    counts = dry_run("--directory", str(tmp_path), "--snakefile", str(REPO / "Snakefile"), "--configfile", *configs)
    adaptive = overlay is not None
    n_sweep = 1 + 4 * 3 + (4 * 3 if adaptive else 0)  # seed 0: beta = 0 + 4 divergences x 3 betas (+ 3 targets)
    n_rocm = n_sweep + 2  # + beta = 0 at the confirmatory seeds 1 and 2
    n_baselines = 4 * 3  # four baselines x three learning rates at seed 0 (seeds 1 and 2 of the chosen one later)
    n_runs = n_rocm + n_baselines + 2  # + the base LCM and the base diffusion model
    n_splits = 2  # the validation and the test prompts: one collect_scores each; one job samples (scores) both
    expected = {"prepare_prompts": 1, "sandbox_vae": 1, "sandbox_teacher": 1, "sandbox_lcm": 1, "sandbox_proxy": 2,
                "sandbox_quality": 1, "train_rocm": n_rocm, "train_baseline": n_baselines, "sample_eval": n_runs,
                "evaluate": n_runs, "choose_settings": 1, "collect_scores": n_splits, "stats": 1, "table1": 1,
                "table_tuning": 1, "table_divergence_beta": 1, "fig_beta_sweep": 1, "fig_efficiency": 1,
                "fig_training_curves": 1, "table_efficiency": 1, "fig_divergence_gallery": 1,
                # beyond the paper: the adaptive beta, in config/adaptive.yaml only
                "table_adaptive_beta": 1 if adaptive else None, "fig_adaptive_beta": 1 if adaptive else None,
                "publish_results": 9,  # 2 score tables, 2 statistics, chosen betas, probe curves, sandbox quality, study
                "build_study": 1, "simulate_study": 1, "analyze_study": 1}  # the preference study (simulated raters)
    for rule, n in expected.items():
        assert counts.get(rule) == n, (rule, counts)


def test_dry_run_ci_config(tmp_path):
    counts = dry_run("--directory", str(tmp_path), "--snakefile", str(REPO / "Snakefile"),
                     "--configfile", str(REPO / "config/config.yaml"), str(REPO / "config/ci.yaml"))
    # beta = 0 at seeds 0 and 1, one KL beta and two adaptive-beta targets at seed 0, and the two score-function
    # variants at two betas each (seed 1 of the chosen ones later): the rule trains ROCM and its variants
    assert counts["train_rocm"] == 5 + 4
    assert counts["train_baseline"] == 8  # each baseline at two learning rates, seed 0 (seed 1 once chosen)
    assert counts["sample_eval"] == 19 and counts["evaluate"] == 19  # 17 trained runs and 2 untrained ones
    assert counts["table_adaptive_beta"] == counts["fig_adaptive_beta"] == 1
    assert counts["table_score_function"] == counts["fig_score_function"] == 1
    assert counts["sandbox_proxy"] == 2 and counts["collect_scores"] == 2 and counts["publish_results"] == 9
    assert counts["build_study"] == counts["simulate_study"] == counts["analyze_study"] == 1


def test_human_study_results_read_the_configured_database(tmp_path):
    """study.answers: human makes the results read study.database (no simulated raters); absent, it is named."""
    res = subprocess.run([*SNAKEMAKE, "-n", "analyze_study", "--cores", "1", "--directory", str(tmp_path),
                          "--snakefile", str(REPO / "Snakefile"), "--configfile", str(REPO / "config/config.yaml"),
                          str(REPO / "config/ci.yaml"), "--config", "study={answers: human, database: people.sqlite}"],
                         capture_output=True, text=True)
    assert res.returncode != 0 and "people.sqlite" in res.stdout + res.stderr, res.stdout[-2000:] + res.stderr[-2000:]
    assert "simulate_study" not in res.stdout


def _planned_jobs(stdout: str) -> list[dict]:
    """The jobs of a ``snakemake -n`` listing: rule, input and output paths, wildcards."""
    jobs = []
    for m in re.finditer(r"^(?:rule|checkpoint) (\w+):\n((?:    .*\n)*)", stdout, re.M):
        fields = dict(re.findall(r"^    (\w+): (.*)$", m.group(2), re.M))
        jobs.append({"rule": m.group(1), "input": fields.get("input", "").split(", "),
                     "output": fields.get("output", "").split(", "), "wildcards": fields.get("wildcards", "")})
    return jobs


def test_ci_dry_run_samples_and_scores_the_validation_split_and_chooses_beta_on_it(tmp_path):
    """The val jobs exist for every run, on results/prompts/val.csv; beta and the baselines' learning rates are chosen
    once (checkpoint choose_settings) on the sweep's and the tuning runs' validation scores, and the report rules that
    show the choice read it; the others read only the test scores (results/scores/all.csv). The runs that depend on
    the choice are not planned before it exists."""
    jobs = _planned_jobs(smk(tmp_path, "-n", "--cores", "2").stdout)
    by_rule = {}
    for job in jobs:
        by_rule.setdefault(job["rule"], []).append(job)
    assert by_rule["prepare_prompts"][0]["output"] == [
        "results/ci/prompts/train.csv", "results/ci/prompts/eval.csv", "results/ci/prompts/val.csv"]
    sf = [f"{m}-kl-b{b}-s0" for m in ("rocm_sf", "rocm_hybrid") for b in ("0.1", "1")]  # ci.yaml: score_function
    runs = {"base", "base-ddim", "rocm-none-b0-s0", "rocm-kl-b0.1-s0", "rocm-none-b0-s1", "rocm-kl-t0.01-s0",
            "rocm-kl-t0.1-s0", *sf}
    lrs = {"rlcm": (0.003, 0.006), "ddpo": (0.003, 0.006), "d3po": (0.003, 0.006), "dpok": (0.003, 0.006)}
    tuning = [f"{m}-lr{lr:g}-s0" for m, pair in lrs.items() for lr in pair]  # ci.yaml: lr_factors [1, 2]
    runs |= set(tuning)
    assert len(by_rule["sample_eval"]) == len(by_rule["evaluate"]) == len(runs)  # one job per run does both splits
    for split, prompts in (("val", "results/ci/prompts/val.csv"), ("test", "results/ci/prompts/eval.csv")):
        sampled = {o for j in by_rule["sample_eval"] for o in j["output"] if o.endswith(".npz") and f"/{split}/" in o}
        assert sampled == {f"results/ci/samples/{split}/{r}/images.npz" for r in runs}
        assert all(prompts in j["input"] for j in by_rule["sample_eval"])
        scored = {o for j in by_rule["evaluate"] for o in j["output"] if f"/{split}/" in o}
        assert scored == {f"results/ci/scores/{split}/{r}.csv" for r in runs}
    # the sweep (betas, the adaptive beta's targets, the score-function variants' betas) and the baselines' tuning
    # runs, seed 0
    assert by_rule["choose_settings"][0]["input"] == [
        f"results/ci/scores/val/{r}.csv" for r in ("rocm-kl-b0.1-s0", "rocm-kl-t0.01-s0", "rocm-kl-t0.1-s0", *sf,
                                                   *tuning)]
    assert by_rule["choose_settings"][0]["output"] == ["results/ci/stats/chosen.csv"]
    for rule in ("table1", "fig_efficiency", "fig_divergence_gallery"):  # the rules that show the chosen beta
        assert "results/ci/stats/chosen.csv" in by_rule[rule][0]["input"], rule
        assert "results/ci/scores/val.csv" not in by_rule[rule][0]["input"], rule
    for rule in ("stats", "table_divergence_beta", "fig_beta_sweep"):  # they report on the test prompts only
        assert by_rule[rule][0]["input"] == ["results/ci/scores/all.csv"], rule
    assert by_rule["table1"][0]["input"][0] == "results/ci/scores/all.csv"
    assert all(job["input"] == ["<TBD>"] for job in by_rule["collect_scores"])  # every run, after the choice


def test_lint_is_clean():
    res = subprocess.run([*SNAKEMAKE, "--lint"], cwd=REPO, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_snakefmt_clean():
    pytest.importorskip("snakefmt")
    files = [str(REPO / "Snakefile")] + [str(p) for p in (REPO / "workflow" / "rules").glob("*.smk")]
    res = subprocess.run([sys.executable, "-m", "snakefmt", "--check", *files], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def _planned(*args: str) -> list[dict]:
    """Rule, threads, resources, input, output and wildcards of every planned job of a dry run (``snakemake -n``)."""
    res = subprocess.run([*SNAKEMAKE, "-n", *args], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    jobs = []
    for m in re.finditer(r"^(?:rule|checkpoint) (\w+):\n((?:    .*\n)*)", res.stdout, re.M):
        fields = dict(re.findall(r"^    (\w+): (.*)$", m.group(2), re.M))
        jobs.append({"rule": m.group(1), "threads": int(fields.get("threads", 1)),  # printed only when > 1
                     "resources": dict(kv.split("=", 1) for kv in fields.get("resources", "").split(", ") if "=" in kv),
                     "input": fields.get("input", "").split(", "), "output": fields.get("output", "").split(", "),
                     "log": fields.get("log", ""), "wildcards": fields.get("wildcards", "")})
    return jobs


def test_the_documented_two_gpu_command_runs_two_training_jobs_at_once(tmp_path):
    """`snakemake --cores 8 --resources gpu=2 --configfile config/paper.yaml`: every training job takes one GPU and at
    most half the cores (train.threads: auto = cores // gpus), so the scheduler can run two side by side; with the
    paper's former 8 threads it could run only one."""
    cores, gpus = 8, 2
    jobs = _planned("--cores", str(cores), "--resources", f"gpu={gpus}", "--directory", str(tmp_path),
                    "--configfile", str(REPO / "config/paper.yaml"))
    training = [j for j in jobs if j["rule"] in ("train_rocm", "train_baseline")]
    assert len(training) == 39 + 12
    for job in training:
        assert job["resources"]["gpu"] == "1", job
        assert job["threads"] == cores // gpus, job  # two fit: 2 x 4 <= 8 cores and 2 x 1 <= 2 GPUs
    # 16 cores: 8 threads each, still two at once
    jobs16 = _planned("--cores", "16", "--resources", f"gpu={gpus}", "--directory", str(tmp_path),
                      "--configfile", str(REPO / "config/paper.yaml"))
    assert {j["threads"] for j in jobs16 if j["rule"] == "train_rocm"} == {8}


def test_the_paper_settings_reward_without_gradients_plans_its_arms(tmp_path):
    """config/paper-nondiff.yaml over paper.yaml (not run: it needs a GPU): the score-function variants, ROCM on the
    total-variation surrogate and RLCM and DDPO on JPEG compressibility at the paper's 3 seeds, and the companion
    table and figure, every training job on one GPU after staging and the device check."""
    jobs = _planned("--cores", "8", "--resources", "gpu=2", "--directory", str(tmp_path),
                    "--configfile", str(REPO / "config/paper.yaml"), str(REPO / "config/paper-nondiff.yaml"))
    train = sorted(j["wildcards"].split("=", 1)[1] for j in jobs if j["rule"] in ("train_rocm", "train_baseline"))
    sf = [r for r in train if r.startswith(("rocm_sf-", "rocm_hybrid-"))]
    assert len(sf) == 2 * 3 * 3 and "rocm_hybrid-kl-b0.01-s2" in sf  # 2 variants x 3 betas x 3 seeds
    assert sorted(r for r in train if r.startswith("rocm-")) == sorted(
        [f"rocm-none-b0-s{s}" for s in range(3)] + [f"rocm-kl-b{b}-s{s}" for b in ("0.001", "0.01", "0.1")
                                                     for s in range(3)])
    assert sorted(r for r in train if not r.startswith("rocm")) == [f"{m}-s{s}" for m in ("ddpo", "rlcm")
                                                                    for s in range(3)]
    rules = {j["rule"] for j in jobs}
    assert {"table_score_function", "fig_score_function", "stage_models", "check_device"} <= rules
    for job in jobs:
        if job["rule"] == "train_rocm":
            assert job["resources"]["gpu"] == "1" and "results/paper-nondiff/device.json" in job["input"], job


def test_hub_jobs_run_after_staging_and_the_device_preflight(tmp_path):
    """In the hub setting `all` stages the models first (every job that loads one depends on stage_models' record)
    and checks the device before any GPU job (check_device, first by priority); the sandbox has neither."""
    jobs = _planned("--cores", "2", "--directory", str(tmp_path), "--configfile", str(REPO / "config/paper.yaml"))
    rules = {j["rule"] for j in jobs}
    assert {"stage_models", "check_device"} <= rules
    for job in jobs:
        if job["rule"] in ("train_rocm", "train_baseline", "sample_eval", "evaluate"):
            assert {"results/paper/staged.json", "results/paper/device.json"} <= set(job["input"]), job
        if job["rule"] == "prepare_prompts":
            assert "results/paper/staged.json" in job["input"]
    sandbox = _planned("--cores", "2", "--directory", str(tmp_path / "sbx"), "--configfile",
                       str(REPO / "config/config.yaml"), str(REPO / "config/ci.yaml"))
    assert not {"stage_models", "check_device"} & {j["rule"] for j in sandbox}


def test_a_named_config_writes_only_its_own_folders(tmp_path):
    """ci.yaml (name: ci): every output and log of the plan under results/ci/, paper_figures/ci/ or logs/ci/, so a
    ci run never overwrites the default run's results or the committed paper_figures/."""
    jobs = _planned("--cores", "2", "--directory", str(tmp_path), "--configfile", str(REPO / "config/config.yaml"),
                    str(REPO / "config/ci.yaml"))
    paths = [p for j in jobs for p in j["output"] + [j["log"]] if p]
    assert len(paths) > 100
    outside = [p for p in paths if not p.startswith(("results/ci/", "paper_figures/ci/", "logs/ci/"))]
    assert not outside, outside[:5]
    assert "paper_figures/ci/table1.md" in paths


def test_an_unnamed_config_that_is_not_the_default_is_refused_before_any_job(tmp_path):
    custom = tmp_path / "custom.yaml"
    custom.write_text("train: {lr: 0.01}\n")
    res = subprocess.run([*SNAKEMAKE, "-n", "--cores", "1", "--directory", str(tmp_path / "wd"), "--configfile",
                          str(REPO / "config/config.yaml"), str(custom)], cwd=REPO, capture_output=True, text=True)
    assert res.returncode != 0
    out = res.stdout + res.stderr
    assert "differs from the default config" in out and "train.lr" in out and "--config name=" in out
    assert not (tmp_path / "wd" / "results").exists()
    named = _planned("--cores", "1", "--directory", str(tmp_path / "wd2"), "--configfile",
                     str(REPO / "config/config.yaml"), str(custom), "--config", "name=lr01")
    assert all(p.startswith("results/lr01/") for j in named if j["rule"] == "train_rocm" for p in j["output"])


@pytest.mark.slow
def test_check_device_refuses_a_cpu_only_torch_for_the_paper_config(tmp_path):
    """The preflight job itself, in this (CPU-only) environment: one error naming the key and the remedy."""
    import torch

    if torch.version.cuda is not None:
        pytest.skip("this torch is a CUDA build")
    res = subprocess.run([*SNAKEMAKE, "check_device", "--cores", "1", "--directory", str(tmp_path), "--configfile",
                          str(REPO / "config/paper.yaml")], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert res.returncode != 0
    log = (tmp_path / "logs" / "paper" / "check_device.log").read_text()
    assert "DeviceCheckError" in log and "CPU-only build" in log and "device: cpu" in log
    assert not (tmp_path / "results" / "paper" / "device.json").exists()
