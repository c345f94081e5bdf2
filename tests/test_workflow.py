"""The workflow as a whole: dry runs count the jobs per rule, lint is clean, conda files exist."""

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


def test_dry_run_default_config(tmp_path):
    """The jobs known before any result; the chosen betas' confirmatory runs are planned after choose_beta."""
    counts = dry_run("--directory", str(tmp_path), "--snakefile", str(REPO / "Snakefile"),
                     "--configfile", str(REPO / "config/config.yaml"))
    n_sweep = 1 + 4 * 3  # seed 0: beta = 0 + 4 divergences x 3 betas
    n_rocm = n_sweep + 2  # + beta = 0 at the confirmatory seeds 1 and 2
    n_baselines = 4 * 3  # four baselines x seeds 0, 1, 2
    n_runs = n_rocm + n_baselines + 2  # + the base LCM and the base diffusion model
    n_splits = 2  # the validation and the test prompts: one collect_scores each; one job samples (scores) both
    expected = {"prepare_prompts": 1, "sandbox_vae": 1, "sandbox_teacher": 1, "sandbox_lcm": 1, "sandbox_proxy": 2,
                "sandbox_quality": 1, "train_rocm": n_rocm, "train_baseline": n_baselines, "sample_eval": n_runs,
                "evaluate": n_runs, "choose_beta": 1, "collect_scores": n_splits, "stats": 1, "table1": 1,
                "table_divergence_beta": 1, "fig_beta_sweep": 1, "fig_efficiency": 1, "fig_training_curves": 1,
                "table_efficiency": 1, "fig_divergence_gallery": 1,
                "publish_results": 7}  # 2 score tables, 2 statistics, chosen betas, probe curves, sandbox quality
    for rule, n in expected.items():
        assert counts.get(rule) == n, (rule, counts)


def test_dry_run_ci_config(tmp_path):
    counts = dry_run("--directory", str(tmp_path), "--snakefile", str(REPO / "Snakefile"),
                     "--configfile", str(REPO / "config/config.yaml"), str(REPO / "config/ci.yaml"))
    assert counts["train_rocm"] == 3  # beta = 0 at seeds 0 and 1, and one KL point at seed 0 (seed 1 once chosen)
    assert counts["train_baseline"] == 8  # each baseline at seeds 0 and 1
    assert counts["sample_eval"] == 13 and counts["evaluate"] == 13  # 11 trained runs and 2 untrained ones
    assert counts["sandbox_proxy"] == 2 and counts["collect_scores"] == 2 and counts["publish_results"] == 7


def _planned_jobs(stdout: str) -> list[dict]:
    """The jobs of a ``snakemake -n`` listing: rule, input and output paths, wildcards."""
    jobs = []
    for m in re.finditer(r"^(?:rule|checkpoint) (\w+):\n((?:    .*\n)*)", stdout, re.M):
        fields = dict(re.findall(r"^    (\w+): (.*)$", m.group(2), re.M))
        jobs.append({"rule": m.group(1), "input": fields.get("input", "").split(", "),
                     "output": fields.get("output", "").split(", "), "wildcards": fields.get("wildcards", "")})
    return jobs


def test_ci_dry_run_samples_and_scores_the_validation_split_and_chooses_beta_on_it(tmp_path):
    """The val jobs exist for every run, on results/prompts/val.csv; beta is chosen once (checkpoint choose_beta) on
    the sweep's validation scores, and the report rules that show the choice read it; the others read only the test
    scores (results/scores/all.csv). The runs that depend on the choice are not planned before it exists."""
    jobs = _planned_jobs(smk(tmp_path, "-n", "--cores", "2").stdout)
    by_rule = {}
    for job in jobs:
        by_rule.setdefault(job["rule"], []).append(job)
    assert by_rule["prepare_prompts"][0]["output"] == [
        "results/ci/prompts/train.csv", "results/ci/prompts/eval.csv", "results/ci/prompts/val.csv"]
    runs = {"base", "base-ddim", "rocm-none-b0-s0", "rocm-kl-b0.1-s0", "rocm-none-b0-s1"}
    runs |= {f"{m}-s{s}" for m in ("rlcm", "ddpo", "d3po", "dpok") for s in (0, 1)}
    assert len(by_rule["sample_eval"]) == len(by_rule["evaluate"]) == len(runs)  # one job per run does both splits
    for split, prompts in (("val", "results/ci/prompts/val.csv"), ("test", "results/ci/prompts/eval.csv")):
        sampled = {o for j in by_rule["sample_eval"] for o in j["output"] if o.endswith(".npz") and f"/{split}/" in o}
        assert sampled == {f"results/ci/samples/{split}/{r}/images.npz" for r in runs}
        assert all(prompts in j["input"] for j in by_rule["sample_eval"])
        scored = {o for j in by_rule["evaluate"] for o in j["output"] if f"/{split}/" in o}
        assert scored == {f"results/ci/scores/{split}/{r}.csv" for r in runs}
    assert by_rule["choose_beta"][0]["input"] == ["results/ci/scores/val/rocm-kl-b0.1-s0.csv"]  # the sweep, seed 0
    assert by_rule["choose_beta"][0]["output"] == ["results/ci/stats/chosen.csv"]
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


def test_conda_files_named_by_rules_exist_and_parse():
    import yaml

    named = set()
    for smk in (REPO / "workflow" / "rules").glob("*.smk"):
        named |= set(re.findall(r'conda:\s*\n?\s*"([^"]+)"', smk.read_text()))
    for rel in named:
        path = (REPO / "workflow" / "rules" / rel).resolve()
        assert path.exists(), rel
        env = yaml.safe_load(path.read_text())
        assert "dependencies" in env and "channels" in env
