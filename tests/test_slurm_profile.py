"""profiles/slurm: the profile parses, names real rules, and renders the intended sbatch lines.

The submission test runs a real Snakemake with the real profile against stand-in Slurm commands (sbatch, srun,
sacct, squeue, sinfo, scontrol, sacctmgr, scancel) put first on PATH: the fake sbatch records its command line and
runs the wrapped job step, which calls the fake srun, which runs the rule; the fake sacct reports the result.
"""

import os
import re
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
PROFILE = REPO / "profiles" / "slurm"
WORKFLOW_PROFILE = REPO / "profiles" / "default"  # the per-rule needs, read by Snakemake with any --profile
SITE_VARS = ("ROCM_RLHF_GPU_PARTITION", "ROCM_RLHF_CPU_PARTITION", "ROCM_RLHF_SLURM_ACCOUNT")
GPU_RULES = ("train_rocm", "train_baseline", "sample_eval", "evaluate", "check_device")
PENDING_RULES = {"train_baseline"}  # named by the profile, not yet written in workflow/rules (skipped until then)
# Resource names the plugin (2.x) or Snakemake understand; a typo such as cpu_per_gpu would be silently ignored.
KNOWN_KEYS = {"slurm_partition", "slurm_account", "gpu", "cpus_per_gpu", "cpus_per_task", "mem_mb", "runtime",
              "constraint", "qos", "slurm_extra", "tasks", "nodes", "gpu_model"}


def _clean_env(**extra):
    env = {k: v for k, v in os.environ.items() if k not in SITE_VARS and not k.startswith("SLURM_")}
    env.update(extra)
    return env


def load_profile(env=None, folder=PROFILE) -> dict:
    """A profile as Snakemake reads it (YAML with YTE expressions evaluated under ``env``)."""
    import yte

    saved = dict(os.environ)
    try:
        os.environ.clear()
        os.environ.update(_clean_env() if env is None else env)
        with open(folder / "config.yaml") as f:
            return yte.process_yaml(f, require_use_yte=True)
    finally:
        os.environ.clear()
        os.environ.update(saved)


def workflow_rules() -> dict[str, str]:
    """Rule name -> text of its block, from the Snakefile and workflow/rules/*.smk."""
    rules = {}
    for path in [REPO / "Snakefile", *sorted((REPO / "workflow" / "rules").glob("*.smk"))]:
        text = path.read_text()
        starts = [(m.start(), m.group(1)) for m in re.finditer(r"^(?:rule|checkpoint)\s+(\w+)\s*:", text, re.M)]
        for i, (pos, name) in enumerate(starts):
            end = starts[i + 1][0] if i + 1 < len(starts) else len(text)
            rules[name] = text[pos:end]
    return rules


def test_profile_parses_with_plugin_resource_names():
    raw = yaml.safe_load((PROFILE / "config.yaml").read_text())
    assert raw["__use_yte__"] is True
    prof, wf = load_profile(), load_profile(folder=WORKFLOW_PROFILE)
    assert prof["executor"] == "slurm" and prof["jobs"] >= 1 and prof["retries"] >= 1
    assert prof["slurm-requeue"] is True and prof["rerun-incomplete"] is True
    defaults = prof["default-resources"]
    # no site variables: CPU jobs go to Slurm's default partition, no account is forced
    assert set(defaults) == {"mem_mb", "runtime"}
    # the layers hold different top-level keys, so that Snakemake 9 (which overrides per key) keeps both
    assert "set-resources" not in prof and set(wf) == {"set-resources"}
    assert set(wf["set-resources"]) == set(GPU_RULES)
    for rule, res in wf["set-resources"].items():
        assert set(res) <= KNOWN_KEYS, (rule, set(res) - KNOWN_KEYS)
        assert res["slurm_partition"] == "gpu", rule
        assert "gres" not in res and "gpu" not in res, rule  # the rules declare gpu; gres beside it would double it
        assert isinstance(res["cpus_per_gpu"], int) and res["cpus_per_gpu"] >= 1, rule
        assert isinstance(res["mem_mb"], int) and isinstance(res["runtime"], int), rule
        if rule in prof["set-threads"]:  # torch threads inside the job = the CPUs it is given per GPU
            assert prof["set-threads"][rule] == res["cpus_per_gpu"], rule
    assert set(prof["set-threads"]) == set(GPU_RULES) - {"check_device"}
    assert wf["set-resources"]["train_baseline"] == wf["set-resources"]["train_rocm"]
    assert wf["set-resources"]["evaluate"] == wf["set-resources"]["sample_eval"]


