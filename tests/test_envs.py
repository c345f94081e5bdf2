"""envs/*.yaml: conda environments for `snakemake --sdm conda`, consistent with pyproject.toml and the rules; the
locks envs/*.lock.yaml pin every PyPI package with its hashes (rocm_rlhf.infra.envlock). No test needs the network."""

import re
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

REPO = Path(__file__).resolve().parents[1]
ENVS = sorted(p for p in (REPO / "envs").glob("*.yaml") if not p.name.endswith(".lock.yaml"))  # the range files
LOCKS = sorted((REPO / "envs").glob("*.lock.yaml"))
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


def rule_conda_envs() -> dict[str, str]:
    """The environment each ``conda:`` directive of the rules names (a key of common.smk's CONDA_ENVS)."""
    found = {}
    for smk in sorted((REPO / "workflow" / "rules").glob("*.smk")):
        text = smk.read_text()
        matches = list(re.finditer(r"^\s+conda:\s*(?:\n\s+)?CONDA_ENVS\[\"(\w+)\"\]\s*$", text, re.M))
        n_directives = len(re.findall(r"^\s+conda:", text, re.M))
        assert len(matches) == n_directives, f"{smk.name}: a conda: directive is not CONDA_ENVS[\"<name>\"]"
        for i, m in enumerate(matches):
            found[f"{smk.name}: conda directive {i + 1}"] = m.group(1)
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


@pytest.mark.parametrize("choice", ["locked", "ranges"])
def test_every_conda_env_named_by_a_rule_exists_and_parses_for_both_choices(choice):
    from rocm_rlhf.infra.envlock import conda_env_files

    named = rule_conda_envs()
    assert len(named) >= 20 and set(named.values()) == {"torch", "analysis"}
    files = conda_env_files(choice, prefix="../../")
    for where, env_name in named.items():
        path = (REPO / "workflow" / "rules" / files[env_name]).resolve()
        assert path.is_file(), f"{where}: {path} does not exist (conda_envs: {choice})"
        assert path.parent == REPO / "envs", where
        env = yaml.safe_load(path.read_text())
        assert env["channels"] and env["dependencies"], where
        assert path.name.endswith(".lock.yaml") == (choice == "locked")


SNAKEMAKE_CONDA_ENVS = """
import sys
from pathlib import Path
from snakemake.api import SnakemakeApi
from snakemake.settings.types import ConfigSettings, ResourceSettings
with SnakemakeApi() as api:
    wf = api.workflow(resource_settings=ResourceSettings(cores=1), snakefile=Path("Snakefile"),
                      config_settings=ConfigSettings(config={"conda_envs": sys.argv[1]}))
    for rule in wf._workflow.rules:
        if rule.conda_env:
            print("ENV", rule.name, (Path(rule.snakefile).parent / rule.conda_env).resolve())
"""


@pytest.mark.parametrize("choice", ["locked", "ranges"])
def test_snakemake_gives_each_rule_the_chosen_env(choice):
    """What Snakemake itself makes of the directives (the workflow parsed with conda_envs set), not their text."""
    import subprocess
    import sys

    res = subprocess.run([sys.executable, "-c", SNAKEMAKE_CONDA_ENVS, choice], cwd=REPO, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    envs = dict(line.split()[1:] for line in res.stdout.splitlines() if line.startswith("ENV "))
    ending = ".lock.yaml" if choice == "locked" else ".yaml"
    expected = {f"torch{ending}", f"analysis{ending}"}
    assert len(envs) == len(rule_conda_envs()) and {Path(p).name for p in envs.values()} == expected
    assert all(Path(p).is_file() and Path(p).parent == REPO / "envs" for p in envs.values())
    assert Path(envs["train_rocm"]).name == f"torch{ending}" and Path(envs["stats"]).name == f"analysis{ending}"


def test_conda_envs_default_is_the_locks_and_a_wrong_value_is_refused():
    from rocm_rlhf.infra.config import ConfigError, OPERATIONAL_KEYS
    from rocm_rlhf.infra.envlock import conda_env_files

    schema = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())
    key = schema["properties"]["conda_envs"]
    assert key["default"] == "locked" and set(key["enum"]) == {"locked", "ranges"}
    assert "conda_envs" in OPERATIONAL_KEYS  # which env runs a job changes no result: no name needed, no rerun
    with pytest.raises(ValueError, match="conda_envs"):
        conda_env_files("pinned")
    assert issubclass(ConfigError, ValueError)


