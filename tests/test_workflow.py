"""The workflow as a whole: dry runs count the jobs per rule, lint is clean, conda files exist."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from conftest import REPO

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
    counts = dry_run("--directory", str(tmp_path), "--snakefile", str(REPO / "Snakefile"),
                     "--configfile", str(REPO / "config/config.yaml"))
    n_rocm = 1 * (1 + 4 * 3)  # seeds x (beta = 0 + 4 divergences x 3 betas)
    n_runs = n_rocm + 4  # + the four baselines, one seed
    expected = {"prepare_prompts": 1, "sandbox_vae": 1, "sandbox_teacher": 1, "sandbox_lcm": 1, "sandbox_proxy": 2,
                "sandbox_quality": 1, "train_rocm": n_rocm, "train_baseline": 4, "sample_eval": n_runs + 1,
                "evaluate": n_runs + 1, "collect_scores": 1, "stats": 1, "table1": 1, "table_divergence_beta": 1,
                "fig_beta_sweep": 1, "fig_efficiency": 1, "fig_training_curves": 1, "fig_divergence_gallery": 1}
    for rule, n in expected.items():
        assert counts.get(rule) == n, (rule, counts)


def test_dry_run_ci_config(tmp_path):
    counts = dry_run("--directory", str(tmp_path), "--snakefile", str(REPO / "Snakefile"),
                     "--configfile", str(REPO / "config/config.yaml"), str(REPO / "config/ci.yaml"))
    assert counts["train_rocm"] == 2  # beta = 0 and one KL point, one seed
    assert counts["train_baseline"] == 4  # each baseline once
    assert counts["sample_eval"] == 7 and counts["evaluate"] == 7
    assert counts["sandbox_proxy"] == 2


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