def test_site_variables_fill_partitions_and_account():
    env = _clean_env(ROCM_RLHF_GPU_PARTITION="a100", ROCM_RLHF_CPU_PARTITION="short", ROCM_RLHF_SLURM_ACCOUNT="proj1")
    prof = load_profile(env)
    assert prof["default-resources"]["slurm_partition"] == "short"
    assert prof["default-resources"]["slurm_account"] == "proj1"
    wf = load_profile(env, folder=WORKFLOW_PROFILE)
    assert {r["slurm_partition"] for r in wf["set-resources"].values()} == {"a100"}


@pytest.mark.parametrize("rule", GPU_RULES)
def test_profile_rules_exist_in_workflow(rule):
    rules = workflow_rules()
    if rule not in rules:
        if rule in PENDING_RULES:
            pytest.skip(f"rule {rule} is named by profiles/slurm but not yet written in workflow/rules")
        raise AssertionError(f"profiles/slurm sets resources for {rule!r}, which no workflow rule defines")


def test_every_gpu_rule_of_the_workflow_has_gpu_resources_in_profile():
    gpu_rules = {name for name, block in workflow_rules().items() if re.search(r"\bgpu\s*=\s*(?!0\b)\S", block)}
    assert "train_rocm" in gpu_rules
    missing = gpu_rules - set(load_profile(folder=WORKFLOW_PROFILE)["set-resources"])
    assert not missing, f"rules declaring gpu resources without a GPU partition in profiles/default: {missing}"


def test_dry_run_of_the_workflow_with_profile():
    res = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--nolock", "--profile", str(PROFILE)],
                         cwd=REPO, env=_clean_env(), capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    out = res.stdout + res.stderr
    jobs = re.findall(r"^rule (\w+):\n(?:    .*\n)*?    resources: (.*)$", out, re.M)
    assert any(rule == "train_rocm" for rule, _ in jobs) or "Nothing to be done" in out
    for rule, resources in jobs:
        if "gpu=1" in resources:  # the rule's gpu, the workflow profile's partition and needs, all in one job
            assert "slurm_partition=gpu" in resources, (rule, resources)
        if rule == "train_rocm":
            assert "mem_mb=64000" in resources and "runtime=720" in resources and "cpus_per_gpu=8" in resources
        if rule == "prepare_prompts":  # the site profile's default-resources
            assert "mem_mb=4000" in resources and "runtime=120" in resources


# ---- stand-in Slurm ---------------------------------------------------------------------------------------------

FAKE_SBATCH = """
import os, shlex, subprocess, sys
from pathlib import Path
d = Path(os.environ["FAKE_SLURM_DIR"])
argv = sys.argv[1:]
jobid = str(os.getpid())
with open(d / "sbatch_calls.txt", "a") as f:
    f.write(shlex.join(argv) + "\\n")
wrap = next(a[len("--wrap="):] for a in argv if a.startswith("--wrap="))
workdir = argv[argv.index("-D") + 1]
logfile = Path(argv[argv.index("--output") + 1].replace("%j", jobid))
logfile.parent.mkdir(parents=True, exist_ok=True)
env = dict(os.environ, SLURM_JOB_ID=jobid)
gpus = [a.split("=", 1)[1] for a in argv if a.startswith("--gpus=")]
if gpus:  # as Slurm does for --gpus=N: SLURM_GPUS, and the bound devices renumbered from 0
    env.update(SLURM_GPUS=gpus[0], CUDA_VISIBLE_DEVICES=",".join(map(str, range(int(gpus[0])))))
with open(logfile, "w") as log:
    rc = subprocess.run(["/bin/sh", "-c", wrap], cwd=workdir, env=env, stdout=log, stderr=log).returncode
(d / f"job_{jobid}").write_text("COMPLETED" if rc == 0 else "FAILED")
print(jobid)
"""

FAKE_SRUN = """
import os, shlex, sys
from pathlib import Path
argv = sys.argv[1:]
with open(Path(os.environ["FAKE_SLURM_DIR"]) / "srun_calls.txt", "a") as f:
    f.write(shlex.join(argv) + "\\n")
while argv and argv[0].startswith("-"):
    argv.pop(0)
os.execvp(argv[0], argv)
"""

FAKE_SACCT = """
import os, sys
from pathlib import Path
if "--format=JobIdRaw,State" in sys.argv:
    for p in sorted(Path(os.environ["FAKE_SLURM_DIR"]).glob("job_*")):
        print(f"{p.name[4:]}|{p.read_text()}")
"""