def test_locks_are_refused_on_another_platform_than_theirs():
    from rocm_rlhf.infra.config import ConfigError
    from rocm_rlhf.infra.envlock import check_conda_envs

    check_conda_envs("locked", "Linux", "x86_64")
    check_conda_envs("ranges", "Darwin", "arm64")
    for system, machine in [("Darwin", "arm64"), ("Linux", "aarch64")]:
        with pytest.raises(ConfigError, match="conda_envs=ranges") as err:
            check_conda_envs("locked", system, machine)
        assert f"{system} {machine}" in str(err.value)


# --- the locks -----------------------------------------------------------------------------------------------------


def lock_pip_lines(path: Path) -> list[str]:
    env = yaml.safe_load(path.read_text())
    pip = [d["pip"] for d in env["dependencies"] if isinstance(d, dict)]
    assert len(pip) == 1, path
    return pip[0]


def test_a_lock_for_each_range_file():
    assert {p.name for p in LOCKS} == {p.name.replace(".yaml", ".lock.yaml") for p in ENVS}


@pytest.mark.parametrize("path", LOCKS, ids=[p.name for p in LOCKS])
def test_lock_conda_level_is_python_and_pip_only_and_every_pip_line_pinned_with_hashes(path):
    env = yaml.safe_load(path.read_text())
    assert env["channels"][0] == "conda-forge" and "defaults" not in env["channels"]
    assert [d for d in env["dependencies"] if not isinstance(d, dict)] == ["python =3.11", "pip"]
    lines = lock_pip_lines(path)
    options = [line for line in lines if line.startswith("--")]
    assert options == ["--only-binary=:all:"], options  # no index or -r that would move where pip looks
    packages = [line for line in lines if not line.startswith("--")]
    assert len(packages) >= 20
    for line in packages:
        req, *hashes = line.split(" --hash=")
        assert re.fullmatch(r"[a-z0-9][a-z0-9._-]*==[0-9][0-9A-Za-z.+!-]*", req), f"{path.name}: not pinned: {line[:80]}"
        assert hashes and all(re.fullmatch(r"sha256:[0-9a-f]{64}", h) for h in hashes), f"{path.name}: {req}"
    names = [line.split("==")[0] for line in packages]
    assert len(names) == len(set(names)), f"{path.name}: a package locked twice"
    assert "torchvision" not in names


@pytest.mark.parametrize("path", LOCKS, ids=[p.name for p in LOCKS])
def test_lock_holds_every_requirement_of_its_range_file_inside_pyproject_ranges(path):
    from rocm_rlhf.infra.envlock import read_lock

    locked = read_lock(path)
    source = env_requirements(REPO / "envs" / path.name.replace(".lock.yaml", ".yaml"))
    project = pyproject_requirements()
    for name, spec in source.items():
        assert name in locked, f"{path.name} lacks {name} of its range file: regenerate it (envs/README.md)"
        version = locked[name].version
        assert SpecifierSet(spec).contains(version), f"{path.name}: {name}=={version} outside the range file's {spec}"
        assert SpecifierSet(project[name]).contains(version), f"{name}=={version} outside pyproject's {project[name]}"
    # what pyproject needs beyond the range file must be locked too where the lock has it at all
    for name, spec in project.items():
        if name in locked:
            assert SpecifierSet(spec).contains(locked[name].version), (name, spec, locked[name].version)


