"""envs/*.yaml: conda environments for `snakemake --sdm conda`, consistent with pyproject.toml and the rules."""

import re
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[1]
ENVS = sorted((REPO / "envs").glob("*.yaml"))
CONDA_NAMES = {"pytorch": "torch", "matplotlib-base": "matplotlib", "seaborn-base": "seaborn"}  # conda -> PyPI
# Workflow tooling runs in the environment that runs Snakemake, not inside the rules' environments.
TOOLING = {"snakemake", "snakemake-executor-plugin-slurm", "pygments"}


def env_requirements(path: Path) -> dict[str, str]:
    """PyPI name -> version specifier of every package of an env file (conda and pip sections)."""
    out = {}
    for dep in yaml.safe_load(path.read_text())["dependencies"]:
        if isinstance(dep, dict):
            for pip_dep in dep.get("pip", []):
                req = Requirement(pip_dep)
                out[req.name.lower()] = str(req.specifier)
            continue
        name, _, spec = dep.partition(" ")
        if name in ("python", "pip"):
            continue
        out[CONDA_NAMES.get(name, name).lower()] = str(Requirement(f"x{spec.replace(' ', '')}").specifier)
    return out


def pyproject_requirements() -> dict[str, str]:
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    reqs = (Requirement(d) for d in deps)
    return {r.name.lower(): str(r.specifier) for r in reqs if r.name.lower() not in TOOLING}


def rule_conda_files() -> dict[str, Path]:
    """``conda:`` files named by the rules, resolved relative to their .smk file as Snakemake does."""
    found = {}
    for smk in sorted((REPO / "workflow" / "rules").glob("*.smk")):
        text = smk.read_text()
        matches = list(re.finditer(r"^\s+conda:\s*(?:\n\s+)?[\"']([^\"']+)[\"']", text, re.M))
        n_directives = len(re.findall(r"^\s+conda:", text, re.M))
        assert len(matches) == n_directives, f"{smk.name}: a conda: directive is not a string literal, cannot check it"
        for m in matches:
            found[f"{smk.name}: {m.group(1)}"] = (smk.parent / m.group(1)).resolve()
    return found


def test_env_files_exist():
    assert {p.name for p in ENVS} >= {"torch.yaml", "analysis.yaml"}


@pytest.mark.parametrize("path", ENVS, ids=[p.name for p in ENVS])
def test_env_file_parses_with_channels_and_dependencies(path):
    env = yaml.safe_load(path.read_text())
    assert set(env) == {"channels", "dependencies"}, path
    assert env["channels"][0] == "conda-forge" and "defaults" not in env["channels"]
    deps = env["dependencies"]
    assert "python =3.11" in deps
    pip = [d for d in deps if isinstance(d, dict)]
    assert not pip or (len(pip) == 1 and set(pip[0]) == {"pip"} and "pip" in deps), "pip section needs pip"
    assert "torchvision" not in env_requirements(path)


def test_torch_env_has_every_project_dependency_with_the_same_range():
    env, project = env_requirements(REPO / "envs" / "torch.yaml"), pyproject_requirements()
    assert env == project


def test_analysis_env_is_light_and_consistent():
    env, project = env_requirements(REPO / "envs" / "analysis.yaml"), pyproject_requirements()
    assert {"pandas", "scipy", "matplotlib", "seaborn", "pyarrow"} <= set(env)
    assert "torch" not in env
    for name, spec in env.items():
        assert project.get(name) == spec, (name, spec, project.get(name))


def test_every_conda_file_named_by_a_rule_exists_and_parses():
    for where, path in rule_conda_files().items():
        assert path.is_file(), f"{where} does not exist"
        assert path.parent == REPO / "envs", where
        env = yaml.safe_load(path.read_text())
        assert env["channels"] and env["dependencies"], where


def test_analysis_stages_import_without_torch():
    """The statistics, table and figure stages run in envs/analysis.yaml, which has no torch."""
    import subprocess
    import sys

    code = ("import sys, importlib.abc\n"
            "class NoTorch(importlib.abc.MetaPathFinder):\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name == 'torch' or name.startswith('torch.'):\n"
            "            raise ImportError('no torch here')\n"
            "sys.meta_path.insert(0, NoTorch())\n"
            "import rocm_rlhf.analysis.stats, rocm_rlhf.analysis.tables, rocm_rlhf.analysis.figures, rocm_rlhf.analysis.logs\n"
            "import rocm_rlhf.pipeline, rocm_rlhf.infra.jobs, rocm_rlhf.runs\n"
            "from rocm_rlhf.infra.utils import set_threads, write_json; set_threads(1)\n"
            "assert 'torch' not in sys.modules; print('ok')")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0 and "ok" in res.stdout, res.stderr