FAKE_SHELL = {
    "squeue": "exit 0",
    "sinfo": "printf 'PARTITION\\ncpu*\\ngpu\\n'",
    "scontrol": "echo 'MinJobAge               = 300 sec'",
    "sacctmgr": "echo proj1",
    "scancel": "exit 0",
}

TINY_SNAKEFILE = """
rule all:
    input: "out/train.txt", "out/prompts.txt"
    localrule: True

rule prepare_prompts:
    output: "out/prompts.txt"
    shell: "echo cpu > {output}"

rule train_rocm:
    output: "out/train.txt"
    resources: gpu={gpus}
    shell: "echo trained on ${{CUDA_VISIBLE_DEVICES:-none}} > {output}"
"""


def _fake_slurm(bin_dir: Path) -> None:
    bin_dir.mkdir()
    for name, body in (("sbatch", FAKE_SBATCH), ("srun", FAKE_SRUN), ("sacct", FAKE_SACCT)):
        (bin_dir / name).write_text(f"#!{sys.executable}\n{textwrap.dedent(body)}")
    for name, body in FAKE_SHELL.items():
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
    for p in bin_dir.iterdir():
        p.chmod(0o755)


def _option(line: str, flag: str) -> str:
    args = shlex.split(line)
    return args[args.index(flag) + 1]


@pytest.mark.slow
@pytest.mark.parametrize("gpus", [1, 2])
def test_submission_through_fake_slurm_requests_gpu_partition_cpus_memory(tmp_path, gpus):
    """The rule's gpu resource (train_rocm: train.num_processes) becomes --gpus=N; everything else from the profile."""
    pytest.importorskip("snakemake_executor_plugin_slurm", reason="snakemake-executor-plugin-slurm not installed")
    bin_dir, state = tmp_path / "bin", tmp_path / "state"
    _fake_slurm(bin_dir)
    state.mkdir()
    work = tmp_path / "wf"
    work.mkdir()
    (work / "Snakefile").write_text(TINY_SNAKEFILE.replace("{gpus}", str(gpus)))
    env = _clean_env(PATH=f"{bin_dir}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
                     FAKE_SLURM_DIR=str(state), ROCM_RLHF_GPU_PARTITION="testgpu",
                     ROCM_RLHF_CPU_PARTITION="testcpu", ROCM_RLHF_SLURM_ACCOUNT="proj1")
    res = subprocess.run([sys.executable, "-m", "snakemake", "--profile", str(PROFILE),
                          "--workflow-profile", str(WORKFLOW_PROFILE), "--slurm-init-seconds-before-status-checks", "1", "--latency-wait", "5"],
                         cwd=work, env=env, capture_output=True, text=True, timeout=180)
    logs = "\n".join(p.read_text() for p in work.glob(".snakemake/slurm_logs/**/*.log"))
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:] + logs[-4000:]

    calls = (state / "sbatch_calls.txt").read_text().splitlines()
    assert len(calls) == 2, calls  # rule all is local
    gpu_line = next(c for c in calls if "rule_train_rocm" in c)
    cpu_line = next(c for c in calls if "rule_prepare_prompts" in c)
    print("sbatch (GPU rule):", gpu_line.split(" --wrap=")[0])
    print("sbatch (CPU rule):", cpu_line.split(" --wrap=")[0])

    gpu_args = shlex.split(gpu_line)
    assert _option(gpu_line, "-p") == "testgpu" and _option(gpu_line, "-A") == "proj1"
    assert f"--gpus={gpus}" in gpu_args and "--cpus-per-gpu=8" in gpu_args
    assert _option(gpu_line, "--mem") == "64000" and _option(gpu_line, "-t") == "720"
    assert "--requeue" in gpu_args
    assert not any(a.startswith(("--gres", "--cpus-per-task", "--ntasks")) for a in gpu_args)

    cpu_args = shlex.split(cpu_line)
    assert _option(cpu_line, "-p") == "testcpu" and _option(cpu_line, "-A") == "proj1"
    assert _option(cpu_line, "--mem") == "4000" and _option(cpu_line, "-t") == "120"
    assert "--cpus-per-task=1" in cpu_args and "--ntasks=1" in cpu_args
    assert not any(a.startswith("--gpus") for a in cpu_args)

    # inside the allocation the job step asks srun for the same GPU and CPUs, then the rule really ran
    srun = (state / "srun_calls.txt").read_text().splitlines()
    assert any(f"--gpus={gpus}" in s and "--cpus-per-gpu=8" in s for s in srun), srun
    visible = ",".join(map(str, range(gpus)))
    assert (work / "out" / "train.txt").read_text() == f"trained on {visible}\n"
    assert (work / "out" / "prompts.txt").read_text() == "cpu\n"