def test_torch_lock_is_the_cuda_build_with_its_libraries():
    """PyPI's torch for Linux x86_64 is a CUDA build: its CUDA libraries must be locked beside it, or pip's
    hash-checking mode would refuse them (they are not in the range file)."""
    from rocm_rlhf.infra.envlock import read_lock

    locked = read_lock(REPO / "envs" / "torch.lock.yaml")
    assert "+" not in locked["torch"].version  # the PyPI build, no local label such as +cpu
    assert {"nvidia-cudnn-cu13", "nvidia-nccl-cu13", "triton", "cuda-toolkit"} <= set(locked), sorted(locked)
    assert "torch" not in read_lock(REPO / "envs" / "analysis.lock.yaml")


def test_parse_requirements_txt_reads_uv_output_and_refuses_unpinned_lines():
    from rocm_rlhf.infra.envlock import EnvLockError, parse_requirements_txt

    text = ("numpy==2.4.6 \\\n    --hash=sha256:" + "a" * 64 + " \\\n    --hash=sha256:" + "b" * 64 + "\n"
            "    # via pandas\nPyYAML==6.0.4 --hash=sha256:" + "c" * 64 + "\n")
    pkgs = parse_requirements_txt(text)
    assert [(p.name, p.version, len(p.hashes)) for p in pkgs] == [("numpy", "2.4.6", 2), ("pyyaml", "6.0.4", 1)]
    assert pkgs[0].line() == "numpy==2.4.6 --hash=sha256:" + "a" * 64 + " --hash=sha256:" + "b" * 64
    for bad in ["numpy>=2 --hash=sha256:" + "a" * 64, "numpy==2.4.6", "numpy==2.4.6 --hash=sha256:abc"]:
        with pytest.raises(EnvLockError, match="pinned"):
            parse_requirements_txt(bad)


def test_lock_check_names_what_is_missing_or_outside_the_range(tmp_path):
    from rocm_rlhf.infra.envlock import EnvLockError, LockedPackage, check_lock, range_requirements

    src = tmp_path / "x.yaml"
    src.write_text("channels: [conda-forge]\ndependencies:\n  - python =3.11\n  - pip\n  - pytorch >=2.3,<3\n"
                   "  - pip:\n      - peft>=0.13,<0.30\n")
    reqs = range_requirements(src)
    assert [str(r) for r in reqs] == ["torch<3,>=2.3", "peft<0.30,>=0.13"]
    h = ("0" * 64,)
    check_lock([LockedPackage("torch", "2.13.0", h), LockedPackage("peft", "0.21.2", h)], reqs, src)
    with pytest.raises(EnvLockError, match="peft is not locked"):
        check_lock([LockedPackage("torch", "2.13.0", h)], reqs, src)
    with pytest.raises(EnvLockError, match="torch==3.0.0 is outside"):
        check_lock([LockedPackage("torch", "3.0.0", h), LockedPackage("peft", "0.21.2", h)], reqs, src)
    with pytest.raises(EnvLockError, match="torchvision is locked"):
        check_lock([LockedPackage("torch", "2.13.0", h), LockedPackage("peft", "0.21.2", h),
                    LockedPackage("torchvision", "0.28.0", h)], reqs, src)
    src.write_text("dependencies:\n  - torchvision\n")
    with pytest.raises(EnvLockError, match="torchvision must not be"):
        range_requirements(src)
    with pytest.raises(EnvLockError, match="does not exist"):
        range_requirements(tmp_path / "nope.yaml")


def test_lock_without_uv_says_how_to_get_it(monkeypatch):
    from rocm_rlhf.infra import envlock

    monkeypatch.setattr(envlock.shutil, "which", lambda name: None)
    with pytest.raises(envlock.EnvLockError, match="pip install uv"):
        envlock.lock_env("analysis")
    assert envlock.main(["analysis"]) == 2
    with pytest.raises(envlock.EnvLockError, match="unknown environment 'cuda'"):
        envlock.lock_env("cuda")


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
